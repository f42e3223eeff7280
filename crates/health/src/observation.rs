//! What one probe saw: [`Observation`], and for PostgreSQL the server's state
//! ([`PgState`], [`ReplicationRow`]); LSN text codecs.
//!
//! Lives here: the result types and pure helpers on them ([`parse_lsn`], [`format_lsn`]).
//! Never here: probing, timing, deciding what a result means for failover.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// The result of one probe of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// When the probe started (monotonic, read from tokio's clock). The result describes
    /// the member somewhere between `at` and `at + latency`.
    pub at: Instant,
    /// How long the probe took; at most about the timeout.
    pub latency: Duration,
    /// Whether the member passed: connected and answered (PostgreSQL), accepted (TCP),
    /// exited 0 in time (command).
    pub ok: bool,
    /// Why it failed, short and without secrets; `None` when `ok`.
    pub error: Option<String>,
    /// What PostgreSQL said; `Some` exactly when a PostgreSQL probe is `ok`.
    pub pg: Option<PgState>,
}

impl Observation {
    /// When the probe finished: `at + latency`.
    pub fn finished(&self) -> Instant {
        self.at + self.latency
    }
}

/// A PostgreSQL member's state, read with one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PgState {
    /// `pg_is_in_recovery()`: true on a standby (or a server still recovering).
    pub in_recovery: bool,
    /// A primary's `pg_current_wal_lsn()`; `None` on a standby.
    pub current_lsn: Option<u64>,
    /// A primary's `pg_current_wal_flush_lsn()` (every acknowledged commit lies at or
    /// below it); `None` on a standby.
    #[serde(default)]
    pub flush_lsn: Option<u64>,
    /// A standby's `pg_last_wal_receive_lsn()` (received and flushed); `None` on a primary
    /// and on a standby that has received nothing by streaming since it started.
    pub receive_lsn: Option<u64>,
    /// A standby's `pg_last_wal_replay_lsn()`; `None` on a primary.
    pub replay_lsn: Option<u64>,
    /// The timeline: on a primary from the name of its current WAL file (right after a
    /// promotion too, unlike `pg_control_checkpoint()`), on a standby the WAL receiver's
    /// `received_tli`; `None` on a standby without a WAL receiver.
    pub timeline: Option<u32>,
    /// A standby's WAL receiver is connected and streaming (`pg_stat_wal_receiver.status =
    /// 'streaming'`).
    pub wal_receiver_streaming: bool,
    /// The WAL receiver's upstream, `sender_host:sender_port` (the host may be a socket
    /// directory); `None` without a receiver, or when the probe user may not see it
    /// (it needs `pg_read_all_stats`).
    pub sender: Option<String>,
    /// `pg_last_xact_replay_timestamp()`: the commit time (server clock) of the last
    /// transaction a standby replayed; `None` on a primary and before the first replay.
    pub replay_timestamp: Option<SystemTime>,
    /// On a primary, the rows of `pg_stat_replication` (standbys and base backups); empty
    /// on a standby without cascading standbys.
    pub replication: Vec<ReplicationRow>,
    /// `synchronous_standby_names` as in force (empty: asynchronous).
    pub synchronous_standby_names: String,
    /// `current_setting('lifeboat.generation', true)` parsed as a number; `None` when unset,
    /// empty or not a number.
    pub generation: Option<u64>,
}

impl PgState {
    /// How far this member's WAL reaches: a primary's current LSN, else a standby's
    /// received LSN, else its replayed LSN.
    pub fn wal_position(&self) -> Option<u64> {
        self.current_lsn.or(self.receive_lsn).or(self.replay_lsn)
    }

    /// How many bytes of WAL a standby has received but not replayed yet.
    pub fn replay_backlog(&self) -> Option<u64> {
        Some(self.receive_lsn?.saturating_sub(self.replay_lsn?))
    }
}

/// One row of a primary's `pg_stat_replication`. Fields PostgreSQL hides from a probe user
/// without `pg_read_all_stats` are empty or `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationRow {
    /// The standby's `application_name` (`walreceiver` unless its `primary_conninfo` or
    /// `cluster_name` says otherwise).
    pub application_name: String,
    /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
    pub state: String,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: String,
    /// The last WAL position the standby flushed to disk.
    pub flush_lsn: Option<u64>,
    /// The last WAL position the standby replayed.
    pub replay_lsn: Option<u64>,
}

/// Parses PostgreSQL's `pg_lsn` text, `X/Y` with hexadecimal halves, into a number.
/// Returns `None` for anything else.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let valid = |h: &str| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid(hi) || !valid(lo) {
        return None;
    }
    let hi = u64::from(u32::from_str_radix(hi, 16).ok()?);
    let lo = u64::from(u32::from_str_radix(lo, 16).ok()?);
    Some(hi << 32 | lo)
}

/// Formats an LSN the way PostgreSQL prints it (`0/16B3748`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsns_parse_like_postgres_prints_them() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("a/b"), Some(0xA_0000_000B));
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/1/2",
            "x/1",
            "+1/0",
            "100000000/0",
            "0 /1",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        assert_eq!(format_lsn(0x16B_3748), "0/16B3748");
    }

    #[test]
    fn wal_position_prefers_the_primary_then_received_then_replayed() {
        let mut s = PgState {
            in_recovery: true,
            current_lsn: None,
            flush_lsn: None,
            receive_lsn: None,
            replay_lsn: Some(5),
            timeline: None,
            wal_receiver_streaming: false,
            sender: None,
            replay_timestamp: None,
            replication: vec![],
            synchronous_standby_names: String::new(),
            generation: None,
        };
        assert_eq!(s.wal_position(), Some(5));
        assert_eq!(s.replay_backlog(), None);
        s.receive_lsn = Some(9);
        assert_eq!(s.wal_position(), Some(9));
        assert_eq!(s.replay_backlog(), Some(4));
        s.current_lsn = Some(12);
        assert_eq!(s.wal_position(), Some(12));
    }

    proptest! {
        #[test]
        fn lsn_text_roundtrips(lsn in any::<u64>()) {
            prop_assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
            prop_assert_eq!(parse_lsn(&format_lsn(lsn).to_lowercase()), Some(lsn));
        }
    }
}
