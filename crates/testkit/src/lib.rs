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

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768–60999), so an
/// outgoing connection of any process can never be given a port a test server is about to
/// listen on.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A TCP port on 127.0.0.1 that is free now and that no earlier call in this process has
/// returned.
///
/// Asking the OS for port 0 twice can give the same port twice once the first socket is
/// closed (seen in CI: an agent's API and proxy listeners got one port). So the ports come
/// from [`TEST_PORTS`], starting at a place derived from the process id and the clock, and
/// every port handed out is remembered for the life of the process.
///
/// # Errors
/// When no port in the range can be bound.
pub fn free_port() -> Result<u16> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::{Mutex, OnceLock};

    static GIVEN: OnceLock<Mutex<(u32, HashSet<u16>)>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Mutex::new(((h.finish() % 1_000_003) as u32, HashSet::new()))
    });
    let mut g = given
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    for _ in 0..span {
        // A stride coprime with the span walks every port once, in an order that differs
        // between processes.
        g.0 = g.0.wrapping_add(7_919);
        let port = TEST_PORTS.start + (g.0 % span) as u16;
        if g.1.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            g.1.insert(port);
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: format!("find a free port in 127.0.0.1:{TEST_PORTS:?}"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two servers of one test must never be told to listen on the same port, and no test
    /// port may be one the OS hands to outgoing connections.
    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let p = free_port().unwrap();
            assert!(TEST_PORTS.contains(&p), "{p} outside {TEST_PORTS:?}");
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }
}
