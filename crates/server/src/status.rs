//! What `lifeboat status` and `GET /status` report: each member's role, state, PID,
//! address, WAL positions and lag; the coordinator and its generation; the proxy; the last
//! failover with its steps; recent alerts.
//!
//! Plain data (serde both ways, so the CLI renders what the API sent); no secrets.

use serde::{Deserialize, Serialize};

/// The whole picture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The cluster's name.
    pub cluster: String,
    /// `healthy`, `failing_over`, `switching`, `awaiting_approval`, `discovering`, `stale`.
    pub phase: String,
    /// Why the controller waits, in `awaiting_approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `sync` or `async`.
    pub replication: String,
    /// `automatic` or `manual`.
    pub failover: String,
    /// Automation paused.
    pub maintenance: bool,
    /// The primary, when known.
    pub primary: Option<String>,
    /// The coordinator.
    pub coordinator: CoordinatorStatus,
    /// The proxy's ports and counters.
    pub proxy: ProxyStatus,
    /// The API's address.
    pub api: String,
    /// Each member, in config order.
    pub members: Vec<MemberStatus>,
    /// The standbys a failover may promote in sync mode.
    pub sync_set: Vec<String>,
    /// The standby an automatic failover would promote now; `None` means the primary's
    /// loss would wait for `lifeboat failover approve` (sync mode: no standby confirmed
    /// synchronous yet).
    #[serde(default)]
    pub failover_target: Option<String>,
    /// The last failover or switchover, with its steps.
    pub last_transition: Option<serde_json::Value>,
    /// The most recent alerts, newest last.
    pub alerts: Vec<AlertRecord>,
}

/// The coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    /// `embedded` or `etcd`.
    pub kind: String,
    /// The state file, or the etcd endpoints.
    pub location: String,
    /// The generation (incremented by every promotion).
    pub generation: u64,
}

/// The proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Where writes are accepted (forwarded to the primary).
    pub write: Option<String>,
    /// Where reads are accepted (balanced over standbys).
    pub read: Option<String>,
    /// Where writes go now (`None` while a failover is under way).
    pub routed_to: Option<String>,
    /// Connections open now (write + read).
    pub active: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed because the primary changed.
    pub closed_on_switch: u64,
    /// Clients held while there was no primary.
    pub held: u64,
}

/// One member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Its data directory.
    pub data_dir: String,
    /// `primary`, `standby`, `down` or `unknown`.
    pub role: String,
    /// The probes' verdict: `up`, `down`, `unknown`.
    pub state: String,
    /// The postmaster's PID, when it runs on this host.
    pub pid: Option<u32>,
    /// The timeline.
    pub timeline: Option<u32>,
    /// The primary's current WAL position, as `X/Y`.
    pub current_lsn: Option<String>,
    /// A standby's received WAL position.
    pub receive_lsn: Option<String>,
    /// A standby's replayed WAL position.
    pub replay_lsn: Option<String>,
    /// A standby's distance behind the primary, in bytes.
    pub lag_bytes: Option<u64>,
    /// A standby's replay delay in seconds (0 when it has replayed everything received).
    pub lag_seconds: Option<f64>,
    /// A standby's WAL receiver is streaming.
    pub streaming: bool,
    /// Must be rewound or re-cloned (a former primary).
    pub needs_rejoin: bool,
    /// A rejoin or recovery is running.
    pub repairing: bool,
    /// The generation the member carries (`lifeboat.generation`).
    pub generation: Option<u64>,
    /// The last probe's error.
    pub last_error: Option<String>,
    /// `[health] command`'s verdict for this member (`up`, `down`, `unknown`), when set.
    #[serde(default)]
    pub check: Option<String>,
    /// Whether `[health] host_port` answers on the member's host, when set.
    #[serde(default)]
    pub host_reachable: Option<bool>,
}

/// One alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// When it was raised (RFC 3339, UTC).
    pub time: String,
    /// `info` or `critical`.
    pub severity: String,
    /// What happened and what to do.
    pub message: String,
}
