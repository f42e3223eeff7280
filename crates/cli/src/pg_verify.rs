//! `lifeboat pg verify`: the restore test. Parse, call `lifeboat_postgres::verify`, render
//! the report as text or `--json`, pick the exit code. Never here: PostgreSQL logic
//! (`lifeboat_postgres::verify`), or the repository password in any output or argument.

use std::sync::Arc;

use anyhow::{Context, Result};

use lifeboat_postgres::restore::RecoveryTarget;
use lifeboat_postgres::verify::{verify, VerifyOptions, VerifyReport, PG_BIN_ENV};
use lifeboat_sources::restore::RestoreOptions;
use lifeboat_sources::Progress;
use lifeboat_types::Secret;

use crate::cli::{Global, PgVerifyCmd};
use crate::commands::{open, progress_enabled};
use crate::output::{json, line, time};
use crate::pg::restore_command;
use crate::progress::Bar;
use crate::{EXIT_DAMAGE, EXIT_OK};

/// Rows of a query result shown in text output (`--json` has up to
/// `lifeboat_postgres::verify::MAX_ROWS`).
const TEXT_ROWS: usize = 20;

/// Runs `pg verify`: exit 0 when the backup restored, recovered and every query succeeded,
/// 1 when any of that failed.
pub fn run(g: &Global, c: PgVerifyCmd) -> Result<u8> {
    c.timeout.warn_if_plain("--timeout");
    let (target, timeline) = crate::pg::recovery_point(&c.point)?;
    let repo = open(g)?;
    let (restore_command, warning) = restore_command(g, &c.source.source)?;
    // Without a password file the server's restore_command reads the password from its
    // environment: hand it LIFEBOAT_PASSWORD (open() succeeded, so it is set).
    let mut server_env = Vec::new();
    if warning.is_some() {
        if let Ok(pw) = std::env::var("LIFEBOAT_PASSWORD") {
            server_env.push(("LIFEBOAT_PASSWORD".to_string(), Secret::new(pw)));
        }
    }
    let scratch = match &c.scratch {
        Some(s) => {
            Some(std::path::absolute(s).with_context(|| format!("resolve {}", s.display()))?)
        }
        None => None,
    };
    let opts = VerifyOptions {
        source: c.source.source.clone(),
        target,
        timeline,
        queries: c.sql.clone(),
        dbname: c.dbname.clone(),
        scratch,
        timeout: c.timeout.value,
        keep: c.keep,
        backup: c.backup.clone(),
        restore_command,
        server_env,
        bin_dir: std::env::var_os(PG_BIN_ENV)
            .filter(|v| !v.is_empty())
            .map(Into::into),
        files: RestoreOptions::default(),
    };
    let progress = Arc::new(Progress::default());
    let report = {
        let _bar = Bar::start(progress.clone(), "pg verify", progress_enabled(g));
        verify(&repo, &opts, &progress)
    }
    .context("pg verify")?;

    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(f) = &report.failure {
        eprintln!("error: {}", f.message);
        if !g.json {
            for l in &f.log_tail {
                eprintln!("  | {l}");
            }
        }
    }
    for (i, q) in report.queries.iter().enumerate() {
        if let Some(e) = &q.error {
            eprintln!("error: query {} failed: {e}", i + 1);
        }
    }
    if g.json {
        json(&report)?;
    } else if !g.quiet {
        render(&report)?;
    }
    Ok(if report.ok { EXIT_OK } else { EXIT_DAMAGE })
}

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// The text summary.
fn render(r: &VerifyReport) -> Result<()> {
    line(&format!(
        "pg verify {}: {}",
        r.source,
        if r.ok { "OK" } else { "FAILED" }
    ))?;
    if let Some(b) = &r.backup {
        line(&format!(
            "  base backup {}: stopped {} at {} (timeline {})",
            b.snapshot_id.short(),
            time(&b.stop_time),
            b.stop_lsn,
            b.timeline
        ))?;
    }
    match &r.failure {
        Some(f) => line(&format!("  failed: {}", f.message))?,
        None => {
            let state = match r.recovery_state.as_deref() {
                Some("paused") => "paused at",
                _ => "recovered to",
            };
            let end = r.end_lsn.map_or_else(|| "?".to_string(), |l| l.to_string());
            line(&format!("  {state} {}: WAL replayed to {end}", r.target))?;
            match (&r.newest_commit, r.rpo_seconds) {
                (Some(t), Some(rpo)) => line(&format!(
                    "  newest commit: {} ({} before {})",
                    time(t),
                    secs(rpo),
                    match r.target {
                        RecoveryTarget::Latest => "recovery finished",
                        _ => "the target",
                    }
                ))?,
                (Some(t), None) => line(&format!("  newest commit: {}", time(t)))?,
                (None, _) => line(
                    "  newest commit: none replayed (no transaction committed after the base \
                     backup reached the repository)",
                )?,
            }
        }
    }
    line(&format!(
        "  took {} (restore {}, recovery {})",
        secs(r.total_seconds),
        secs(r.restore_seconds),
        r.recovery_seconds.map_or_else(|| "-".to_string(), secs)
    ))?;
    for (i, q) in r.queries.iter().enumerate() {
        match &q.error {
            Some(e) => line(&format!("  query {} FAILED: {}\n    {e}", i + 1, q.sql))?,
            None => {
                line(&format!(
                    "  query {} ok ({} row{}, {:.3} s): {}",
                    i + 1,
                    q.row_count,
                    if q.row_count == 1 { "" } else { "s" },
                    q.duration_seconds,
                    q.sql
                ))?;
                if !q.columns.is_empty() && q.row_count > 0 {
                    line(&format!("    {}", q.columns.join(" | ")))?;
                }
                for row in q.rows.iter().take(TEXT_ROWS) {
                    let cells: Vec<&str> =
                        row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                    line(&format!("    {}", cells.join(" | ")))?;
                }
                if q.row_count > TEXT_ROWS as u64 {
                    line(&format!(
                        "    … {} more (--json shows up to {})",
                        q.row_count - TEXT_ROWS as u64,
                        lifeboat_postgres::verify::MAX_ROWS
                    ))?;
                }
            }
        }
    }
    if r.kept {
        line(&format!("  kept {} (the server is stopped)", r.scratch))?;
    }
    Ok(())
}
