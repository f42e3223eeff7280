//! Replication slots on a PostgreSQL server: listing them with the WAL each holds back, and
//! dropping the one a `pg stream` used.
//!
//! Lives here: [`list`], [`drop_slot`], [`PILING_UP`]. Never here: creating slots (the
//! streamer does, in `stream`), or dropping a slot that is in use (PostgreSQL refuses, and
//! so does this).
//!
//! A slot keeps every WAL segment from its `restart_lsn` on. A `pg stream` that was stopped
//! for good leaves its slot behind, and the server's disk fills with WAL nobody will read:
//! the classic way a replication slot takes a primary down.

use serde::Serialize;

use crate::backup::{connect, sql_error, target_of};
use crate::error::{Error, Result};

/// Retained WAL above which an inactive slot is reported as piling up (1 GiB: 64 segments).
pub const PILING_UP: u64 = 1 << 30;

/// One replication slot (`pg slots`; `--json` schema: docs/json.md).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub slot: String,
    /// `physical` or `logical`.
    pub kind: String,
    /// Whether a client (a standby, a `pg stream`) is attached now.
    pub active: bool,
    /// The oldest WAL position the slot keeps (none before the slot reserved WAL).
    pub restart_lsn: Option<String>,
    /// WAL the server keeps for it: from `restart_lsn` to the current write position.
    pub retained_bytes: Option<u64>,
}

impl SlotInfo {
    /// No client is attached and the slot holds back more than `limit` bytes of WAL.
    pub fn piling_up(&self, limit: u64) -> bool {
        !self.active && self.retained_bytes.is_some_and(|b| b > limit)
    }
}

/// The server's replication slots, by name.
///
/// # Errors
/// [`Error::Sql`] naming the server when it cannot be reached or queried.
pub fn list(dsn: &str) -> Result<Vec<SlotInfo>> {
    let target = target_of(dsn);
    let mut c = connect(dsn)?;
    let rows = c
        .query(
            "select slot_name::text, slot_type::text, active, restart_lsn::text, \
             case when restart_lsn is null then null else pg_wal_lsn_diff( \
               case when pg_is_in_recovery() then pg_last_wal_receive_lsn() \
                    else pg_current_wal_lsn() end, restart_lsn)::bigint end \
             from pg_replication_slots order by 1",
            &[],
        )
        .map_err(|e| sql_error(&target, e))?;
    Ok(rows
        .iter()
        .map(|r| SlotInfo {
            slot: r.get(0),
            kind: r.get(1),
            active: r.get(2),
            restart_lsn: r.get(3),
            retained_bytes: r.get::<_, Option<i64>>(4).map(|b| b.max(0) as u64),
        })
        .collect())
}

/// Drops the slot `name` so the server can recycle the WAL it held back. Returns whether
/// there was one (dropping a slot that is not there is not an error).
///
/// # Errors
/// [`Error::Invalid`] when a client is using the slot (stop it first); [`Error::Sql`]
/// naming the server otherwise.
pub fn drop_slot(dsn: &str, name: &str) -> Result<bool> {
    let target = target_of(dsn);
    let mut c = connect(dsn)?;
    let row = c
        .query_opt(
            "select active, active_pid from pg_replication_slots where slot_name = $1::text::name",
            &[&name],
        )
        .map_err(|e| sql_error(&target, e))?;
    let Some(row) = row else {
        return Ok(false);
    };
    if row.get::<_, bool>(0) {
        let pid: Option<i32> = row.get(1);
        return Err(Error::Invalid(format!(
            "replication slot {name:?} on {target} is in use{}: stop the `pg stream` (or standby) \
             using it first",
            pid.map_or(String::new(), |p| format!(" by process {p}"))
        )));
    }
    c.execute("select pg_drop_replication_slot($1::text::name)", &[&name])
        .map_err(|e| sql_error(&target, e))?;
    Ok(true)
}
