//! A blocking client of PostgreSQL's physical streaming replication protocol.

/// A failure of the replication protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// Placeholder until the client lands.
    #[error("{0}")]
    Other(String),
}
