//! `lifeboat pg …`: PostgreSQL commands. Parse, call `lifeboat-postgres`, render, pick the
//! exit code. Never here: PostgreSQL logic, or a password in any output (connection strings
//! are shown as host:port only).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use lifeboat_postgres::archive::{wal_fetch, wal_push, FetchOutcome};
use lifeboat_postgres::backup::{base_backup, PgBackupOptions};
use lifeboat_postgres::catalog::listing;
use lifeboat_postgres::restore::{
    parse_restore_point, parse_time, parse_timeline, parse_xid, pg_restore, Archiving,
    PgRestoreOptions, RecoveryTarget, TargetAction,
};
use lifeboat_postgres::spool;
use lifeboat_postgres::stream::{stream, StreamOptions, StreamStatus};
use lifeboat_repo::wal::PutOutcome;
use lifeboat_sources::backup::BackupOptions;
use lifeboat_sources::restore::RestoreOptions;
use lifeboat_sources::Progress;
use lifeboat_types::Lsn;

use crate::cli::{Global, PgCmd};
use crate::commands::{location, open, progress_enabled, usage};
use crate::output::{bytes, json, line, time};
use crate::progress::Bar;
use crate::{EXIT_DAMAGE, EXIT_OK};

/// The environment variable `--dsn` falls back to.
const DSN_ENV: &str = "LIFEBOAT_PG_DSN";

/// Warns when `--dsn` was given on the command line with a password in it: every user of
/// the host can read a command line (`ps`), not another user's environment. Never echoes
/// the connection string.
fn warn_password_on_command_line(dsn: &str) {
    let from_env = std::env::var(DSN_ENV).is_ok_and(|v| v == dsn);
    if !from_env && lifeboat_postgres::backup::dsn_has_password(dsn) {
        eprintln!(
            "warning: the --dsn given on the command line holds a password, which every user \
             of this host can read (ps, /proc/PID/cmdline); set {DSN_ENV} instead and leave \
             --dsn out, or connect without a password (peer or cert authentication)"
        );
    }
}

/// Exit code of `pg wal-fetch` for anything but "not found": PostgreSQL treats exit codes
/// above 125 as fatal and stops recovery, where any lower code would make it take the
/// archive to end there — silently skipping the rest of the WAL.
pub const EXIT_FETCH_FATAL: u8 = 126;

/// Runs a `pg` command.
pub fn run(g: &Global, cmd: PgCmd) -> Result<u8> {
    match cmd {
        PgCmd::WalPush(c) if c.r#async => {
            let spool = c
                .spool
                .clone()
                .ok_or_else(|| usage("--async needs --spool", None))?;
            let source = c.source.source.clone();
            let log = spool::archive_dir(&spool, &source).join("pusher.log");
            let workers = c.workers.to_string();
            spool::push_async(&spool, &source, &c.path, &mut |pg_wal| {
                spawn_background(
                    g,
                    &[
                        "pg".as_ref(),
                        "archive-pusher".as_ref(),
                        "--source".as_ref(),
                        source.as_ref(),
                        "--pg-wal".as_ref(),
                        pg_wal.as_os_str(),
                        "--spool".as_ref(),
                        spool.as_os_str(),
                        "--workers".as_ref(),
                        workers.as_ref(),
                    ],
                    &log,
                )
                .map_err(|e| lifeboat_postgres::Error::Invalid(format!("{e:#}")))
            })
            .with_context(|| format!("pg wal-push --async {}", c.path.display()))?;
            Ok(EXIT_OK)
        }
        PgCmd::ArchivePusher(c) => {
            let repo = open(g)?;
            spool::pusher(&repo, &c.source.source, &c.pg_wal, &c.spool, c.workers)
                .context("pg archive-pusher")?;
            Ok(EXIT_OK)
        }
        PgCmd::WalPrefetcher(c) => {
            let repo = open(g)?;
            let size = lifeboat_postgres::walname::SegmentSize::new(c.segment_size)
                .ok_or_else(|| usage("--segment-size is not a WAL segment size", None))?;
            spool::prefetcher(&repo, &c.source.source, &c.spool, size, c.ahead, 2)
                .context("pg wal-prefetcher")?;
            Ok(EXIT_OK)
        }
        PgCmd::WalPush(c) => {
            let repo = open(g)?;
            let r = wal_push(&repo, &c.source.source, &c.path)
                .with_context(|| format!("pg wal-push {}", c.path.display()))?;
            if g.json {
                json(&r)?;
            } else if g.verbose > 0 {
                let what = match r.outcome {
                    PutOutcome::Stored { stored_bytes } => {
                        format!("stored ({} in the repository)", bytes(stored_bytes))
                    }
                    PutOutcome::AlreadyStored => "already in the repository".into(),
                };
                eprintln!(
                    "{}: {} {what} in {:.3}s",
                    r.name,
                    bytes(r.bytes),
                    r.duration_seconds
                );
            }
            Ok(EXIT_OK)
        }
        PgCmd::WalFetch(c) => {
            // Prefetched already? Then no repository access at all.
            if let (Some(sp), true) = (&c.spool, c.prefetch > 0) {
                match prefetch_answer(g, sp, &c.source.source, &c.name, &c.dest, c.prefetch) {
                    Ok(true) => return Ok(EXIT_OK),
                    Ok(false) => {}
                    Err(e) => {
                        // The spool is only a cache: fetch directly.
                        tracing::warn!("prefetch spool: {e:#}");
                    }
                }
            }
            // Every failure but "not found" must stop recovery (see EXIT_FETCH_FATAL).
            let fetched = open(g).and_then(|repo| {
                wal_fetch(&repo, &c.source.source, &c.name, &c.dest)
                    .with_context(|| format!("pg wal-fetch {}", c.name))
            });
            match fetched {
                Ok(FetchOutcome::Fetched { bytes: n }) => {
                    if g.json {
                        json(&serde_json::json!({"name": c.name, "fetched": true, "bytes": n}))?;
                    }
                    Ok(EXIT_OK)
                }
                Ok(FetchOutcome::NotFound) => {
                    if g.json {
                        json(&serde_json::json!({"name": c.name, "fetched": false}))?;
                    }
                    Ok(1)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    eprintln!(
                        "hint: recovery stops here instead of skipping WAL; fix the cause and start the server again"
                    );
                    Ok(EXIT_FETCH_FATAL)
                }
            }
        }
        PgCmd::Backup(c) => {
            warn_password_on_command_line(&c.dsn);
            c.wal_wait.warn_if_plain("--wal-wait");
            let repo = open(g)?;
            let opts = PgBackupOptions {
                source: c.source.source.clone(),
                dsn: c.dsn.clone(),
                pgdata: c.pgdata.clone(),
                tags: c.tags.clone(),
                wal_wait: c.wal_wait.value,
                files: BackupOptions {
                    readers: 2,
                    ..BackupOptions::default()
                },
            };
            let progress = Arc::new(Progress::default());
            let report = {
                let _bar = Bar::start(progress.clone(), "pg backup", progress_enabled(g));
                base_backup(&repo, &opts, &progress)
            }
            .context("pg backup")?;
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                let s = &report.files.summary;
                let p = &report.postgres;
                line(&format!(
                    "base backup {} of {} saved\n  WAL {} .. {} on timeline {}\n  data: {} in {} files, {} added ({} stored)\n  took {:.2}s",
                    report.files.snapshot_id.short(),
                    p.source,
                    p.start_lsn,
                    p.stop_lsn,
                    p.timeline,
                    bytes(s.bytes),
                    s.files,
                    bytes(s.added_bytes),
                    bytes(s.stored_bytes),
                    s.duration_seconds
                ))?;
            }
            Ok(EXIT_OK)
        }
        PgCmd::Restore(c) => {
            // Arguments first: a mistyped target is a usage error before anything is opened.
            let (target, timeline) = recovery_point(&c.point)?;
            let action = match c.target_action.as_str() {
                "pause" => TargetAction::Pause,
                "shutdown" => TargetAction::Shutdown,
                _ => TargetAction::Promote,
            };
            let repo = open(g)?;
            let target_dir = std::path::absolute(&c.target)
                .with_context(|| format!("resolve {}", c.target.display()))?;
            let (restore_command, warning) = restore_command_with(
                g,
                &c.source.source,
                (c.prefetch > 0).then(|| (c.prefetch, target_dir.join("lifeboat-spool"))),
            )?;
            let archiving = if c.promote_as_source {
                Archiving::AsSource
            } else if let Some(to) = &c.archive_to {
                if *to == c.source.source {
                    return Err(usage(
                        format!(
                            "--archive-to {to}: that is the source restored from; pass \
                             --promote-as-source if this cluster is the new production"
                        ),
                        None,
                    ));
                }
                lifeboat_repo::wal::validate_source(to)
                    .map_err(|e| usage(format!("--archive-to: {e}"), None))?;
                Archiving::ToSource {
                    source: to.clone(),
                    archive_command: archive_command_for(g, to)?,
                }
            } else {
                Archiving::Off
            };
            let port = match c.port.as_deref() {
                None => None,
                Some("auto") => Some(lifeboat_postgres::verify::free_port()?),
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    usage(
                        format!("--port {p:?} is not a port"),
                        Some("give a number from 1 to 65535, or `auto` for a free one"),
                    )
                })?),
            };
            let opts = PgRestoreOptions {
                source: c.source.source.clone(),
                target_dir,
                target,
                timeline,
                action,
                delta: c.delta,
                backup: c.backup.clone(),
                restore_command,
                archiving,
                durable: true,
                extra_settings: port.map(|p| format!("port = {p}")).into_iter().collect(),
                files: RestoreOptions::default(),
            };
            let progress = Arc::new(Progress::default());
            let report = {
                let _bar = Bar::start(progress.clone(), "pg restore", progress_enabled(g));
                pg_restore(&repo, &opts, &progress)
            }
            .context("pg restore")?;
            if let Some(w) = &warning {
                eprintln!("warning: {w}");
            }
            for e in &report.files.errors {
                eprintln!("error: {}: {}", e.path, e.message);
            }
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                line(&format!(
                    "restored base backup {} ({} .. {}, timeline {}) into {}\n  files: {} written, {} kept, {} removed; {}\n  recovery target: {}\n  WAL in the repository reaches {}\n  archiving: {}\nstart PostgreSQL on {}{} to recover",
                    report.backup.snapshot_id.short(),
                    report.backup.info.start_lsn,
                    report.backup.info.stop_lsn,
                    report.backup.info.timeline,
                    opts.target_dir.display(),
                    report.files.files,
                    report.files.files_kept,
                    report.files.removed,
                    bytes(report.files.bytes),
                    report.target,
                    report
                        .wal_available_to
                        .map_or("(nothing past the backup)".to_string(), |l| l.to_string()),
                    report.archiving,
                    opts.target_dir.display(),
                    port.map_or(String::new(), |p| format!(" (port {p})")),
                ))?;
            }
            if report.files.errors.is_empty() {
                Ok(EXIT_OK)
            } else {
                eprintln!("error: the restore is incomplete: do not start this cluster");
                Ok(EXIT_DAMAGE)
            }
        }
        PgCmd::Verify(c) => crate::pg_verify::run(g, c),
        PgCmd::Stream(c) if c.drop_slot => {
            warn_password_on_command_line(&c.dsn);
            let mut opts = StreamOptions::new(&c.source.source, &c.dsn);
            opts.slot = c.slot.clone();
            let name = opts.slot_name();
            let dropped = lifeboat_postgres::slots::drop_slot(&c.dsn, &name)?;
            if !g.quiet {
                line(&if dropped {
                    format!("dropped replication slot {name}: the server can recycle the WAL it held back")
                } else {
                    format!("no replication slot {name}: nothing to drop")
                })?;
            }
            Ok(EXIT_OK)
        }
        PgCmd::Slots(c) => {
            warn_password_on_command_line(&c.dsn);
            let slots = lifeboat_postgres::slots::list(&c.dsn)?;
            let limit = c.max_retained.0;
            if g.json {
                json(&serde_json::json!({ "slots": slots }))?;
            } else if !g.quiet {
                line(&format!(
                    "{:<32}  {:<8}  {:<6}  {:<14}  {:>12}",
                    "slot", "kind", "active", "restart_lsn", "WAL held"
                ))?;
                for s in &slots {
                    line(&format!(
                        "{:<32}  {:<8}  {:<6}  {:<14}  {:>12}",
                        s.slot,
                        s.kind,
                        if s.active { "yes" } else { "no" },
                        s.restart_lsn.as_deref().unwrap_or("-"),
                        s.retained_bytes.map_or("-".into(), bytes)
                    ))?;
                }
            }
            let piling: Vec<_> = slots.iter().filter(|s| s.piling_up(limit)).collect();
            for s in &piling {
                eprintln!(
                    "warning: replication slot {} is unused and holds back {} of WAL (more than {}): \
                     the server keeps it on disk until the slot is read or dropped (fix: restart the \
                     `pg stream` that uses it, or drop it with `lifeboat pg stream --source SOURCE \
                     --dsn … --drop-slot` / `select pg_drop_replication_slot('{}')`)",
                    s.slot,
                    bytes(s.retained_bytes.unwrap_or(0)),
                    bytes(limit),
                    s.slot
                );
            }
            Ok(if piling.is_empty() {
                EXIT_OK
            } else {
                EXIT_DAMAGE
            })
        }
        PgCmd::Stream(c) => {
            warn_password_on_command_line(&c.dsn);
            let repo = open(g)?;
            let mut opts = StreamOptions::new(&c.source.source, &c.dsn);
            opts.slot = c.slot.clone();
            opts.no_slot = c.no_slot;
            opts.flush_interval = match c.flush_interval_ms {
                Some(ms) => {
                    eprintln!(
                        "warning: --flush-interval-ms is deprecated (fix: write --flush-interval {ms}ms)"
                    );
                    Duration::from_millis(ms)
                }
                None => c.flush_interval,
            };
            opts.synchronous = c.synchronous;
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, opts.stop.clone())
                    .context("install signal handlers")?;
            }
            let verbose = g.verbose > 0;
            let mut say = |st: StreamStatus| {
                if g.json {
                    // One JSON document per line (a stream of events).
                    if let Ok(text) = serde_json::to_string(&crate::output::Versioned::new(&st)) {
                        println!("{text}");
                    }
                    return;
                }
                match &st {
                    StreamStatus::Flushed { .. } if !verbose => {}
                    StreamStatus::Segment { .. } if !verbose => {}
                    StreamStatus::Streaming {
                        server,
                        timeline,
                        start,
                    } => {
                        eprintln!("streaming from {server}: timeline {timeline} from {start}")
                    }
                    StreamStatus::Flushed { lsn } => eprintln!("durable to {lsn}"),
                    StreamStatus::Segment { name } => eprintln!("segment {name} stored"),
                    StreamStatus::Timeline { timeline, start } => {
                        eprintln!("timeline switch: now {timeline} from {start}")
                    }
                    StreamStatus::Disconnected {
                        error,
                        retry_in_seconds,
                    } => {
                        eprintln!("warning: {error}; reconnecting in {retry_in_seconds:.1} s")
                    }
                    StreamStatus::Gap { from, to } => eprintln!(
                        "error: WAL from {from} to {to} was removed from the server before it \
                         was received: restores cannot cross this gap; take a new base backup"
                    ),
                }
            };
            stream(&repo, &opts, &mut say).context("pg stream")?;
            Ok(EXIT_OK)
        }
        PgCmd::Sources(_) => {
            let repo = open(g)?;
            let all = lifeboat_postgres::catalog::sources(&repo)?;
            if g.json {
                json(&serde_json::json!({ "sources": all }))?;
            } else if !g.quiet {
                line(&format!(
                    "{:<20}  {:>12}  {:<20}  {:>11}",
                    "source", "base backups", "newest backup (UTC)", "WAL objects"
                ))?;
                for s in &all {
                    line(&format!(
                        "{:<20}  {:>12}  {:<20}  {:>11}",
                        s.source,
                        s.base_backups,
                        s.newest_backup.as_deref().map_or("-".into(), time),
                        s.wal_objects
                    ))?;
                }
                line(&format!("{} source(s)", all.len()))?;
            }
            Ok(EXIT_OK)
        }
        PgCmd::Backups(c) => {
            let repo = open(g)?;
            lifeboat_postgres::catalog::require_source(&repo, &c.source.source)?;
            let l = listing(&repo, &c.source.source)?;
            if g.json {
                json(&l)?;
                return Ok(EXIT_OK);
            }
            if g.quiet {
                return Ok(EXIT_OK);
            }
            line(&format!(
                "source {}: {} base backup(s)",
                l.source,
                l.backups.len()
            ))?;
            for b in &l.backups {
                line(&format!(
                    "  {}  {}  tl {}  {} .. {}  {} (added {})",
                    b.snapshot_id.short(),
                    time(&b.info.stop_time),
                    b.info.timeline,
                    b.info.start_lsn,
                    b.info.stop_lsn,
                    bytes(b.bytes),
                    bytes(b.stored_bytes)
                ))?;
            }
            line(&format!(
                "WAL ({} in the repository):",
                bytes(l.wal_stored_bytes)
            ))?;
            for w in &l.wal {
                line(&format!(
                    "  timeline {}: {} .. {} ({} segments{})",
                    w.timeline,
                    w.start,
                    w.end,
                    w.segments,
                    if w.complete {
                        ""
                    } else {
                        ", last one streamed in part"
                    }
                ))?;
            }
            for gap in &l.gaps {
                line(&format!(
                    "  GAP on timeline {}: {} missing; WAL stops at {} and resumes at {} — restores cannot pass {}",
                    gap.timeline, gap.first_missing, gap.from, gap.to, gap.from
                ))?;
            }
            Ok(EXIT_OK)
        }
    }
}

/// The `restore_command` for a restored cluster: this binary, the repository, and the
/// password file when there is one. A password given only through LIFEBOAT_PASSWORD is
/// never written into the configuration: the warning says the server needs it instead.
pub(crate) fn restore_command(g: &Global, source: &str) -> Result<(String, Option<String>)> {
    restore_command_with(g, source, None)
}

/// Like [`restore_command`], with WAL prefetch (`ahead` segments into `spool`).
pub(crate) fn restore_command_with(
    g: &Global,
    source: &str,
    prefetch: Option<(usize, std::path::PathBuf)>,
) -> Result<(String, Option<String>)> {
    let exe = std::env::current_exe().context("find the lifeboat binary")?;
    // PostgreSQL runs restore_command in the data directory: a relative repository path
    // would point somewhere else there.
    let repo = match location(g.repo.as_deref())? {
        lifeboat_storage::Location::Local(p) => lifeboat_storage::Location::Local(
            std::path::absolute(&p).with_context(|| format!("resolve {}", p.display()))?,
        ),
        other => other,
    }
    .to_string();
    let q = shell_quote;
    let mut cmd = format!(
        "{} pg wal-fetch --source {} --repo {}",
        q(&exe.display().to_string()),
        q(source),
        q(&repo)
    );
    let mut warning = None;
    match &g.password_file {
        Some(f) => {
            let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            cmd.push_str(&format!(
                " --password-file {}",
                q(&abs.display().to_string())
            ));
        }
        None => {
            warning = Some(
                "the password came from LIFEBOAT_PASSWORD, which restore_command cannot carry: \
                 start PostgreSQL with LIFEBOAT_PASSWORD or LIFEBOAT_PASSWORD_FILE in its \
                 environment (or restore with --password-file)"
                    .to_string(),
            );
        }
    }
    if let Some((ahead, spool)) = prefetch {
        cmd.push_str(&format!(
            " --prefetch {ahead} --spool {}",
            q(&spool.display().to_string())
        ));
    }
    cmd.push_str(" %f %p");
    Ok((cmd, warning))
}

/// The `archive_command` that pushes a restored cluster's WAL into `source` of the same
/// repository (`pg restore --archive-to`), with the password file when one was given.
fn archive_command_for(g: &Global, source: &str) -> Result<String> {
    let exe = std::env::current_exe().context("find the lifeboat binary")?;
    // PostgreSQL runs restore_command in the data directory: a relative repository path
    // would point somewhere else there.
    let repo = match location(g.repo.as_deref())? {
        lifeboat_storage::Location::Local(p) => lifeboat_storage::Location::Local(
            std::path::absolute(&p).with_context(|| format!("resolve {}", p.display()))?,
        ),
        other => other,
    }
    .to_string();
    let q = shell_quote;
    let mut cmd = format!(
        "{} pg wal-push --source {} --repo {}",
        q(&exe.display().to_string()),
        q(source),
        q(&repo)
    );
    if let Some(f) = &g.password_file {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        cmd.push_str(&format!(
            " --password-file {}",
            q(&abs.display().to_string())
        ));
    }
    cmd.push_str(" %p");
    Ok(cmd)
}

/// The spool side of `wal-fetch --prefetch`: `true` when the segment was there (and is now
/// at `dest`); otherwise records what recovery wants and starts a prefetcher if none runs.
fn prefetch_answer(
    g: &Global,
    spool_dir: &std::path::Path,
    source: &str,
    name: &str,
    dest: &std::path::Path,
    ahead: usize,
) -> Result<bool> {
    if spool::fetch_spooled(spool_dir, source, name, dest)? {
        return Ok(true);
    }
    spool::note_wanted(spool_dir, source, name)?;
    if !spool::prefetcher_running(spool_dir, source)? {
        let log = spool::fetch_dir(spool_dir, source).join("prefetcher.log");
        let ahead = ahead.to_string();
        spawn_background(
            g,
            &[
                "pg".as_ref(),
                "wal-prefetcher".as_ref(),
                "--source".as_ref(),
                source.as_ref(),
                "--spool".as_ref(),
                spool_dir.as_os_str(),
                "--ahead".as_ref(),
                ahead.as_ref(),
            ],
            &log,
        )?;
    }
    Ok(false)
}

/// Starts this binary with `args` in the background, detached from PostgreSQL's process
/// group, with the same repository and password file, logging to `log`.
fn spawn_background(g: &Global, args: &[&std::ffi::OsStr], log: &std::path::Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the lifeboat binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(r) = &g.repo {
        cmd.arg("--repo").arg(r);
    }
    if let Some(p) = &g.password_file {
        cmd.arg("--password-file")
            .arg(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .process_group(0);
    cmd.spawn()
        .with_context(|| format!("start {}", show_args(args)))?;
    Ok(())
}

fn show_args(args: &[&std::ffi::OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes for `sh -c` (single quotes; PostgreSQL runs restore_command through the shell).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The recovery target and timeline of `pg restore` and `pg verify` (one parser for both):
/// a mistyped value is a usage error naming the flag, before anything is opened.
pub(crate) fn recovery_point(
    point: &crate::cli::RecoveryPoint,
) -> Result<(RecoveryTarget, Option<String>)> {
    let p = &point.target;
    let target = if let Some(t) = &p.to_time {
        RecoveryTarget::Time(parse_time(t)?)
    } else if let Some(l) = &p.to_lsn {
        RecoveryTarget::Lsn(
            l.parse::<Lsn>()
                .map_err(|e| usage(format!("--to-lsn: {e}"), None))?,
        )
    } else if let Some(x) = &p.to_xid {
        RecoveryTarget::Xid(parse_xid(x)?)
    } else if let Some(n) = &p.to_name {
        RecoveryTarget::Name(parse_restore_point(n)?)
    } else if p.immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    };
    let timeline = point.timeline.as_deref().map(parse_timeline).transpose()?;
    Ok((target, timeline))
}
