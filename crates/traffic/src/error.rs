//! [`Error`]: what can go wrong in the traffic plane.
//!
//! Lives here: the error enum and whether a retry can help. Never here: forwarded bytes
//! (an error names addresses and causes, never what a client sent).

use std::net::SocketAddr;
use std::time::Duration;

/// What went wrong in the proxy.
///
/// Only [`Error::Bind`] and [`Error::LocalAddr`] reach a caller (from [`Port::bind`]); the
/// others end one client connection and are logged at DEBUG and counted, so that a
/// misbehaving client or backend never stops the port.
///
/// [`Port::bind`]: crate::Port::bind
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("bind the proxy port {addr}: {source} (is another process listening there?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket could not tell its address.
    #[error("read the proxy port's local address: {source}")]
    LocalAddr {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend refused or failed the connection.
    #[error("connect to backend {target}: {source}")]
    Connect {
        /// The backend.
        target: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend did not accept the connection in time.
    #[error("connect to backend {target}: no answer after {} ms", after.as_millis())]
    ConnectTimeout {
        /// The backend.
        target: SocketAddr,
        /// The timeout that passed.
        after: Duration,
    },
    /// No backend was published while the client was held.
    #[error("no {what} published within the hold time of {} ms", waited.as_millis())]
    NoTarget {
        /// `primary` or `standby or primary`.
        what: &'static str,
        /// How long the client was held.
        waited: Duration,
    },
    /// The route publisher is gone (the daemon is shutting down).
    #[error("the route publisher is gone: the proxy is shutting down")]
    Closed,
    /// Copying between client and backend failed (a reset, a broken pipe).
    #[error("forward between client {client} and backend {target}: {source}")]
    Forward {
        /// The client's address.
        client: SocketAddr,
        /// The backend.
        target: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether trying again later can help: a backend that refused or did not answer may be
    /// back after the next failover; a port that cannot be bound or a shutdown will not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::ConnectTimeout { .. }
                | Error::NoTarget { .. }
                | Error::Forward { .. }
        )
    }
}
