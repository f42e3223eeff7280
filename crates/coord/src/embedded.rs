//! The embedded backend: one monitor daemon keeps the cluster's state in a local SQLite
//! file (rusqlite with SQLite bundled; WAL journal, `synchronous = FULL`).
//!
//! Lives here: the schema, one transaction per call (writes take the write lock first:
//! `BEGIN IMMEDIATE`), leases as rows with a wall-clock expiry, all of it on tokio's
//! blocking pool.
//! Never here: blocking a runtime thread with SQLite, or a change spread over two
//! transactions (a crash between them would leave half of it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::time::Instant;

use crate::error::check_name;
use crate::{
    age_of, to_unix_ms, Approval, Changes, ClusterState, Error, HistoryEntry, LeaderLease,
    LeaseInner, MemberReport, Result,
};

/// Where the embedded coordinator keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The SQLite state file (created when absent; `-wal` and `-shm` files appear beside it).
    pub path: PathBuf,
    /// The cluster's name (one file may hold several clusters).
    pub cluster: String,
    /// How long a call waits for another connection's write lock before failing with a
    /// transient [`Error::Sqlite`]. Default 5 s.
    pub busy_timeout: Duration,
}

impl EmbeddedOptions {
    /// Options for `cluster` in the state file at `path`, with the default busy timeout.
    pub fn new(path: impl Into<PathBuf>, cluster: impl Into<String>) -> Self {
        EmbeddedOptions {
            path: path.into(),
            cluster: cluster.into(),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The schema, applied at every open (idempotent). Times are Unix milliseconds.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cluster (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,
    primary_member TEXT,
    maintenance INTEGER NOT NULL DEFAULT 0,
    approval TEXT,
    lease_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leader (
    cluster TEXT PRIMARY KEY,
    member TEXT NOT NULL,
    lease INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS report (
    cluster TEXT NOT NULL,
    member TEXT NOT NULL,
    report TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (cluster, member)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_cluster ON history (cluster, id);
";

/// A lease's number in the `leader` table (unique per cluster: `cluster.lease_seq`).
#[derive(Debug)]
pub(crate) struct LeaseToken {
    pub(crate) id: i64,
}

/// Why a transaction body failed: SQLite, or an answer for the caller.
enum Fail {
    Sql(rusqlite::Error),
    Answer(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

type Body<T> = std::result::Result<T, Fail>;

/// The embedded coordinator: one SQLite connection, used from tokio's blocking pool.
#[derive(Debug)]
pub struct Embedded {
    path: PathBuf,
    cluster: String,
    conn: Arc<Mutex<Connection>>,
    changes: tokio::sync::watch::Sender<u64>,
}

fn sqlite_err(path: &Path, op: &'static str, source: rusqlite::Error) -> Error {
    let hint = match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "; another process holds the write lock: is a second monitor running on this file?"
        }
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
            "; check that the directory exists and is writable (`state` in [coordinator])"
        }
        Some(rusqlite::ErrorCode::DiskFull) => "; free disk space",
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            "; it is not a Lifeboat state file (or is damaged): point `state` elsewhere"
        }
        _ => "",
    };
    Error::Sqlite {
        path: path.display().to_string(),
        op,
        hint,
        source,
    }
}

impl Embedded {
    pub(crate) async fn open(options: EmbeddedOptions) -> Result<Self> {
        check_name("cluster", &options.cluster)?;
        let path = options.path.clone();
        let cluster = options.cluster.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let p = &options.path;
            let conn = Connection::open(p).map_err(|e| sqlite_err(p, "open", e))?;
            conn.busy_timeout(options.busy_timeout)
                .map_err(|e| sqlite_err(p, "set busy timeout", e))?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| sqlite_err(p, "switch to WAL journal mode", e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Corrupt {
                    location: p.display().to_string(),
                    key: "journal_mode".into(),
                    detail: format!("SQLite kept journal mode {mode:?} instead of WAL"),
                });
            }
            conn.execute_batch("PRAGMA synchronous = FULL;")
                .map_err(|e| sqlite_err(p, "set synchronous = FULL", e))?;
            conn.execute_batch(SCHEMA)
                .map_err(|e| sqlite_err(p, "create tables", e))?;
            conn.execute(
                "INSERT OR IGNORE INTO cluster (name) VALUES (?1)",
                params![options.cluster],
            )
            .map_err(|e| sqlite_err(p, "add the cluster row", e))?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::TaskFailed {
            path: path.display().to_string(),
            op: "open",
            detail: e.to_string(),
        })??;
        Ok(Embedded {
            path,
            cluster,
            conn: Arc::new(Mutex::new(conn)),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub(crate) fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Runs `body` in one transaction on the blocking pool; `write` takes the write lock
    /// at `BEGIN` (so two writers serialize instead of failing at commit) and notifies
    /// [`Changes`] after a commit.
    async fn txn<T, F>(&self, op: &'static str, write: bool, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &str) -> Body<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let cluster = self.cluster.clone();
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<T> {
            // A panic while holding the lock cannot leave a transaction open (rusqlite
            // rolls back on drop), so a poisoned lock is still a usable connection.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let behavior = if write {
                TransactionBehavior::Immediate
            } else {
                TransactionBehavior::Deferred
            };
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(|e| sqlite_err(&path, op, e))?;
            match body(&tx, &cluster) {
                Ok(v) => {
                    tx.commit().map_err(|e| sqlite_err(&path, op, e))?;
                    Ok(v)
                }
                Err(Fail::Sql(e)) => Err(sqlite_err(&path, op, e)),
                Err(Fail::Answer(e)) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::TaskFailed {
            path: self.path.display().to_string(),
            op,
            detail: e.to_string(),
        })?;
        if write && result.is_ok() {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        result
    }

    fn corrupt(&self, key: &str, detail: impl ToString) -> Error {
        Error::Corrupt {
            location: self.path.display().to_string(),
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) async fn state(&self) -> Result<ClusterState> {
        type Row = (i64, Option<String>, bool, Option<String>, Option<String>);
        let (generation, primary, maintenance, approval, leader): Row = self
            .txn("read state", false, |tx, cluster| {
                let (generation, primary, maintenance, approval) = tx.query_row(
                    "SELECT generation, primary_member, maintenance, approval
                     FROM cluster WHERE name = ?1",
                    params![cluster],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    },
                )?;
                let leader = live_leader(tx, cluster)?;
                Ok((generation, primary, maintenance, approval, leader))
            })
            .await?;
        let pending_approval = match approval {
            Some(text) => Some(
                serde_json::from_str::<Approval>(&text)
                    .map_err(|e| self.corrupt("cluster.approval", e))?,
            ),
            None => None,
        };
        Ok(ClusterState {
            generation: u64::try_from(generation)
                .map_err(|_| self.corrupt("cluster.generation", generation))?,
            primary,
            maintenance,
            pending_approval,
            leader,
        })
    }

    pub(crate) async fn promote(
        &self,
        expected: u64,
        member: &str,
        lease: Option<&LeaderLease>,
    ) -> Result<u64> {
        let lease = match lease.map(|l| (l, &l.inner)) {
            None => None,
            Some((l, LeaseInner::Embedded(t))) => Some((l.member.clone(), t.id)),
            Some((_, LeaseInner::Etcd(_))) => {
                return Err(Error::WrongBackend {
                    lease: "etcd",
                    backend: "embedded",
                })
            }
        };
        let member = member.to_string();
        let location = self.path.display().to_string();
        self.txn("promote", true, move |tx, cluster| {
            if let Some((holder, id)) = lease {
                let live: Option<i64> = tx
                    .query_row(
                        "SELECT lease FROM leader
                         WHERE cluster = ?1 AND lease = ?2 AND expires_ms > ?3",
                        params![cluster, id, to_unix_ms(SystemTime::now())],
                        |r| r.get(0),
                    )
                    .optional()?;
                if live.is_none() {
                    return Err(Fail::Answer(Error::LeaseLost {
                        member: holder,
                        id,
                        why: "it expired or was released".into(),
                    }));
                }
            }
            let stored: i64 = tx.query_row(
                "SELECT generation FROM cluster WHERE name = ?1",
                params![cluster],
                |r| r.get(0),
            )?;
            let found = u64::try_from(stored).map_err(|_| {
                Fail::Answer(Error::Corrupt {
                    location,
                    key: "cluster.generation".into(),
                    detail: format!("negative generation {stored}"),
                })
            })?;
            if found != expected {
                return Err(Fail::Answer(Error::Stale { expected, found }));
            }
            let next = expected.saturating_add(1);
            tx.execute(
                "UPDATE cluster SET generation = ?2, primary_member = ?3, approval = NULL
                 WHERE name = ?1",
                params![cluster, i64::try_from(next).unwrap_or(i64::MAX), member],
            )?;
            Ok(next)
        })
        .await
    }

    pub(crate) async fn acquire_leader(
        &self,
        member: &str,
        ttl: Duration,
    ) -> Result<Option<LeaderLease>> {
        let sent = Instant::now();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let who = member.to_string();
        let id = self
            .txn("acquire the leader lease", true, move |tx, cluster| {
                if live_leader(tx, cluster)?.is_some() {
                    return Ok(None);
                }
                let id: i64 = tx.query_row(
                    "UPDATE cluster SET lease_seq = lease_seq + 1 WHERE name = ?1
                     RETURNING lease_seq",
                    params![cluster],
                    |r| r.get(0),
                )?;
                let expires = to_unix_ms(SystemTime::now()).saturating_add(ttl_ms);
                tx.execute(
                    "INSERT OR REPLACE INTO leader (cluster, member, lease, expires_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![cluster, who, id, expires],
                )?;
                Ok(Some(id))
            })
            .await?;
        Ok(id.map(|id| LeaderLease {
            member: member.to_string(),
            ttl,
            acquired_until: sent + ttl,
            inner: LeaseInner::Embedded(LeaseToken { id }),
        }))
    }

    pub(crate) async fn renew(&self, lease: &LeaderLease) -> Result<Instant> {
        let LeaseInner::Embedded(token) = &lease.inner else {
            return Err(Error::WrongBackend {
                lease: "etcd",
                backend: "embedded",
            });
        };
        let sent = Instant::now();
        let id = token.id;
        let ttl_ms = i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX);
        let renewed = self
            .txn("renew the leader lease", true, move |tx, cluster| {
                let now = to_unix_ms(SystemTime::now());
                let n = tx.execute(
                    "UPDATE leader SET expires_ms = ?3
                     WHERE cluster = ?1 AND lease = ?2 AND expires_ms > ?4",
                    params![cluster, id, now.saturating_add(ttl_ms), now],
                )?;
                Ok(n == 1)
            })
            .await?;
        if renewed {
            Ok(sent + lease.ttl)
        } else {
            Err(Error::LeaseLost {
                member: lease.member.clone(),
                id,
                why: "it expired or was released".into(),
            })
        }
    }

    pub(crate) async fn release(&self, lease: LeaderLease) -> Result<()> {
        let LeaseInner::Embedded(token) = &lease.inner else {
            return Err(Error::WrongBackend {
                lease: "etcd",
                backend: "embedded",
            });
        };
        let id = token.id;
        self.txn("release the leader lease", true, move |tx, cluster| {
            tx.execute(
                "DELETE FROM leader WHERE cluster = ?1 AND lease = ?2",
                params![cluster, id],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn leader(&self) -> Result<Option<String>> {
        self.txn("read the leader", false, |tx, cluster| {
            Ok(live_leader(tx, cluster)?)
        })
        .await
    }

    pub(crate) async fn publish(&self, member: &str, report: &serde_json::Value) -> Result<()> {
        let member = member.to_string();
        let text = report.to_string();
        self.txn("publish a report", true, move |tx, cluster| {
            tx.execute(
                "INSERT INTO report (cluster, member, report, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (cluster, member)
                 DO UPDATE SET report = excluded.report, updated_ms = excluded.updated_ms",
                params![cluster, member, text, to_unix_ms(SystemTime::now())],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn reports(&self) -> Result<Vec<MemberReport>> {
        let rows = self
            .txn("read reports", false, |tx, cluster| {
                let mut stmt = tx.prepare(
                    "SELECT member, report, updated_ms FROM report WHERE cluster = ?1
                     ORDER BY member",
                )?;
                let rows = stmt
                    .query_map(params![cluster], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(member, text, at)| {
                let report = serde_json::from_str(&text)
                    .map_err(|e| self.corrupt(&format!("report of {member}"), e))?;
                Ok(MemberReport {
                    member,
                    report,
                    age: age_of(at),
                })
            })
            .collect()
    }

    pub(crate) async fn set_maintenance(&self, on: bool) -> Result<()> {
        self.txn("set maintenance", true, move |tx, cluster| {
            tx.execute(
                "UPDATE cluster SET maintenance = ?2 WHERE name = ?1",
                params![cluster, on],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn request_approval(&self, generation: u64, to: Option<&str>) -> Result<()> {
        let approval = Approval {
            to: to.map(str::to_string),
            requested_at: crate::now_ms(),
            generation,
            approved_at: None,
        };
        let text = serde_json::to_string(&approval).map_err(|e| self.corrupt("approval", e))?;
        self.txn("request approval", true, move |tx, cluster| {
            tx.execute(
                "UPDATE cluster SET approval = ?2 WHERE name = ?1",
                params![cluster, text],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn approve(&self, to: Option<&str>) -> Result<Approval> {
        let to = to.map(str::to_string);
        let location = self.path.display().to_string();
        self.txn("approve", true, move |tx, cluster| {
            let text: Option<String> = tx.query_row(
                "SELECT approval FROM cluster WHERE name = ?1",
                params![cluster],
                |r| r.get(0),
            )?;
            let corrupt = |detail: String| {
                Fail::Answer(Error::Corrupt {
                    location: location.clone(),
                    key: "cluster.approval".into(),
                    detail,
                })
            };
            let Some(text) = text else {
                return Err(Fail::Answer(Error::NothingToApprove {
                    cluster: cluster.to_string(),
                }));
            };
            let mut approval: Approval =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            approval.approved_at = Some(crate::now_ms());
            if to.is_some() {
                approval.to = to;
            }
            let text = serde_json::to_string(&approval).map_err(|e| corrupt(e.to_string()))?;
            tx.execute(
                "UPDATE cluster SET approval = ?2 WHERE name = ?1",
                params![cluster, text],
            )?;
            Ok(approval)
        })
        .await
    }

    pub(crate) async fn clear_approval(&self) -> Result<()> {
        self.txn("clear approval", true, |tx, cluster| {
            tx.execute(
                "UPDATE cluster SET approval = NULL WHERE name = ?1",
                params![cluster],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn record(&self, event: &serde_json::Value) -> Result<()> {
        let text = event.to_string();
        self.txn("record history", true, move |tx, cluster| {
            tx.execute(
                "INSERT INTO history (cluster, at_ms, event) VALUES (?1, ?2, ?3)",
                params![cluster, to_unix_ms(SystemTime::now()), text],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .txn("read history", false, move |tx, cluster| {
                let mut stmt = tx.prepare(
                    "SELECT at_ms, event FROM (
                        SELECT id, at_ms, event FROM history WHERE cluster = ?1
                        ORDER BY id DESC LIMIT ?2
                     ) ORDER BY id",
                )?;
                let rows = stmt
                    .query_map(params![cluster, limit], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(at, text)| {
                Ok(HistoryEntry {
                    at: crate::from_unix_ms(at),
                    event: serde_json::from_str(&text)
                        .map_err(|e| self.corrupt("history.event", e))?,
                })
            })
            .collect()
    }

    pub(crate) async fn changes(&self) -> Result<Changes> {
        Ok(Changes {
            rx: self.changes.subscribe(),
        })
    }
}

/// The holder of the cluster's unexpired leader row, if any.
fn live_leader(tx: &rusqlite::Transaction<'_>, cluster: &str) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT member FROM leader WHERE cluster = ?1 AND expires_ms > ?2",
        params![cluster, to_unix_ms(SystemTime::now())],
        |r| r.get(0),
    )
    .optional()
}
