//! The PostgreSQL probe: a persistent connection per member and the one health query.
//!
//! Lives here: connecting with a deadline, [`HEALTH_QUERY`], reading its one row into a
//! [`PgState`], dropping a connection that broke or timed out.
//! Never here: writes, `SET`s or anything else that changes the server; secrets in error
//! text (the caller masks the password in every message that leaves this module).

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_postgres::{NoTls, SimpleQueryMessage, SimpleQueryRow};

use crate::observation::{parse_lsn, PgState, ReplicationRow};
use crate::ProbeError;

/// The one query of a probe: one round trip with the simple protocol (no statement to
/// prepare or cache, every value as text). It only reads; it works on a primary and on a
/// standby and needs no privileges (PostgreSQL hides some replication columns from users
/// without `pg_read_all_stats`). The functions that fail during recovery are guarded by
/// `CASE`, whose branches PostgreSQL evaluates lazily for volatile functions.
pub(crate) const HEALTH_QUERY: &str = "\
SELECT r.rec,
  CASE WHEN r.rec THEN NULL ELSE pg_current_wal_lsn()::text END,
  pg_last_wal_receive_lsn()::text,
  pg_last_wal_replay_lsn()::text,
  CASE WHEN r.rec THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
  w.status,
  w.sender_host,
  w.sender_port::text,
  w.received_tli::text,
  extract(epoch FROM pg_last_xact_replay_timestamp())::text,
  (SELECT coalesce(json_agg(json_build_array(application_name, state, sync_state,
                                             flush_lsn::text, replay_lsn::text)), '[]')
     FROM pg_stat_replication)::text,
  current_setting('synchronous_standby_names'),
  current_setting('lifeboat.generation', true),
  CASE WHEN r.rec THEN NULL ELSE pg_current_wal_flush_lsn()::text END
FROM (SELECT pg_is_in_recovery() AS rec) r LEFT JOIN pg_stat_wal_receiver w ON true";

/// The column of [`HEALTH_QUERY`] holding `lifeboat.generation`.
const GENERATION_COLUMN: usize = 12;
/// The column of [`HEALTH_QUERY`] holding a primary's `pg_current_wal_flush_lsn()`.
const FLUSH_COLUMN: usize = 13;
/// How many columns [`HEALTH_QUERY`] returns.
pub(crate) const COLUMNS: usize = 14;

/// An open connection; its I/O task stops when the client is dropped (cleanly, with a
/// Terminate message) or is aborted by [`PgConn::kill`].
pub(crate) struct PgConn {
    client: Option<tokio_postgres::Client>,
    task: Option<JoinHandle<()>>,
    /// The unreadable `lifeboat.generation` last warned about (warn once per value and
    /// connection, not at every probe).
    warned_generation: Option<String>,
}

impl PgConn {
    /// Connects; the caller bounds the time.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        user: &str,
        dbname: &str,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<PgConn, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(user)
            .dbname(dbname)
            .application_name("lifeboat-health")
            .connect_timeout(timeout);
        if let Some(p) = password {
            cfg.password(p);
        }
        let (client, connection) = cfg.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "health probe connection ended");
            }
        });
        Ok(PgConn {
            client: Some(client),
            task: Some(task),
            warned_generation: None,
        })
    }

    /// Whether the connection is known to be broken.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }

    /// Runs the health query; the caller bounds the time.
    pub(crate) async fn query(&self) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
        match &self.client {
            Some(c) => c.simple_query(HEALTH_QUERY).await,
            // Unreachable in practice: the client is only taken in drop/kill.
            None => Ok(Vec::new()),
        }
    }

    /// Warns (once per value) when `lifeboat.generation` is set but is not a number.
    fn warn_bad_generation(&mut self, state: &PgState, messages: &[SimpleQueryMessage]) {
        if state.generation.is_some() {
            self.warned_generation = None;
            return;
        }
        let raw = first_row(messages)
            .and_then(|r| r.get(GENERATION_COLUMN))
            .map(str::trim)
            .filter(|g| !g.is_empty());
        if let Some(raw) = raw {
            if self.warned_generation.as_deref() != Some(raw) {
                tracing::warn!(
                    value = raw,
                    "lifeboat.generation is set but is not a number; probes report no generation"
                );
                self.warned_generation = Some(raw.to_string());
            }
        }
    }

    /// Drops the connection at once, without waiting for the server (after a timeout the
    /// server may never answer).
    pub(crate) fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Dropping the client makes the I/O task send Terminate and finish; give it a
        // moment in the background, then abort it so a wedged server cannot hold it.
        drop(self.client.take());
        if let Some(task) = self.task.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let abort = task.abort_handle();
                        if tokio::time::timeout(Duration::from_secs(1), task)
                            .await
                            .is_err()
                        {
                            abort.abort();
                        }
                    });
                }
                Err(_) => task.abort(),
            }
        }
    }
}

/// Connects when there is no usable connection, runs the health query, and reads it.
/// Everything happens before `deadline`. A connection that timed out or broke is dropped
/// so the next probe connects afresh; one that answered with an SQL error is kept.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn probe(
    conn: &mut Option<PgConn>,
    host: &str,
    port: u16,
    user: &str,
    dbname: &str,
    password: Option<&str>,
    timeout: Duration,
    deadline: Instant,
) -> Result<PgState, ProbeError> {
    if conn.as_ref().is_some_and(PgConn::is_closed) {
        *conn = None;
    }
    let c = match conn.take() {
        Some(c) => c,
        None => {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout_at(
                deadline,
                PgConn::connect(host, port, user, dbname, password, left),
            )
            .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(ProbeError::Connect {
                        detail: describe(&e),
                    })
                }
                Err(_) => {
                    return Err(ProbeError::Timeout {
                        stage: "connecting",
                        after: timeout,
                    })
                }
            }
        }
    };
    match timeout_at(deadline, c.query()).await {
        Ok(Ok(messages)) => {
            let mut c = c;
            let state = read_state(&messages);
            if let Ok(s) = &state {
                c.warn_bad_generation(s, &messages);
            }
            *conn = Some(c);
            state
        }
        Ok(Err(e)) => {
            let detail = describe(&e);
            if e.as_db_error().is_some() && !c.is_closed() {
                *conn = Some(c);
            } else {
                c.kill();
            }
            Err(ProbeError::Query { detail })
        }
        Err(_) => {
            c.kill();
            Err(ProbeError::Timeout {
                stage: "querying",
                after: timeout,
            })
        }
    }
}

/// A one-line description of a tokio-postgres error: the server's severity, code and
/// message, or the library's words and the cause beneath them (its `Display` alone says
/// only "db error" or "error connecting to server").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads the health query's one row.
fn read_state(messages: &[SimpleQueryMessage]) -> Result<PgState, ProbeError> {
    let row = first_row(messages).ok_or_else(|| answer("the health query returned no row"))?;
    let cols: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
    state_from_columns(&cols)
}

fn first_row(messages: &[SimpleQueryMessage]) -> Option<&SimpleQueryRow> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })
}

fn answer(detail: impl Into<String>) -> ProbeError {
    ProbeError::Answer {
        detail: detail.into(),
    }
}

/// Turns the health query's columns (as text, `None` for NULL) into a [`PgState`].
pub(crate) fn state_from_columns(cols: &[Option<&str>]) -> Result<PgState, ProbeError> {
    if cols.len() != COLUMNS {
        return Err(answer(format!(
            "the health query returned {} columns, expected {COLUMNS}",
            cols.len()
        )));
    }
    let col = |i: usize| cols[i].filter(|s| !s.is_empty());
    let lsn = |i: usize, name: &str| -> Result<Option<u64>, ProbeError> {
        col(i)
            .map(|t| parse_lsn(t).ok_or_else(|| answer(format!("{name} {t:?} is not an LSN"))))
            .transpose()
    };
    let in_recovery = match col(0) {
        Some("t") => true,
        Some("f") => false,
        other => return Err(answer(format!("pg_is_in_recovery() gave {other:?}"))),
    };
    let current_lsn = lsn(1, "pg_current_wal_lsn()")?;
    let flush_lsn = lsn(FLUSH_COLUMN, "pg_current_wal_flush_lsn()")?;
    let receive_lsn = lsn(2, "pg_last_wal_receive_lsn()")?;
    let replay_lsn = lsn(3, "pg_last_wal_replay_lsn()")?;
    let walfile_tli = col(4)
        .map(|t| {
            u32::from_str_radix(t, 16)
                .map_err(|_| answer(format!("WAL file timeline {t:?} is not hexadecimal")))
        })
        .transpose()?;
    let received_tli = col(8)
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| answer(format!("received_tli {t:?} is not a number")))
        })
        .transpose()?;
    let sender = match (col(6), col(7)) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (Some(h), None) => Some(h.to_string()),
        _ => None,
    };
    let replay_timestamp = col(9)
        .map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
                .ok_or_else(|| answer(format!("replay timestamp {t:?} is not a time")))
        })
        .transpose()?;
    let replication = match col(10) {
        None => Vec::new(),
        Some(json) => read_replication(json)?,
    };
    // A value that is not a number is reported as no generation; the caller warns once.
    let generation = col(GENERATION_COLUMN)
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .and_then(|g| g.parse::<u64>().ok());
    Ok(PgState {
        in_recovery,
        current_lsn,
        flush_lsn,
        receive_lsn,
        replay_lsn,
        timeline: if in_recovery {
            received_tli
        } else {
            walfile_tli
        },
        wal_receiver_streaming: col(5) == Some("streaming"),
        sender,
        replay_timestamp,
        replication,
        synchronous_standby_names: cols[11].unwrap_or_default().to_string(),
        generation,
    })
}

/// Reads the `pg_stat_replication` rows, aggregated by the query as a JSON array of
/// `[application_name, state, sync_state, flush_lsn, replay_lsn]`.
fn read_replication(json: &str) -> Result<Vec<ReplicationRow>, ProbeError> {
    type Raw = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let raw: Vec<Raw> =
        serde_json::from_str(json).map_err(|e| answer(format!("pg_stat_replication rows: {e}")))?;
    raw.into_iter()
        .map(|(app, state, sync, flush, replay)| {
            let lsn = |v: Option<String>| -> Result<Option<u64>, ProbeError> {
                v.map(|t| parse_lsn(&t).ok_or_else(|| answer(format!("{t:?} is not an LSN"))))
                    .transpose()
            };
            Ok(ReplicationRow {
                application_name: app.unwrap_or_default(),
                state: state.unwrap_or_default(),
                sync_state: sync.unwrap_or_default(),
                flush_lsn: lsn(flush)?,
                replay_lsn: lsn(replay)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> Vec<Option<&'static str>> {
        vec![
            Some("f"),
            Some("0/3000148"),
            None,
            None,
            Some("00000002"),
            None,
            None,
            None,
            None,
            None,
            Some(r#"[["walreceiver", "streaming", "sync", "0/3000148", "0/3000060"]]"#),
            Some("walreceiver"),
            Some("7"),
            Some("0/3000148"),
        ]
    }

    #[test]
    fn reads_a_primary() {
        let s = state_from_columns(&primary()).unwrap();
        assert!(!s.in_recovery);
        assert_eq!(s.current_lsn, Some(0x300_0148));
        assert_eq!(s.timeline, Some(2));
        assert_eq!(s.generation, Some(7));
        assert_eq!(
            s.replication,
            [ReplicationRow {
                application_name: "walreceiver".into(),
                state: "streaming".into(),
                sync_state: "sync".into(),
                flush_lsn: Some(0x300_0148),
                replay_lsn: Some(0x300_0060),
            }]
        );
        assert_eq!(s.synchronous_standby_names, "walreceiver");
    }

    #[test]
    fn reads_a_standby() {
        let cols = vec![
            Some("t"),
            None,
            Some("0/5000000"),
            Some("0/4FFFFF0"),
            None,
            Some("streaming"),
            Some("/tmp/sock"),
            Some("5433"),
            Some("1"),
            Some("1764493612.5"),
            Some("[]"),
            Some(""),
            None,
            None,
        ];
        let s = state_from_columns(&cols).unwrap();
        assert!(s.in_recovery && s.wal_receiver_streaming);
        assert_eq!(s.current_lsn, None);
        assert_eq!(s.receive_lsn, Some(0x500_0000));
        assert_eq!(s.timeline, Some(1));
        assert_eq!(s.sender.as_deref(), Some("/tmp/sock:5433"));
        assert_eq!(
            s.replay_timestamp,
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(1_764_493_612_500))
        );
        assert!(s.replication.is_empty());
        assert_eq!(s.generation, None);
    }

    #[test]
    fn garbage_is_an_answer_error_not_a_panic() {
        for (i, bad) in [
            (0, "maybe"),
            (1, "nope"),
            (4, "zz"),
            (8, "-1"),
            (9, "NaN"),
            (10, "{"),
        ] {
            let mut cols = primary();
            cols[i] = Some(bad);
            assert!(
                matches!(state_from_columns(&cols), Err(ProbeError::Answer { .. })),
                "column {i} = {bad:?}"
            );
        }
        assert!(state_from_columns(&primary()[..5]).is_err());
    }

    #[test]
    fn a_generation_that_is_not_a_number_is_none() {
        let mut cols = primary();
        cols[12] = Some("seven");
        assert_eq!(state_from_columns(&cols).unwrap().generation, None);
    }
}
