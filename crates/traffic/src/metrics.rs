//! [`Counters`]: what the proxy counts, for `/metrics` and `lifeboat status`.
//!
//! Lives here: the counters (atomics, updated a few times per *connection*, never per byte)
//! and their [`CountersSnapshot`]. Never here: rendering (the server does that) or labels
//! beyond the backend address (bounded by the cluster's members).
//!
//! Metric names, when rendered: `lifeboat_traffic_accepted_total`,
//! `lifeboat_traffic_active_connections`, `lifeboat_traffic_forwarded_total{target}`,
//! `lifeboat_traffic_connected_connections{target}`,
//! `lifeboat_traffic_closed_on_switch_total`, `lifeboat_traffic_held_total`,
//! `lifeboat_traffic_holding_connections`, `lifeboat_traffic_hold_timeouts_total`,
//! `lifeboat_traffic_connect_failures_total`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The live counters of one [`Port`](crate::Port); read them with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    closed_on_switch: AtomicU64,
    held: AtomicU64,
    holding: AtomicU64,
    hold_timeouts: AtomicU64,
    connect_failures: AtomicU64,
    /// Per backend: connections forwarded so far, and open now.
    backends: Mutex<BTreeMap<SocketAddr, (u64, u64)>>,
}

/// The counters of one port at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountersSnapshot {
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections open now (held, connecting or forwarding).
    pub active: u64,
    /// Connections forwarded, by backend (counted when the backend connection is made).
    pub forwarded: BTreeMap<SocketAddr, u64>,
    /// Forwarded connections open now, by backend. After a switch, the failover executor
    /// can wait for the old primary's count to reach 0 before it fences the node.
    pub connected: BTreeMap<SocketAddr, u64>,
    /// Forwarded connections closed because the route moved away from their backend.
    pub closed_on_switch: u64,
    /// Clients that had to wait because the route had no backend for them.
    pub held: u64,
    /// Clients waiting for a backend now.
    pub holding: u64,
    /// Held clients closed because no backend appeared within the hold time.
    pub hold_timeouts: u64,
    /// Backend connections that failed or timed out (a read-port client may then still be
    /// served by the next standby).
    pub connect_failures: u64,
}

impl CountersSnapshot {
    /// All connections forwarded, over every backend.
    pub fn forwarded_total(&self) -> u64 {
        self.forwarded.values().sum()
    }

    /// Forwarded connections open now to `backend`.
    pub fn connected_to(&self, backend: SocketAddr) -> u64 {
        self.connected.get(&backend).copied().unwrap_or(0)
    }
}

impl Counters {
    /// Reads every counter (each one atomically; the set is not one atomic picture).
    pub fn snapshot(&self) -> CountersSnapshot {
        let (forwarded, connected) = {
            let m = self.backends();
            (
                m.iter().map(|(a, (f, _))| (*a, *f)).collect(),
                m.iter().map(|(a, (_, c))| (*a, *c)).collect(),
            )
        };
        CountersSnapshot {
            accepted: self.accepted.load(Relaxed),
            active: self.active.load(Relaxed),
            forwarded,
            connected,
            closed_on_switch: self.closed_on_switch.load(Relaxed),
            held: self.held.load(Relaxed),
            holding: self.holding.load(Relaxed),
            hold_timeouts: self.hold_timeouts.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
        }
    }

    pub(crate) fn accepted(&self) -> ActiveGuard<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(&self.active)
    }

    pub(crate) fn holding(&self) -> ActiveGuard<'_> {
        self.held.fetch_add(1, Relaxed);
        self.holding.fetch_add(1, Relaxed);
        ActiveGuard(&self.holding)
    }

    pub(crate) fn hold_timeout(&self) {
        self.hold_timeouts.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed_on_switch(&self) {
        self.closed_on_switch.fetch_add(1, Relaxed);
    }

    pub(crate) fn connect_failure(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    /// Counts a connection forwarded to `target`; it counts as connected until the guard
    /// is dropped.
    pub(crate) fn forwarded(&self, target: SocketAddr) -> ConnectedGuard<'_> {
        let mut m = self.backends();
        let e = m.entry(target).or_insert((0, 0));
        e.0 += 1;
        e.1 += 1;
        ConnectedGuard {
            counters: self,
            target,
        }
    }

    /// The per-backend map; a panic elsewhere while it was held cannot leave it invalid
    /// (every update is a single increment), so a poisoned lock is used as it is.
    fn backends(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, (u64, u64)>> {
        self.backends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts a forwarded connection as connected until dropped.
pub(crate) struct ConnectedGuard<'a> {
    counters: &'a Counters,
    target: SocketAddr,
}

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.counters.backends().get_mut(&self.target) {
            e.1 = e.1.saturating_sub(1);
        }
    }
}

/// Decrements a gauge when dropped, also when the connection's task is cancelled.
pub(crate) struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
