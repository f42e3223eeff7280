//! The error type of `lifeboat-postgres`: every variant names what failed and, where there
//! is one, the fix. Never here: passwords (of the repository or of PostgreSQL) in messages.

/// A failure of a PostgreSQL operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository failed (its errors name the file).
    #[error(transparent)]
    Repo(#[from] lifeboat_repo::Error),
    /// Talking to PostgreSQL failed.
    #[error("PostgreSQL {target}: {message}")]
    Sql {
        /// Which server (host:port, never the password).
        target: String,
        /// What failed.
        message: String,
    },
    /// The replication protocol failed.
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program (pg_ctl, postgres) failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command, in words.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
    /// Arguments or settings that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A high-availability cluster operation failed (its errors name the member).
    #[error(transparent)]
    Cluster(Box<crate::cluster::ClusterError>),
}

impl From<crate::cluster::ClusterError> for Error {
    fn from(e: crate::cluster::ClusterError) -> Self {
        Error::Cluster(Box::new(e))
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().display().to_string();
        move |source| Error::Io { path, source }
    }

    /// Whether the repository holds damaged or missing data (exit code 1).
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Repo(e) if e.is_damage())
    }

    /// Whether the error is about how Lifeboat was called or configured (exit code 2).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Repo(e) => e.is_usage(),
            Error::Invalid(_) => true,
            Error::Cluster(e) => matches!(**e, crate::cluster::ClusterError::Invalid(_)),
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
