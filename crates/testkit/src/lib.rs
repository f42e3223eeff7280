//! Dev-only helpers for Lifeboat's tests: real servers started on free 127.0.0.1 ports and
//! stopped by PID, plus tiny network stubs for failure tests.
//!
//! Lives here: [`GarageServer`] (a real S3-compatible server), [`PgServer`] (a real
//! PostgreSQL 15 cluster, primaries and standbys), [`HangingServer`] (accepts
//! TCP connections and never answers), [`StatusServer`] (answers every HTTP request with one
//! status code), [`EtcdServer`] and [`EtcdCluster`] (real etcd members), [`free_port`].
//! Never here: product code, anything that listens beyond 127.0.0.1, or skipping a test
//! because a binary is missing — a missing binary is an error naming `cargo xtask setup`.

pub mod etcd;
mod garage;
pub mod postgres;
mod stub;

pub use etcd::{EtcdCluster, EtcdServer};
pub use garage::{garage_bin, GarageServer, DEFAULT_GARAGE_BIN, GARAGE_BIN_ENV};
pub use postgres::PgServer;
pub use stub::{HangingServer, StatusServer};

use std::net::TcpListener;

/// Why a test helper could not provide its server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server binary is not installed.
    #[error(
        "{what} not found at {path}: install it with `cargo xtask setup` (or point {env} at it)"
    )]
    MissingBinary {
        /// What is missing (`garage`).
        what: &'static str,
        /// Where it was looked for.
        path: String,
        /// The environment variable that overrides the path.
        env: &'static str,
    },
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command, in words.
        what: String,
        /// Exit status and output.
        detail: String,
    },
    /// A server did not become ready before its deadline.
    #[error("{what} was not ready after {secs} s: {detail}")]
    NotReady {
        /// The server.
        what: String,
        /// The deadline in seconds.
        secs: u64,
        /// The last thing observed (log tail, last error).
        detail: String,
    },
    /// Local I/O (temp dirs, sockets, spawning).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Result of a testkit helper.
pub type Result<T> = std::result::Result<T, Error>;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it).
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
    let port = l
        .local_addr()
        .map_err(Error::io("read local address"))?
        .port();
    Ok(port)
}
