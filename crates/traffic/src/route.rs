//! [`Route`]: where the proxy sends new connections, as published by the failover
//! controller, and which established connections it still allows.
//!
//! Lives here: the value and the pure rules over it (targets of a port, whether a
//! connection's target is still valid). Never here: I/O, or deciding the route.

use std::net::SocketAddr;

/// Where traffic goes now: the failover controller publishes one on a
/// `tokio::sync::watch` channel after every change.
///
/// A change of `primary` or of `generation` closes every write-port connection forwarded
/// under the old value at once: the old primary may be fenced, and no client may keep
/// writing to it. `primary: None` means a failover is under way: new clients are held until
/// a primary is published (or [`ProxyOptions::hold`](crate::ProxyOptions::hold) passes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The failover generation (incremented by every promotion).
    pub generation: u64,
    /// The writable primary, or `None` while there is none (during a failover).
    pub primary: Option<SocketAddr>,
    /// The standbys the read port balances over (in this order, round robin).
    pub replicas: Vec<SocketAddr>,
}

impl Route {
    /// A route with a primary and no standbys.
    pub fn with_primary(generation: u64, primary: SocketAddr) -> Self {
        Route {
            generation,
            primary: Some(primary),
            replicas: Vec::new(),
        }
    }

    /// Whether a connection the read port forwarded to `target` (`fallback`: because there
    /// was no standby, under `generation`) may stay open under this route: a standby while it
    /// is listed, the primary while it is the primary of the same generation.
    pub(crate) fn keeps_read(&self, target: SocketAddr, fallback: bool, generation: u64) -> bool {
        if fallback {
            self.keeps_write(target, generation)
        } else {
            self.replicas.contains(&target)
        }
    }

    /// Whether a write-port connection forwarded to `target` under `generation` may stay
    /// open under this route: only while both are unchanged.
    pub(crate) fn keeps_write(&self, target: SocketAddr, generation: u64) -> bool {
        self.primary == Some(target) && self.generation == generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn write_connections_end_with_their_primary_or_generation() {
        let r = Route::with_primary(3, a(1));
        assert!(r.keeps_write(a(1), 3));
        assert!(!r.keeps_write(a(1), 2), "same address, older generation");
        assert!(!r.keeps_write(a(2), 3));
        let none = Route {
            generation: 3,
            ..Route::default()
        };
        assert!(!none.keeps_write(a(1), 3), "no primary: nothing stays");
    }

    #[test]
    fn read_connections_stay_while_their_standby_is_listed() {
        let r = Route {
            generation: 1,
            primary: Some(a(1)),
            replicas: vec![a(2), a(3)],
        };
        assert!(
            r.keeps_read(a(2), false, 0),
            "generation does not matter for standbys"
        );
        assert!(!r.keeps_read(a(4), false, 1));
        assert!(r.keeps_read(a(1), true, 1), "fallback to the same primary");
        assert!(
            !r.keeps_read(a(1), true, 0),
            "fallback under an older generation"
        );
    }
}
