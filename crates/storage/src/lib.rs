//! Lifeboat's storage layer: one blocking interface to every place a repository can live.
//!
//! Lives here: [`Storage`] (put, get, ranged get, list, stat, delete) over Apache OpenDAL,
//! [`Location`] (parsing `s3://bucket/prefix` and local paths), the storage [`Error`] with its
//! transient/permanent classification, and [`FaultPlan`] for crash tests.
//! Never here: anything about the repository format (file kinds, encryption, ids); callers
//! pass plain relative paths such as `data/ab/ab12…`.
//!
//! The interface is blocking on purpose: the repository engine runs its CPU-heavy pipeline on
//! OS threads joined by bounded channels, and each call here drives an OpenDAL future to
//! completion on a small tokio runtime owned by the `Storage` (docs/decisions/0003).
//! Never call these methods from inside an async task.

mod error;
mod local;
mod location;
mod s3;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opendal::Operator;

pub use error::{Error, ErrorKind};
pub use location::{Location, S3Location, SecretString, AMBIENT_CREDENTIAL_VARS};

use s3::s3_builder;

/// Settings of a storage connection that are not part of its location.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Attempts per operation for transient errors (first try included).
    pub max_attempts: usize,
    /// Timeout of one attempt of a non-I/O operation (stat, delete, list page).
    pub op_timeout: Duration,
    /// Timeout of one attempt of a read or write, per operation.
    pub io_timeout: Duration,
    /// Pause before the first retry; each further retry waits twice as long (plus jitter),
    /// capped at [`StorageOptions::retry_max_delay`].
    pub retry_min_delay: Duration,
    /// Longest pause between two attempts.
    pub retry_max_delay: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            max_attempts: 5,
            op_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(300),
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

/// An entry returned by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Path relative to the storage root, e.g. `data/ab/ab12…`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Injected failures for crash tests: the storage fails every operation after a budget of
/// successful mutating operations (put/delete) is spent, as if the process died there.
#[derive(Debug)]
pub struct FaultPlan {
    remaining: AtomicU64,
}

impl FaultPlan {
    /// Allows `ops` successful puts/deletes, then fails all further ones.
    pub fn fail_after(ops: u64) -> Arc<Self> {
        Arc::new(FaultPlan {
            remaining: AtomicU64::new(ops),
        })
    }

    fn take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
            .is_ok()
    }
}

/// An object being written piece by piece (see [`Storage::stage`]).
pub struct Staged(StagedInner);

enum StagedInner {
    File(local::StagedFile),
    Buffer(Vec<u8>),
}

impl Staged {
    /// Appends bytes.
    ///
    /// # Errors
    /// When the temp file cannot be written (disk full, say).
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.0 {
            StagedInner::File(f) => f.write(data),
            StagedInner::Buffer(b) => {
                b.extend_from_slice(data);
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Staged")
    }
}

/// A connection to the place where a repository lives. Cheap to clone; safe to share across
/// threads.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    op: Operator,
    rt: Arc<tokio::runtime::Runtime>,
    describe: String,
    faults: Option<Arc<FaultPlan>>,
    create_only: bool,
    /// Whether the backend refuses a create-only write over an existing object; known up
    /// front for fs and memory, probed once for S3 (see [`Storage::create_is_atomic`]).
    atomic_create: Arc<OnceLock<bool>>,
    /// The root directory when the storage is a local file system (see [`local`]).
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.inner.describe)
    }
}

/// Logs one line per retry: the operation, the attempt and the error's message, never its
/// `Debug` form (which carries OpenDAL's context dump and, with `RUST_BACKTRACE=1`, a
/// backtrace; OpenDAL's default notifier logs that).
fn log_retry(event: opendal::layers::RetryEvent<'_>) {
    tracing::warn!(
        "storage {}: attempt {} failed ({}); retrying in {:.1}s",
        event.op,
        event.attempt,
        error::short_message(event.err),
        event.retry_after.as_secs_f64()
    );
}

/// The error for a local repository path that names a file.
fn not_a_directory(location: &Location) -> Error {
    Error::config(
        &location.to_string(),
        "is a file, not a directory (fix: give the repository's directory, or a new path to `lifeboat init`)",
    )
}

impl Storage {
    /// Connects to `location`.
    ///
    /// Creates nothing: a local directory that does not exist is an error (a mistyped or
    /// unmounted path must not gain a directory), and a local repository's temp directory
    /// is created by the first write (so a read-only or full file system can be read). Use
    /// [`Storage::create`] to make a new location.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the location cannot be used (a bad endpoint, say),
    /// [`ErrorKind::NotFound`] for a local directory that does not exist, or a runtime
    /// error when the tokio runtime cannot start.
    pub fn open(location: &Location, options: &StorageOptions) -> Result<Self, Error> {
        if let Location::Local(path) = location {
            match std::fs::metadata(path) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return Err(not_a_directory(location)),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    return Err(Error::config(
                        &location.to_string(),
                        "a part of this path is a file, not a directory (fix: check the path)",
                    ))
                }
                Err(e) => return Err(Error::io(&location.to_string(), e)),
            }
        }
        Self::connect(location, options)
    }

    /// Like [`Storage::open`], creating a local directory (and its parents) first when it
    /// does not exist: for making a new repository.
    ///
    /// # Errors
    /// As [`Storage::open`], and when the directory cannot be created.
    pub fn create(location: &Location, options: &StorageOptions) -> Result<Self, Error> {
        if let Location::Local(path) = location {
            if let Err(e) = std::fs::create_dir_all(path) {
                // A file where the directory should be (or above it) is the caller's
                // mistake, not a failure of the disk.
                if std::fs::metadata(path).is_ok_and(|md| !md.is_dir()) {
                    return Err(not_a_directory(location));
                }
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists
                ) {
                    return Err(Error::config(
                        &location.to_string(),
                        "a part of this path is a file, not a directory (fix: check the path)",
                    ));
                }
                return Err(Error::io(&location.to_string(), e));
            }
        }
        Self::open(location, options)
    }

    fn connect(location: &Location, options: &StorageOptions) -> Result<Self, Error> {
        // The workspace builds OpenDAL without its auto-registration constructor, so the
        // reqwest (rustls) HTTP transport must be installed before any S3 request. Idempotent.
        opendal::install_default();
        let describe = location.to_string();
        let mut local_root = None;
        let (op, create_only) = match location {
            Location::Local(path) => {
                // OpenDAL's fs service is used to read, list, stat and delete; every write
                // goes through `local` (temp file under `.tmp`, created on first use).
                let root = path.to_string_lossy().into_owned();
                let builder = opendal::services::Fs::default().root(&root);
                local_root = Some(path.clone());
                (
                    Operator::new(builder).map_err(|e| Error::from_opendal(&describe, e))?,
                    false,
                )
            }
            Location::S3(s3) => (
                Operator::new(s3_builder(s3)?).map_err(|e| Error::from_opendal(&describe, e))?,
                true,
            ),
            // OpenDAL's memory service checks-and-inserts under one lock: create-only is atomic.
            Location::Memory => (
                Operator::new(opendal::services::Memory::default())
                    .map_err(|e| Error::from_opendal(&describe, e))?,
                true,
            ),
        };
        // Timeout inside retry, as OpenDAL documents: a timed-out attempt is a temporary
        // error that the retry layer tries again; when attempts run out the error is marked
        // persistent and surfaces as `ErrorKind::Transient`.
        let op = op
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(options.op_timeout)
                    .with_io_timeout(options.io_timeout),
            )
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_notify(log_retry)
                    .with_max_times(options.max_attempts.saturating_sub(1))
                    .with_min_delay(options.retry_min_delay)
                    .with_max_delay(options.retry_max_delay.max(options.retry_min_delay))
                    .with_factor(2.0)
                    .with_jitter(),
            );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lifeboat-storage")
            .enable_all()
            .build()
            .map_err(|e| Error::io(&describe, e))?;
        Ok(Storage {
            inner: Arc::new(Inner {
                op,
                rt: Arc::new(rt),
                describe,
                faults: None,
                // Memory checks and inserts under one lock and local uses hard links; S3
                // servers differ, so they are probed on first use.
                atomic_create: Arc::new(if matches!(location, Location::S3(_)) {
                    OnceLock::new()
                } else {
                    OnceLock::from(true)
                }),
                create_only,
                local_root,
            }),
        })
    }

    /// An in-memory storage, for unit tests.
    ///
    /// # Errors
    /// Only when the runtime cannot start.
    pub fn memory() -> Result<Self, Error> {
        Self::open(&Location::Memory, &StorageOptions::default())
    }

    /// The same storage, failing every mutating operation after `plan` is spent.
    pub fn with_faults(&self, plan: Arc<FaultPlan>) -> Self {
        Storage {
            inner: Arc::new(Inner {
                op: self.inner.op.clone(),
                rt: Arc::clone(&self.inner.rt),
                describe: self.inner.describe.clone(),
                faults: Some(plan),
                create_only: self.inner.create_only,
                atomic_create: Arc::clone(&self.inner.atomic_create),
                local_root: self.inner.local_root.clone(),
            }),
        }
    }

    /// Where this storage points, without credentials (`/srv/repo`, `s3://bucket/prefix`).
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn fault(&self, path: &str) -> Result<(), Error> {
        match &self.inner.faults {
            Some(plan) if !plan.take() => Err(Error::injected(path)),
            _ => Ok(()),
        }
    }

    /// Writes a whole object. The object appears atomically: a reader sees either nothing or
    /// all of `data`, even if the process dies during the call.
    ///
    /// # Crash safety
    /// On a local file system the data is written to `<root>/.tmp`, fsynced, renamed into
    /// place, and the directory holding it is fsynced, so a returned `Ok` survives a power
    /// loss (docs/decisions/0010-local-fsync.md). On S3 an `Ok` means the store acknowledged
    /// the whole object.
    ///
    /// # Errors
    /// A storage error naming `path`.
    pub fn put(&self, path: &str, data: Vec<u8>) -> Result<(), Error> {
        self.fault(path)?;
        self.put_unfaulted(path, data)
    }

    fn put_unfaulted(&self, path: &str, data: Vec<u8>) -> Result<(), Error> {
        if let Some(root) = &self.inner.local_root {
            // Not through OpenDAL: its fs writer retries a read-only or full file system as
            // if it were a passing failure (~21 s before giving up), and does not fsync the
            // directory.
            return local::put(root, path, &data);
        }
        let op = &self.inner.op;
        self.inner
            .rt
            .block_on(op.write(path, data))
            .map(|_| ())
            .map_err(|e| Error::from_opendal(path, e))
    }

    /// Starts an object that is written piece by piece and published whole with
    /// [`Storage::publish`]. On a local file system the pieces go straight to a temp file
    /// (no memory held); elsewhere they are buffered (`size_hint` bytes reserved) and
    /// uploaded at publish.
    ///
    /// # Errors
    /// When the temp file cannot be created.
    pub fn stage(&self, size_hint: usize) -> Result<Staged, Error> {
        Ok(Staged(match &self.inner.local_root {
            Some(root) => StagedInner::File(local::StagedFile::create(root)?),
            None => StagedInner::Buffer(Vec::with_capacity(size_hint)),
        }))
    }

    /// Removes temp files older than `max_age` that killed writers left in a local
    /// repository's `.tmp/` (object stores keep none). Returns how many were removed.
    pub fn remove_stale_temp(&self, max_age: Duration) -> usize {
        match &self.inner.local_root {
            Some(root) => local::remove_stale_temp(root, max_age),
            None => 0,
        }
    }

    /// Whether staged objects live in temp files (a local file system) rather than memory.
    pub fn stages_on_disk(&self) -> bool {
        self.inner.local_root.is_some()
    }

    /// Publishes a staged object under `path`, atomically and durably, as [`Storage::put`]
    /// does. Dropping a `Staged` without publishing it removes its temp file.
    ///
    /// # Errors
    /// A storage error naming `path`.
    pub fn publish(&self, staged: Staged, path: &str) -> Result<(), Error> {
        self.fault(path)?;
        match (staged.0, &self.inner.local_root) {
            (StagedInner::File(f), Some(root)) => f.publish(root, path),
            (StagedInner::Buffer(b), _) => self.put_unfaulted(path, b),
            (StagedInner::File(_), None) => Err(Error::config(path, "staged on another storage")),
        }
    }

    /// Writes an object only if it does not exist yet. Of several concurrent callers for one
    /// path, exactly one succeeds: on a local file system by hard-linking a fully written
    /// temp file into place, on S3 and memory by a conditional write (`If-None-Match: *`).
    ///
    /// A retried S3 write whose first attempt landed but whose answer was lost reports
    /// [`ErrorKind::AlreadyExists`]; callers writing content-addressed objects can treat that
    /// as success.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] when it exists; a storage error naming `path` otherwise.
    pub fn put_new(&self, path: &str, data: Vec<u8>) -> Result<(), Error> {
        if let Some(root) = &self.inner.local_root {
            self.fault(path)?;
            return local::put_new(root, path, &[&data]);
        }
        if self.inner.create_only {
            // Servers that ignore `If-None-Match` (Garage 2.x) would silently overwrite:
            // check first there, which is right except for a concurrent creator.
            if !self.create_is_atomic() && self.stat(path)?.is_some() {
                return Err(Error::already_exists(path));
            }
            self.fault(path)?;
            let op = &self.inner.op;
            return self
                .inner
                .rt
                .block_on(async { op.write_with(path, data).if_not_exists(true).await })
                .map(|_| ())
                .map_err(|e| Error::from_opendal(path, e));
        }
        if self.stat(path)?.is_some() {
            return Err(Error::already_exists(path));
        }
        self.put(path, data)
    }

    /// Like [`Storage::put_new`] for an object given as consecutive parts (written one
    /// after the other to a local file; joined for other stores).
    ///
    /// # Errors
    /// As [`Storage::put_new`].
    pub fn put_new_parts(&self, path: &str, parts: Vec<Vec<u8>>) -> Result<(), Error> {
        if let Some(root) = &self.inner.local_root {
            self.fault(path)?;
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            return local::put_new(root, path, &slices);
        }
        self.put_new(path, parts.concat())
    }

    /// Whether [`Storage::put_new`] is atomic against concurrent creators of the same path.
    ///
    /// `true` for local file systems and memory, and for S3 servers that honour
    /// `If-None-Match: *` on PUT (AWS S3, recent MinIO and Ceph). `false` for servers that
    /// ignore it (Garage 2.x): there `put_new` checks before it writes, so it still refuses
    /// an object that exists, but two concurrent creators may both succeed and the last
    /// write wins. Anything that needs mutual exclusion (locks, leases) must not rely on
    /// `put_new` when this is `false`.
    ///
    /// For S3 the first call probes the server once (two create-only writes and a delete
    /// of `.tmp/create-probe-…` below the prefix) and remembers the answer; when the probe
    /// cannot run (read-only credentials, network trouble) it answers `false` and probes
    /// again next time.
    pub fn create_is_atomic(&self) -> bool {
        if let Some(known) = self.inner.atomic_create.get() {
            return *known;
        }
        match self.probe_atomic_create() {
            Some(answer) => *self.inner.atomic_create.get_or_init(|| answer),
            None => false,
        }
    }

    fn probe_atomic_create(&self) -> Option<bool> {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = format!(
            "{}/create-probe-{}-{nanos}-{}",
            local::TMP_DIR,
            std::process::id(),
            PROBES.fetch_add(1, Ordering::Relaxed)
        );
        let op = &self.inner.op;
        let write = |byte: u8| {
            self.inner
                .rt
                .block_on(async { op.write_with(&path, vec![byte]).if_not_exists(true).await })
        };
        write(1).ok()?;
        let second = write(2);
        let _ = self.inner.rt.block_on(op.delete(&path));
        match second {
            Ok(_) => Some(false),
            Err(e) => {
                let e = Error::from_opendal(&path, e);
                (e.kind() == ErrorKind::AlreadyExists).then_some(true)
            }
        }
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist; a storage error naming `path` otherwise.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, Error> {
        if self.inner.local_root.is_some() {
            // Straight from the file: OpenDAL's reader zero-fills a multi-MiB buffer per
            // read, which made listing 100 small snapshot files cost ~70 ms.
            let mut buf = Vec::new();
            self.get_into(path, &mut buf)?;
            return Ok(buf);
        }
        let op = &self.inner.op;
        self.inner
            .rt
            .block_on(op.read(path))
            .map(|b| b.to_vec())
            .map_err(|e| Error::from_opendal(path, e))
    }

    /// Reads a whole object into `buf` (cleared first), reusing its allocation: on a local
    /// file system straight from the file, elsewhere through a temporary buffer.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist; a storage error naming `path`.
    pub fn get_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<(), Error> {
        buf.clear();
        if let Some(root) = &self.inner.local_root {
            use std::io::Read;
            let p = local::object_path(root, path)?;
            let mut f = std::fs::File::open(&p).map_err(|e| Error::io(path, e))?;
            if let Ok(md) = f.metadata() {
                buf.reserve(md.len() as usize);
            }
            f.read_to_end(buf).map_err(|e| Error::io(path, e))?;
            return Ok(());
        }
        let data = self.get(path)?;
        buf.extend_from_slice(&data);
        Ok(())
    }

    /// Reads `len` bytes at `offset` of an object.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], or [`ErrorKind::Truncated`] when the object is shorter than
    /// `offset + len`.
    pub fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        if let Some(root) = &self.inner.local_root {
            use std::os::unix::fs::FileExt;
            let p = local::object_path(root, path)?;
            let f = std::fs::File::open(&p).map_err(|e| Error::io(path, e))?;
            let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
            let end = offset.saturating_add(len);
            if size < end {
                return Err(Error::truncated(path, end, size));
            }
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io(path, e))?;
            return Ok(buf);
        }
        let op = &self.inner.op;
        let buf = self
            .inner
            .rt
            .block_on(async { op.read_with(path).range(offset..offset + len).await });
        let buf = match buf {
            Ok(buf) => buf,
            // S3 answers a range that runs past the end with the bytes it has, and OpenDAL
            // reports that as a short read; tell the caller the object is truncated.
            Err(e) if e.kind() != opendal::ErrorKind::NotFound => match self.stat(path) {
                Ok(Some(size)) if size < offset.saturating_add(len) => {
                    return Err(Error::truncated(path, offset + len, size));
                }
                _ => return Err(Error::from_opendal(path, e)),
            },
            Err(e) => return Err(Error::from_opendal(path, e)),
        };
        if (buf.len() as u64) < len {
            return Err(Error::truncated(
                path,
                offset + len,
                offset + buf.len() as u64,
            ));
        }
        Ok(buf.to_vec())
    }

    /// Lists every object below `dir` (recursively), in no particular order.
    ///
    /// # Errors
    /// A storage error naming `dir`. A directory that does not exist lists as empty.
    pub fn list(&self, dir: &str) -> Result<Vec<ListEntry>, Error> {
        let op = &self.inner.op;
        let dir = if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        let entries = match self
            .inner
            .rt
            .block_on(async { op.list_with(&dir).recursive(true).await })
        {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from_opendal(&dir, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let path = e.path().trim_start_matches('/').to_string();
            if local::is_temporary(&path) {
                continue;
            }
            let size = e.metadata().content_length();
            out.push(ListEntry { path, size });
        }
        Ok(out)
    }

    /// The size of an object, or `None` when it does not exist.
    ///
    /// # Errors
    /// A storage error naming `path`.
    pub fn stat(&self, path: &str) -> Result<Option<u64>, Error> {
        let op = &self.inner.op;
        match self.inner.rt.block_on(op.stat(path)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_opendal(path, e)),
        }
    }

    /// Deletes an object; deleting one that does not exist succeeds. On a local file system
    /// the directory that held it is fsynced, so the deletion survives a power loss.
    ///
    /// # Errors
    /// A storage error naming `path`.
    pub fn delete(&self, path: &str) -> Result<(), Error> {
        self.delete_all(&[path])
    }

    /// Deletes objects (those that do not exist count as deleted); on a local file system
    /// each directory that held one is fsynced once, after the last deletion: the batch form
    /// of [`Storage::delete`] for prune's hundreds of packs.
    ///
    /// # Errors
    /// A storage error naming the first path that failed; the objects before it are gone.
    pub fn delete_all<S: AsRef<str>>(&self, paths: &[S]) -> Result<(), Error> {
        let op = &self.inner.op;
        let mut done = Vec::with_capacity(paths.len());
        let mut result = Ok(());
        for path in paths {
            let path = path.as_ref();
            result = self.fault(path).and_then(|()| {
                self.inner
                    .rt
                    .block_on(op.delete(path))
                    .map_err(|e| Error::from_opendal(path, e))
            });
            if result.is_err() {
                break;
            }
            done.push(path);
        }
        // What was deleted is made durable even when a later deletion failed.
        if let Some(root) = &self.inner.local_root {
            local::sync_deleted(root, &done)?;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(s: &Storage) {
        assert_eq!(s.stat("a/b").unwrap(), None);
        s.put("a/b", b"hello world".to_vec()).unwrap();
        assert_eq!(s.get("a/b").unwrap(), b"hello world");
        assert_eq!(s.get_range("a/b", 6, 5).unwrap(), b"world");
        assert!(matches!(
            s.get_range("a/b", 6, 50).unwrap_err().kind(),
            ErrorKind::Truncated | ErrorKind::Permanent
        ));
        assert_eq!(s.stat("a/b").unwrap(), Some(11));
        assert_eq!(
            s.put_new("a/b", b"x".to_vec()).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        s.put("a/c/d", vec![1, 2]).unwrap();
        let mut l = s.list("a").unwrap();
        l.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(
            l,
            vec![
                ListEntry {
                    path: "a/b".into(),
                    size: 11
                },
                ListEntry {
                    path: "a/c/d".into(),
                    size: 2
                }
            ]
        );
        assert!(s.list("nothing").unwrap().is_empty());
        s.delete("a/b").unwrap();
        s.delete("a/b").unwrap();
        assert_eq!(s.get("a/b").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn memory_behaves() {
        suite(&Storage::memory().unwrap());
    }

    #[test]
    fn local_behaves_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::create(
            &Location::Local(dir.path().join("repo")),
            &StorageOptions::default(),
        )
        .unwrap();
        suite(&s);
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join("repo/.tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty());
    }

    #[test]
    fn opening_creates_nothing_and_the_first_write_creates_the_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let e = Storage::open(
            &Location::Local(missing.clone()),
            &StorageOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(!missing.exists());
        let empty = dir.path().join("mnt");
        std::fs::create_dir(&empty).unwrap();
        let s = Storage::open(&Location::Local(empty.clone()), &StorageOptions::default()).unwrap();
        assert!(s.list("").unwrap().is_empty());
        assert_eq!(s.get("config").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        s.put("locks/a", vec![1]).unwrap();
        assert!(empty.join(".tmp").is_dir());
        assert_eq!(s.get("locks/a").unwrap(), vec![1]);
    }

    #[test]
    fn fault_plan_fails_after_budget() {
        let s = Storage::memory()
            .unwrap()
            .with_faults(FaultPlan::fail_after(1));
        s.put("x", vec![1]).unwrap();
        assert_eq!(s.put("y", vec![1]).unwrap_err().kind(), ErrorKind::Injected);
        assert_eq!(s.get("x").unwrap(), vec![1]);
    }
}
