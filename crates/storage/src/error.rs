//! Storage errors: what went wrong, with which object, and whether a retry can help.
//! Never here: credentials or object contents in messages.

/// The class of a storage failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object exists and the call asked to create it.
    AlreadyExists,
    /// The object is shorter than the range asked for.
    Truncated,
    /// Credentials were refused or are missing.
    PermissionDenied,
    /// The location or options cannot be used.
    Config,
    /// A failure that may pass (timeout, throttling, 5xx) and that retries did not overcome.
    Transient,
    /// A failure that a retry cannot fix.
    Permanent,
    /// A failure injected by a [`crate::FaultPlan`].
    Injected,
}

/// A storage failure, naming the object it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {message}")]
pub struct Error {
    kind: ErrorKind,
    what: &'static str,
    path: String,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn new(kind: ErrorKind, path: &str, message: impl Into<String>) -> Self {
        let what = match kind {
            ErrorKind::Config => "cannot use storage",
            _ => "storage object",
        };
        Error {
            kind,
            what,
            path: path.to_string(),
            message: message.into(),
            source: None,
        }
    }

    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The object (or location) the failure concerns.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether the storage refuses writes for good: a read-only file system, mount or
    /// bucket, a full disk or exhausted quota, no permission to write. Trying again cannot
    /// help, and a command that only reads can go on without writing.
    pub fn refuses_writes(&self) -> bool {
        use std::io::ErrorKind as K;
        self.kind == ErrorKind::PermissionDenied
            || self
                .source
                .as_deref()
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|e| {
                    matches!(
                        e.kind(),
                        K::ReadOnlyFilesystem
                            | K::StorageFull
                            | K::QuotaExceeded
                            | K::PermissionDenied
                    )
                })
    }

    pub(crate) fn io(path: &str, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Permanent,
        };
        let mut err = Error::new(kind, path, e.to_string());
        err.source = Some(Box::new(e));
        err
    }

    pub(crate) fn config(path: &str, message: &str) -> Self {
        Error::new(ErrorKind::Config, path, message)
    }

    pub(crate) fn already_exists(path: &str) -> Self {
        Error::new(ErrorKind::AlreadyExists, path, "already exists")
    }

    pub(crate) fn injected(path: &str) -> Self {
        Error::new(ErrorKind::Injected, path, "injected fault")
    }

    pub(crate) fn truncated(path: &str, expected_end: u64, found_end: u64) -> Self {
        Error::new(
            ErrorKind::Truncated,
            path,
            format!("truncated: wanted bytes up to {expected_end}, object ends at {found_end}"),
        )
    }

    pub(crate) fn from_opendal(path: &str, e: opendal::Error) -> Self {
        use opendal::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists | K::ConditionNotMatch => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::ConfigInvalid => ErrorKind::Config,
            K::RangeNotSatisfied => ErrorKind::Truncated,
            _ if e.is_temporary() || e.is_persistent() => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let message = match kind {
            ErrorKind::NotFound => "not found".to_string(),
            ErrorKind::AlreadyExists => "already exists".to_string(),
            ErrorKind::PermissionDenied => {
                "permission denied; check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or file permissions".to_string()
            }
            ErrorKind::Transient => format!(
                "backend kept failing after retries: {} (fix: check that the endpoint (AWS_ENDPOINT_URL) is reachable, and the network between)",
                short_message(&e)
            ),
            _ => short_message(&e),
        };
        // Not kept as the source: OpenDAL's `Display` dumps its context (and a printed
        // chain would repeat the cause); `short_message` already carries what matters.
        Error::new(kind, path, message)
    }
}

/// One line about an OpenDAL error: its message and its innermost cause, with the
/// `host:port` a connection went to when the error or a cause names a URL; never OpenDAL's context dump
/// or backtrace.
pub(crate) fn short_message(e: &opendal::Error) -> String {
    let mut innermost: Option<String> = None;
    // OpenDAL keeps the request's URL in its context (the transport strips it from the
    // cause), which only its `Display` shows.
    let mut host: Option<String> = authority_in(&e.to_string());
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if host.is_none() {
            host = authority_in(&text);
        }
        innermost = Some(text);
        cause = c.source();
    }
    let mut out = e.message().to_string();
    if let Some(inner) = innermost.filter(|i| !out.contains(i.as_str())) {
        if out.is_empty() {
            out = inner;
        } else {
            out = format!("{out}: {inner}");
        }
    }
    if let Some(h) = host.filter(|h| !out.contains(h.as_str())) {
        out = format!("{out} at {h}");
    }
    out
}

/// The `host:port` of the first URL in `text` (`… for url (http://127.0.0.1:9/b/k)` →
/// `127.0.0.1:9`).
fn authority_in(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("://")?;
    let end = rest
        .find(|c: char| c == '/' || c == ')' || c == '?' || c.is_whitespace())
        .unwrap_or(rest.len());
    let host = &rest[..end];
    (!host.is_empty()).then(|| host.to_string())
}
