//! The coordinator: where a cluster's shared state lives (leader, generation, members'
//! reports, maintenance, approvals, failover history), in an embedded SQLite file or in etcd.
//!
//! It stores and compares; it must never decide a failover (that is `lifeboat-failover`).
//!
//! Lives here: [`Coordinator`] (one type, two backends chosen at start: [`Embedded`] for one
//! monitor daemon, [`Etcd`] for one agent per database node), the typed state it keeps
//! ([`ClusterState`], [`Approval`], [`MemberReport`], [`HistoryEntry`]), the leader lease
//! ([`LeaderLease`]) and the generation compare-and-swap ([`Coordinator::promote`]) that
//! makes "an action with a stale generation is refused" true.
//! Never here: probing, choosing a standby, running `pg_ctl`, reading the config file, or
//! retrying a refused compare-and-swap (a stale generation is an answer, not a failure).
//!
//! ```no_run
//! # async fn demo() -> Result<(), lifeboat_coord::Error> {
//! use lifeboat_coord::{Coordinator, EmbeddedOptions};
//! let coord = Coordinator::open_embedded(EmbeddedOptions::new("/var/lib/lifeboat/state.db", "shop")).await?;
//! let state = coord.state().await?;
//! match coord.promote(state.generation, "db2").await {
//!     Ok(generation) => println!("db2 is primary in generation {generation}"),
//!     Err(lifeboat_coord::Error::Stale { found, .. }) => println!("someone else acted: {found}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! The design (key layout, transactions, lease timing) is ADR 0019.

mod embedded;
mod error;
mod etcd;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use embedded::{Embedded, EmbeddedOptions};
pub use error::{Error, Result};
pub use etcd::{Etcd, EtcdOptions};

/// The decoders of what the coordinator reads back from etcd, pure (bytes in, value out),
/// for the fuzz targets (fuzz/fuzz_targets/etcd_values.rs). Not a stable interface.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Approval, HistoryEntry, MemberReport};

    /// A member's report as stored under `members/<member>`.
    ///
    /// # Errors
    /// When the bytes are not a stored report.
    pub fn member_report(member: &str, value: &[u8]) -> serde_json::Result<MemberReport> {
        crate::etcd::decode_report(member, value)
    }

    /// A pending approval as stored under `approval`.
    ///
    /// # Errors
    /// When the bytes are not a stored approval.
    pub fn approval(value: &[u8]) -> serde_json::Result<Approval> {
        serde_json::from_slice(value)
    }

    /// A history entry as stored under `history/`.
    ///
    /// # Errors
    /// When the bytes are not a stored entry.
    pub fn history_entry(value: &[u8]) -> serde_json::Result<HistoryEntry> {
        crate::etcd::decode_event(value)
    }
}

/// A cluster's shared state, read at one moment (one SQLite read transaction, one etcd
/// read-only txn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// How many promotions the cluster has seen; 0 before the first. Every promotion
    /// increments it through [`Coordinator::promote`].
    pub generation: u64,
    /// The member promoted last (the intended primary), if any.
    pub primary: Option<String>,
    /// While true, the failover controller must change nothing.
    pub maintenance: bool,
    /// A failover waiting for (or given) an operator's approval (`failover = "manual"`).
    pub pending_approval: Option<Approval>,
    /// The member whose leader lease is live, if any.
    pub leader: Option<String>,
}

/// A failover that waits for an operator (`failover = "manual"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The standby to promote: the controller's proposal, replaced by the operator's
    /// choice when [`Coordinator::approve`] names one; `None` lets the controller pick.
    pub to: Option<String>,
    /// When the controller asked (wall clock of the asking process).
    #[serde(with = "unix_ms")]
    pub requested_at: SystemTime,
    /// The generation the request was made in; an approval for an older generation than
    /// the current one is stale and must not be acted on.
    pub generation: u64,
    /// When an operator approved, `None` while it still waits.
    #[serde(with = "opt_unix_ms", default)]
    pub approved_at: Option<SystemTime>,
}

/// What one member's agent (or the monitor, for a member) last published about it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberReport {
    /// The member's name.
    pub member: String,
    /// The report as published (probe results, LSNs: the publisher's schema).
    pub report: serde_json::Value,
    /// How long ago it was published, by this process's wall clock against the
    /// publisher's (etcd: clocks of different hosts; skew shows up here, 0 when negative).
    pub age: Duration,
}

/// One entry of the failover history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// When it was recorded (wall clock of the recording process).
    pub at: SystemTime,
    /// What happened (the recorder's schema).
    pub event: serde_json::Value,
}

/// The right to act as the cluster's leader until the lease lapses.
///
/// Returned by [`Coordinator::acquire_leader`]; kept alive by [`Coordinator::renew`];
/// given back with [`Coordinator::release`]. Dropping it without releasing leaves the
/// lease to expire on its own (after its TTL), as a crash would.
#[derive(Debug)]
pub struct LeaderLease {
    member: String,
    ttl: Duration,
    acquired_until: Instant,
    inner: LeaseInner,
}

#[derive(Debug)]
enum LeaseInner {
    Embedded(embedded::LeaseToken),
    Etcd(Box<etcd::LeaseHandle>),
}

impl LeaderLease {
    /// The member holding it.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Its time to live: without a renewal, the lease lapses this long after the last
    /// successful one (etcd rounds it up to whole seconds; this is the requested value).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Until when it is certainly valid as seen locally, counted from the moment the
    /// acquiring request was sent (before the first [`Coordinator::renew`]).
    pub fn acquired_until(&self) -> Instant {
        self.acquired_until
    }

    /// The backend's lease id (etcd lease id, or the SQLite lease number), for logs.
    pub fn id(&self) -> i64 {
        match &self.inner {
            LeaseInner::Embedded(t) => t.id,
            LeaseInner::Etcd(h) => h.id,
        }
    }
}

/// Wakes its holder when the cluster's state may have changed.
///
/// Embedded: after every change made through this process's [`Coordinator`]. Etcd: after
/// every change under `/lifeboat/<cluster>/` by anyone (an etcd watch; members' reports and
/// history included), and after the watch had to be re-established (changes may have been
/// missed: re-read the state). The etcd watch runs in a task until this is dropped.
/// It says *that* something changed, never what: re-read with [`Coordinator::state`].
#[derive(Debug)]
pub struct Changes {
    rx: tokio::sync::watch::Receiver<u64>,
}

impl Changes {
    /// Waits until something changed since the last call (or since [`Coordinator::changes`]).
    ///
    /// # Errors
    /// [`Error::Closed`] once the embedded coordinator that made it is gone (an etcd
    /// watch keeps running while this lives).
    pub async fn changed(&mut self) -> Result<()> {
        self.rx.changed().await.map_err(|_| Error::Closed)
    }
}

/// A cluster's coordinator: an embedded SQLite file or etcd.
///
/// Every method is safe to call from many tasks at once (`&self`). Enum dispatch: the set of
/// backends is fixed (STYLE §3).
#[derive(Debug)]
pub enum Coordinator {
    /// One monitor process keeps the state in a local SQLite file.
    Embedded(Embedded),
    /// Every node's agent shares the state in etcd.
    Etcd(Etcd),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Coordinator::Embedded($c) => $e,
            Coordinator::Etcd($c) => $e,
        }
    };
}

impl Coordinator {
    /// Opens (creating when absent) the SQLite state file of the embedded coordinator.
    ///
    /// # Errors
    /// [`Error::Sqlite`] naming the file when it cannot be opened, set to WAL mode, or its
    /// tables cannot be created; [`Error::InvalidName`] for a bad cluster name.
    pub async fn open_embedded(options: EmbeddedOptions) -> Result<Self> {
        Ok(Coordinator::Embedded(Embedded::open(options).await?))
    }

    /// Connects to etcd. Connecting is lazy: this fails only for malformed options; an
    /// unreachable etcd shows up as [`Error::EtcdTimeout`] on the first call.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad cluster name; [`Error::Etcd`] for bad endpoints.
    pub async fn connect_etcd(options: EtcdOptions) -> Result<Self> {
        Ok(Coordinator::Etcd(Etcd::connect(options).await?))
    }

    /// The cluster this coordinator serves.
    pub fn cluster(&self) -> &str {
        dispatch!(self, c => c.cluster())
    }

    /// Reads the whole state at one moment.
    ///
    /// # Errors
    /// Backend errors ([`Error::Sqlite`], [`Error::EtcdTimeout`], [`Error::Etcd`]);
    /// [`Error::Corrupt`] when a stored value is not understood.
    pub async fn state(&self) -> Result<ClusterState> {
        dispatch!(self, c => c.state().await)
    }

    /// Makes `member` the primary in generation `expected + 1`, only if the stored
    /// generation is still `expected` (compare-and-swap; one SQLite transaction, one etcd
    /// txn). Also clears a pending approval (it belonged to the old generation).
    /// Of N callers with the same `expected`, exactly one gets `Ok`.
    ///
    /// # Errors
    /// [`Error::Stale`] with the generation found when another promotion came first (never
    /// retry it: re-read the state and decide again); backend errors. After
    /// [`Error::EtcdTimeout`] the promotion may or may not have happened: re-read.
    pub async fn promote(&self, expected: u64, member: &str) -> Result<u64> {
        error::check_name("member", member)?;
        dispatch!(self, c => c.promote(expected, member, None).await)
    }

    /// Like [`Coordinator::promote`], and only while `lease` is the live leader lease, checked
    /// in the same transaction: a leader whose lease lapsed (and who may not have noticed
    /// yet) cannot promote, even with the current generation.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when `lease` is no longer the leader's (checked first);
    /// otherwise as [`Coordinator::promote`].
    pub async fn promote_as_leader(
        &self,
        lease: &LeaderLease,
        expected: u64,
        member: &str,
    ) -> Result<u64> {
        error::check_name("member", member)?;
        dispatch!(self, c => c.promote(expected, member, Some(lease)).await)
    }

    /// Takes the leader lease for `member` with time to live `ttl`, if no live lease is
    /// held (by anyone, `member` included); `None` when one is.
    ///
    /// # Errors
    /// Backend errors; [`Error::InvalidName`].
    pub async fn acquire_leader(&self, member: &str, ttl: Duration) -> Result<Option<LeaderLease>> {
        error::check_name("member", member)?;
        dispatch!(self, c => c.acquire_leader(member, ttl).await)
    }

    /// Renews `lease` and returns until when it is certainly valid as seen locally: the
    /// moment the renewal was *sent* plus the TTL. The holder of a primary must stop
    /// acting (self-fence) when `returned - ttl/2` passes without a newer renewal.
    /// Bounded by the call timeout (etcd: [`EtcdOptions::call_timeout`]); never hangs.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease expired or was released (do not renew again:
    /// acquire anew); [`Error::EtcdTimeout`] and other backend errors when the renewal's
    /// fate is unknown (the previous deadline still holds).
    pub async fn renew(&self, lease: &LeaderLease) -> Result<Instant> {
        dispatch!(self, c => c.renew(lease).await)
    }

    /// Gives the lease back at once so another member may take it without waiting for
    /// the TTL. Releasing an already lapsed lease is not an error.
    ///
    /// # Errors
    /// Backend errors (the lease then lapses on its own).
    pub async fn release(&self, lease: LeaderLease) -> Result<()> {
        dispatch!(self, c => c.release(lease).await)
    }

    /// The member holding a live leader lease, if any.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn leader(&self) -> Result<Option<String>> {
        dispatch!(self, c => c.leader().await)
    }

    /// Stores `member`'s latest report, replacing the previous one. Etcd: attached to
    /// this agent's own lease ([`EtcdOptions::report_ttl`], renewed by each publish), so
    /// the report vanishes when the agent stops publishing; embedded: a row whose age
    /// [`Coordinator::reports`] tells.
    ///
    /// # Errors
    /// Backend errors; [`Error::InvalidName`].
    pub async fn publish(&self, member: &str, report: &serde_json::Value) -> Result<()> {
        error::check_name("member", member)?;
        dispatch!(self, c => c.publish(member, report).await)
    }

    /// Every member's latest report with its age, sorted by member name.
    ///
    /// # Errors
    /// Backend errors; [`Error::Corrupt`].
    pub async fn reports(&self) -> Result<Vec<MemberReport>> {
        dispatch!(self, c => c.reports().await)
    }

    /// Turns maintenance mode on or off (while on, the controller changes nothing).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn set_maintenance(&self, on: bool) -> Result<()> {
        dispatch!(self, c => c.set_maintenance(on).await)
    }

    /// Records that a failover in `generation` waits for an operator, proposing `to`
    /// (or letting the controller choose). Replaces an earlier request.
    ///
    /// # Errors
    /// Backend errors; [`Error::InvalidName`].
    pub async fn request_approval(&self, generation: u64, to: Option<&str>) -> Result<()> {
        if let Some(to) = to {
            error::check_name("member", to)?;
        }
        dispatch!(self, c => c.request_approval(generation, to).await)
    }

    /// Approves the pending failover; `to` names the standby to promote (replacing the
    /// proposal), `None` keeps the proposal. Returns the approval as stored.
    ///
    /// # Errors
    /// [`Error::NothingToApprove`] when no failover waits; backend errors.
    pub async fn approve(&self, to: Option<&str>) -> Result<Approval> {
        if let Some(to) = to {
            error::check_name("member", to)?;
        }
        dispatch!(self, c => c.approve(to).await)
    }

    /// Drops the pending approval request (approved or not), if any.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn clear_approval(&self) -> Result<()> {
        dispatch!(self, c => c.clear_approval().await)
    }

    /// Appends `event` to the history with the current wall-clock time.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn record(&self, event: &serde_json::Value) -> Result<()> {
        dispatch!(self, c => c.record(event).await)
    }

    /// The last `limit` history entries, oldest first (in the order they were recorded:
    /// SQLite row ids; etcd create revisions).
    ///
    /// # Errors
    /// Backend errors; [`Error::Corrupt`].
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        dispatch!(self, c => c.history(limit).await)
    }

    /// Closes the coordinator. Etcd: revokes this agent's report lease, so its reports
    /// vanish now instead of after [`EtcdOptions::report_ttl`] (a leader lease is given
    /// back with [`Coordinator::release`], not here). Embedded: nothing beyond dropping it.
    ///
    /// # Errors
    /// Etcd errors (the report lease then lapses on its own).
    pub async fn close(self) -> Result<()> {
        match self {
            Coordinator::Embedded(_) => Ok(()),
            Coordinator::Etcd(c) => c.close().await,
        }
    }

    /// A notification that fires when the state may have changed (see [`Changes`]).
    ///
    /// # Errors
    /// Etcd: the watch could not be set up within the call timeout.
    pub async fn changes(&self) -> Result<Changes> {
        dispatch!(self, c => c.changes().await)
    }
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub(crate) fn to_unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch (the epoch for negative values).
pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Now, truncated to the millisecond stored (so a value reads back equal to itself).
pub(crate) fn now_ms() -> SystemTime {
    from_unix_ms(to_unix_ms(SystemTime::now()))
}

/// How long ago `at_ms` was, by this process's wall clock (0 when in the future).
pub(crate) fn age_of(at_ms: i64) -> Duration {
    let now = to_unix_ms(SystemTime::now());
    Duration::from_millis(u64::try_from(now.saturating_sub(at_ms)).unwrap_or(0))
}

/// `SystemTime` as Unix milliseconds in stored JSON.
mod unix_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::to_unix_ms(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(super::from_unix_ms(i64::deserialize(d)?))
    }
}

/// `Option<SystemTime>` as Unix milliseconds (or null) in stored JSON.
mod opt_unix_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::to_unix_ms(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(super::from_unix_ms))
    }
}
