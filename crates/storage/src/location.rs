//! Where a repository lives: a local path, an S3-compatible bucket, or memory.
//! Never here: connecting; `Display` must never print credentials.

use std::fmt;
use std::path::PathBuf;

/// A secret string (an S3 secret key) that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        SecretString(s)
    }
    /// The secret itself; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An S3-compatible bucket and prefix, with connection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL (`http://127.0.0.1:3900`); AWS when absent.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<SecretString>,
}

/// The environment variables that point OpenDAL's default credential chain at a source
/// other than `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`: a profile, web identity (EKS), a
/// container endpoint (ECS), or an explicit instance-metadata endpoint.
pub const AMBIENT_CREDENTIAL_VARS: &[&str] = &[
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
];

impl S3Location {
    /// Whether the location carries a key pair (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, or just one of them: `Storage::open` refuses half a pair).
    pub fn has_keys(&self) -> bool {
        self.access_key_id.is_some() || self.secret_access_key.is_some()
    }

    /// The first of [`AMBIENT_CREDENTIAL_VARS`] set in `env`, if any: without keys, the
    /// credentials then come from where it points.
    pub fn ambient_credentials(env: &dyn Fn(&str) -> Option<String>) -> Option<&'static str> {
        AMBIENT_CREDENTIAL_VARS
            .iter()
            .copied()
            .find(|k| env(k).is_some_and(|v| !v.is_empty()))
    }
}

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local (or mounted) file system: the embedded default.
    Local(PathBuf),
    /// An S3-compatible object store.
    S3(S3Location),
    /// Process memory, for tests.
    Memory,
}

/// Why a repository URL could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// `s3://` without a bucket.
    #[error("{url:?} has no bucket: write s3://BUCKET/PREFIX")]
    MissingBucket {
        /// The URL given.
        url: String,
    },
    /// `s3:` not followed by `//BUCKET`: `s3:/bucket/x`, `s3:bucket`.
    #[error("{url:?} is not a valid S3 location: write s3://BUCKET/PREFIX (two slashes); for a local directory of that name write ./{url}")]
    MalformedS3 {
        /// The URL given.
        url: String,
    },
    /// A scheme that Lifeboat does not serve, or a path that starts like a URL
    /// (`NAME:`); such a path is refused rather than taken for a local directory.
    #[error("{url:?} uses an unknown scheme {scheme:?}: use s3://BUCKET/PREFIX, or a local path (write ./{url} or local:{url} for a local directory whose name has a colon)")]
    UnknownScheme {
        /// The URL given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// An empty location.
    #[error("the repository location is empty: pass --repo PATH or set LIFEBOAT_REPOSITORY")]
    Empty,
}

impl Location {
    /// Parses a repository location: `s3://bucket/prefix`, `memory:` or a local path
    /// (optionally `local:PATH`). Anything else that starts like a URL (`NAME:`, e.g. the
    /// mistyped `s3:/bucket/x`) is refused instead of being taken for a local directory
    /// of that name; `./NAME:…` or `local:NAME:…` names such a directory. S3 settings come from `env` (a lookup of environment
    /// variables such as `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`), passed in so that tests need not touch the process
    /// environment.
    ///
    /// # Errors
    /// [`LocationError`] naming what is wrong and how to write it.
    pub fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, LocationError> {
        if url.is_empty() {
            return Err(LocationError::Empty);
        }
        if url == "memory:" {
            return Ok(Location::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::MissingBucket { url: url.into() });
            }
            let get = |k: &str| env(k).filter(|v| !v.is_empty());
            return Ok(Location::S3(S3Location {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint: get("AWS_ENDPOINT_URL_S3").or_else(|| get("AWS_ENDPOINT_URL")),
                region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
                access_key_id: get("AWS_ACCESS_KEY_ID"),
                secret_access_key: get("AWS_SECRET_ACCESS_KEY").map(SecretString::new),
            }));
        }
        if let Some(rest) = url.strip_prefix("local:") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(scheme) = url_scheme(url) {
            if scheme.eq_ignore_ascii_case("s3") {
                return Err(LocationError::MalformedS3 { url: url.into() });
            }
            return Err(LocationError::UnknownScheme {
                url: url.into(),
                scheme: scheme.into(),
            });
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

/// The scheme of a string that starts like a URL (RFC 3986: a letter, then letters, digits,
/// `+`, `-` or `.`, then `:`), or `None` for anything else (`/srv/repo`, `./a:b`, `repo`).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

impl fmt::Display for S3Location {
    /// `s3://bucket/prefix`; never the endpoint's user info or any key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A relative path that starts like a URL prints as `local:PATH`, so that the
            // text parses back to this location (`pg restore` writes it into
            // restore_command).
            Location::Local(p) => {
                let shown = p.display().to_string();
                if url_scheme(&shown).is_some() {
                    write!(f, "local:{shown}")
                } else {
                    f.write_str(&shown)
                }
            }
            Location::S3(s) => s.fmt(f),
            Location::Memory => f.write_str("memory:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_with_env_and_never_prints_secret() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:3900".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("topsecret".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("GK123".to_string()),
            _ => None,
        };
        let loc = Location::parse("s3://shop-backups/eu/prod/", &env).unwrap();
        let Location::S3(s3) = &loc else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "shop-backups");
        assert_eq!(s3.prefix, "eu/prod");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(loc.to_string(), "s3://shop-backups/eu/prod");
        assert!(!format!("{loc:?} {loc}").contains("topsecret"));
    }

    #[test]
    fn rejects_bad_urls_with_the_fix() {
        let env = |_: &str| None;
        let e = Location::parse("s3:///x", &env).unwrap_err();
        assert!(e.to_string().contains("s3://BUCKET/PREFIX"));
        let e = Location::parse("ftp://host/x", &env).unwrap_err();
        assert!(e.to_string().contains("unknown scheme"));
        // Issue 10: one slash, or none, is not an S3 location and not a directory `s3:`.
        for bad in ["s3:/bucket/x", "s3:bucket", "S3://bucket"] {
            let e = Location::parse(bad, &env).unwrap_err();
            assert!(e.to_string().contains("s3://BUCKET/PREFIX"), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        for bad in ["memory:x", "file:/srv/repo", "backup:2026"] {
            let e = Location::parse(bad, &env).unwrap_err();
            assert!(
                matches!(e, LocationError::UnknownScheme { .. }),
                "{bad}: {e}"
            );
        }
        // A colon further in, or after ./, is a path; every location prints as text that
        // parses back to it.
        for ok in [
            "./s3:/bucket",
            "/srv/a:b",
            "repo",
            "local:s3:x",
            "local:memory:",
        ] {
            let loc = Location::parse(ok, &env).unwrap();
            assert!(matches!(loc, Location::Local(_)), "{ok}");
            assert_eq!(
                Location::parse(&loc.to_string(), &env).unwrap(),
                loc,
                "{ok}"
            );
        }
        assert_eq!(
            Location::parse("/srv/repo", &env).unwrap(),
            Location::Local(PathBuf::from("/srv/repo"))
        );
    }
}
