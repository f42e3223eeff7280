//! The repository's error type: every variant names the object it concerns and, where there
//! is one, the fix. Never here: secrets (passwords, keys) in any message.

use lifeboat_types::{BlobId, PackId};

/// A failure of a repository operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] lifeboat_storage::Error),
    /// No key file opens with the password given.
    #[error("wrong password: none of the {keys} key(s) of repository {repo} opens with it")]
    WrongPassword {
        /// The repository location.
        repo: String,
        /// How many key files were tried.
        keys: usize,
    },
    /// The location holds no repository.
    #[error(
        "no repository at {repo} (fix: check --repo / LIFEBOAT_REPOSITORY, or run `lifeboat init`)"
    )]
    NotARepository {
        /// The repository location.
        repo: String,
    },
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {repo}")]
    AlreadyInitialized {
        /// The repository location.
        repo: String,
    },
    /// The repository was written by a newer Lifeboat.
    #[error("repository {repo} has format version {found}; this lifeboat reads versions up to {supported}: upgrade lifeboat")]
    UnsupportedVersion {
        /// The repository location.
        repo: String,
        /// The version found.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// A file of the repository is damaged (bad hash, authentication failure, bad encoding).
    #[error("{file} is damaged: {reason}")]
    Damaged {
        /// The repository file, e.g. `data/ab/ab12…`.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob that a tree or snapshot references is in no index.
    #[error("blob {id} is not in any index: the data it holds is lost from this repository (run `lifeboat check`)")]
    BlobMissing {
        /// The missing blob.
        id: BlobId,
    },
    /// A pack file that the index names does not exist.
    #[error("pack data/{}/{pack} is missing", &pack.to_hex()[..2])]
    PackMissing {
        /// The missing pack.
        pack: PackId,
    },
    /// No snapshot matches what was asked for.
    #[error("no snapshot matches {spec:?}; list them with `lifeboat snapshots`")]
    SnapshotNotFound {
        /// The id, prefix or `latest` given.
        spec: String,
    },
    /// Snapshots exist, but none named `spec` passes the filters given.
    #[error("no snapshot matches {spec:?} with {filter}; list the candidates with `lifeboat snapshots {filter}`")]
    NoSnapshotMatches {
        /// The id, prefix or `latest` given.
        spec: String,
        /// The filters, as flags (`--tag db --path /srv`).
        filter: String,
    },
    /// An id prefix matches several snapshots.
    #[error("{spec:?} matches {count} snapshots; give more digits of the id")]
    AmbiguousSnapshot {
        /// The prefix given.
        spec: String,
        /// How many snapshots it matches.
        count: usize,
    },
    /// A path does not exist inside a snapshot.
    #[error("{path} does not exist in snapshot {snapshot}")]
    PathNotFound {
        /// The path asked for.
        path: String,
        /// The snapshot (short id).
        snapshot: String,
    },
    /// A file of a snapshot whose content was not stored: it could not be read (completely)
    /// when the snapshot was taken. Its metadata, size included, is what was on disk.
    #[error("{path} in snapshot {snapshot} has no content: it could not be read when the snapshot was taken ({reason}); its size is what was on disk, its bytes were never stored")]
    NotBackedUp {
        /// The path inside the snapshot.
        path: String,
        /// The snapshot (short id).
        snapshot: String,
        /// Why it could not be read, as the backup recorded it.
        reason: String,
    },
    /// Another process holds a lease that excludes this operation.
    #[error("{what}; {hint}")]
    Leased {
        /// What is held, by whom.
        what: String,
        /// What to do.
        hint: String,
    },
    /// The lease of this process expired before it could commit (it stalled too long).
    #[error("the lease of this {operation} expired before it could commit (the process stalled for longer than the lease TTL); nothing was committed, the data written is garbage for the next prune")]
    LeaseExpired {
        /// The operation whose lease expired.
        operation: String,
    },
    /// Packs a writer built on or wrote were deleted before it could commit.
    #[error("{count} pack(s) that this {operation} uses were deleted while it ran (first: {first}); nothing was committed. A prune must have taken this {operation}'s lease for dead: run the {operation} again, and give prune and backups on one host the same view of processes (no `hidepid` between them) — docs/design/0001-concurrency.md")]
    PacksGone {
        /// The operation (from its lease).
        operation: String,
        /// How many packs are gone.
        count: usize,
        /// The first of them.
        first: String,
    },
    /// A WAL file of that name is already in the repository with different content.
    #[error("{file} is already in the repository with different content; refusing to overwrite it (two clusters archiving under one source name, or a cluster restored without a new source name?)")]
    WalConflict {
        /// The repository file.
        file: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A path given to back up cannot be found (missing, or a parent is not a directory).
    #[error("{path}: {reason} (fix: check the path; nothing was backed up)")]
    SourceNotFound {
        /// The path as given, made absolute.
        path: String,
        /// What the file system said.
        reason: String,
    },
    /// Arguments that cannot work together.
    #[error("{0}")]
    Invalid(String),
    /// The operation was cancelled.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// A damaged-file error.
    pub fn damaged(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Damaged {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// Whether this error means the repository holds damaged or missing data — or a file
    /// whose content a snapshot never held (exit code 1 in the command-line tool) — rather
    /// than an operational failure.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Damaged { .. }
                | Error::BlobMissing { .. }
                | Error::PackMissing { .. }
                | Error::NotBackedUp { .. }
        )
    }

    /// Whether the error says a repository file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Storage(s) if s.is_not_found())
    }

    /// Whether the error is about how Lifeboat was called or configured (a wrong password,
    /// a missing repository, a bad snapshot name): exit code 2 in the command-line tool.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::WrongPassword { .. }
                | Error::NotARepository { .. }
                | Error::AlreadyInitialized { .. }
                | Error::SnapshotNotFound { .. }
                | Error::NoSnapshotMatches { .. }
                | Error::AmbiguousSnapshot { .. }
                | Error::PathNotFound { .. }
                | Error::SourceNotFound { .. }
                | Error::Invalid(_)
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            path: String::new(),
            source: e,
        }
    }
}
