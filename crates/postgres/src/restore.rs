//! Point-in-time restore: a base backup's files into a data directory, plus what PostgreSQL
//! needs to recover from there to the chosen point (`backup_label`, `recovery.signal`,
//! `restore_command` and the recovery target in `postgresql.auto.conf`).
//!
//! Lives here: [`pg_restore`], [`RecoveryTarget`], [`Archiving`], choosing the base backup
//! for a target, checking that the WAL the restore needs is in the repository, and making
//! the result durable. Never here: starting PostgreSQL (the user does, or `verify`), or
//! fetching WAL (PostgreSQL calls `restore_command`, which is `archive::wal_fetch`).
//!
//! A restored cluster must never write into the source it came from unless the operator
//! says it is the new production ([`Archiving::AsSource`]): by default it archives nowhere,
//! streams from no primary and waits for no synchronous standby (docs/postgres.md).
//!
//! # Crash safety
//! Every restored file and directory is durable (one `syncfs` per filesystem the data
//! directory spans) before `backup_label` is written, and the recovery files are fsynced
//! with their directory before [`pg_restore`] returns: a crash at any point leaves either
//! a directory without `backup_label` (which PostgreSQL refuses to recover as a backup) or
//! a complete one — never a durable `backup_label` over missing relation files.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use lifeboat_repo::Repository;
use lifeboat_sources::restore::{restore, Existing, RestoreOptions, RestoreReport, Selection};
use lifeboat_sources::Progress;
use lifeboat_types::Lsn;

use crate::catalog::{base_backups, BaseBackup, WalCatalog};
use crate::error::{Error, Result};
use crate::walname::{Segment, SegmentSize};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// Replay all WAL in the repository.
    Latest,
    /// Stop at the end of the base backup (the earliest consistent point).
    Immediate,
    /// Stop before the first commit after this time (`recovery_target_time`).
    Time(jiff::Timestamp),
    /// Stop at this WAL position (`recovery_target_lsn`).
    Lsn(Lsn),
    /// Stop after this transaction id commits (`recovery_target_xid`).
    Xid(String),
    /// Stop at this restore point (`pg_create_restore_point`, `recovery_target_name`).
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("the latest WAL in the repository"),
            RecoveryTarget::Immediate => f.write_str("the end of the base backup"),
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// Parses a recovery target time: RFC 3339 (`2026-11-30T14:03:27.5+01:00`), or
/// PostgreSQL's `2026-11-30 14:03:27.5+01` style. A time without an offset is refused: the
/// server would read it in its own `timezone`, which may not be the user's.
///
/// # Errors
/// [`Error::Invalid`] with an example.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    // PostgreSQL style: space instead of T, offsets like +01 or +0100 or +01:00. The offset
    // is rewritten only when it is all ASCII digits, so nothing here slices a string inside
    // a character (issue 9: `+1é1` panicked).
    let mut s = t.replacen(' ', "T", 1);
    if let Some(pos) = s.rfind(['+', '-']).filter(|p| *p > 10) {
        let (head, off) = s.split_at(pos + 1);
        if off.bytes().all(|b| b.is_ascii_digit()) {
            let norm = match off.len() {
                2 => format!("{off}:00"),
                4 => format!("{}:{}", &off[..2], &off[2..]),
                _ => off.to_string(),
            };
            s = format!("{head}{norm}");
        }
    }
    s.parse::<jiff::Timestamp>().map_err(|_| {
        Error::Invalid(format!(
            "--to-time {:?}: give a time with its UTC offset, e.g. '2026-11-30 14:03:27+00' \
             or 2026-11-30T14:03:27.250+01:00",
            shorten(text)
        ))
    })
}

/// At most 80 characters of a user's text, for a message.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Checks a `--to-xid` value: a transaction id as PostgreSQL prints it (decimal digits,
/// e.g. `7382`; a 64-bit id with its epoch is also a number). Returns it trimmed.
///
/// # Errors
/// [`Error::Invalid`] naming the flag and the format.
pub fn parse_xid(text: &str) -> Result<String> {
    let t = text.trim();
    if !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = t.parse::<u64>() {
            if n > 0 {
                return Ok(n.to_string());
            }
        }
    }
    Err(Error::Invalid(format!(
        "--to-xid {:?}: give a transaction id, a positive whole number such as 7382 \
         (SELECT pg_current_xact_id() shows the current one)",
        shorten(text)
    )))
}

/// Checks a `--to-name` value: a restore point name as `pg_create_restore_point` takes it,
/// 1 to 63 bytes, no control characters (a line break would end the setting in
/// `postgresql.auto.conf`).
///
/// # Errors
/// [`Error::Invalid`] naming the flag and the limits.
pub fn parse_restore_point(text: &str) -> Result<String> {
    if !text.is_empty() && text.len() <= 63 && !text.chars().any(char::is_control) {
        return Ok(text.to_string());
    }
    Err(Error::Invalid(format!(
        "--to-name {:?}: give the name passed to pg_create_restore_point(): 1 to 63 bytes \
         without control characters",
        shorten(text)
    )))
}

/// Checks a `--timeline` value: `latest`, `current`, or a timeline number (1 or more,
/// decimal). Returns it as `recovery_target_timeline` takes it.
///
/// # Errors
/// [`Error::Invalid`] naming the flag and the choices.
pub fn parse_timeline(text: &str) -> Result<String> {
    let t = text.trim();
    if t == "latest" || t == "current" {
        return Ok(t.to_string());
    }
    if !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = t.parse::<u32>() {
            if n > 0 {
                return Ok(n.to_string());
            }
        }
    }
    Err(Error::Invalid(format!(
        "--timeline {:?}: give latest, current, or a timeline number such as 2",
        shorten(text)
    )))
}

/// What PostgreSQL does when it reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetAction {
    /// End recovery and accept writes (a new timeline starts).
    #[default]
    Promote,
    /// Stay in recovery, read-only, so the result can be inspected first.
    Pause,
    /// Shut down.
    Shutdown,
}

impl TargetAction {
    fn setting(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// What the restored cluster does with its WAL once it runs.
///
/// A restore for a drill or an investigation that promotes onto a new timeline and keeps the
/// backed-up `archive_command` pushes its history file and segments into production's
/// source: production's next failover then conflicts on that history file, and a later
/// restore to "latest" can follow the clone's timeline. So a restore archives nowhere
/// unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Archiving {
    /// `archive_mode = 'off'`, `archive_command = ''`, `archive_library = ''` (the default).
    #[default]
    Off,
    /// Archives with `archive_command` into another source (a drill that keeps its WAL).
    ToSource {
        /// The other source.
        source: String,
        /// The `archive_command` that pushes into it (`lifeboat pg wal-push …`).
        archive_command: String,
    },
    /// Keeps the backed-up archive settings: the restored cluster is the new production and
    /// archives into the source it came from (`--promote-as-source`).
    AsSource,
}

/// What the restored cluster does with its WAL, as written (`--json`: docs/json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivingReport {
    /// `off`, `to_source` or `as_source`.
    pub mode: &'static str,
    /// The source it archives into (`None` when off).
    pub source: Option<String>,
}

impl fmt::Display for ArchivingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.mode, &self.source) {
            ("to_source", Some(s)) => write!(f, "into source {s} (not the one restored from)"),
            ("as_source", Some(s)) => write!(
                f,
                "as backed up, into source {s}: this cluster is the new production"
            ),
            _ => f.write_str(
                "off (this cluster writes nothing into the repository; --archive-to SOURCE \
                 archives into another source, --promote-as-source makes it the new production)",
            ),
        }
    }
}

/// Settings that keep a restored cluster from waiting on or streaming from production,
/// whatever the archiving: it has no synchronous standby yet (commits would hang), and it
/// must not follow production's primary.
const DETACHED: &[&str] = &[
    "primary_conninfo = ''",
    "primary_slot_name = ''",
    "synchronous_standby_names = ''",
];

/// How to restore.
#[derive(Debug, Clone)]
pub struct PgRestoreOptions {
    /// The source name.
    pub source: String,
    /// The data directory to create (or, with `delta`, to bring in line).
    pub target_dir: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// `recovery_target_timeline`: `latest` (default), `current`, or a number.
    pub timeline: Option<String>,
    /// What the server does at the target.
    pub action: TargetAction,
    /// Keep files of the target directory that already match; rewrite only the rest.
    pub delta: bool,
    /// Use this base backup (snapshot id or prefix) instead of the newest that fits.
    pub backup: Option<String>,
    /// The `restore_command` to write (the binary runs `lifeboat pg wal-fetch`).
    pub restore_command: String,
    /// What the restored cluster does with its WAL (default: archives nowhere).
    pub archiving: Archiving,
    /// Make every restored file durable before `backup_label` is written (see the module's
    /// crash safety). Off only for a scratch copy that is thrown away after a crash anyway.
    pub durable: bool,
    /// Extra lines for `postgresql.auto.conf` (e.g. `hot_standby = on` for a test).
    pub extra_settings: Vec<String>,
    /// The file engine's options.
    pub files: RestoreOptions,
}

/// What a restore did (`--json`: docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct PgRestoreReport {
    /// The base backup used.
    pub backup: BaseBackup,
    /// The recovery target written.
    pub target: RecoveryTarget,
    /// The files (counters and problems).
    pub files: RestoreReport,
    /// How far the repository's WAL reaches on the backup's timeline (what `--latest`
    /// can recover to), or `None` when it ends inside the backup.
    pub wal_available_to: Option<Lsn>,
    /// The settings written to `postgresql.auto.conf`.
    pub settings: Vec<String>,
    /// What the restored cluster does with its WAL.
    pub archiving: ArchivingReport,
    /// Seconds spent making the restored files durable (`syncfs`) before `backup_label`.
    pub sync_seconds: f64,
}

/// Chooses the base backup for `target`: the newest one that ends before it.
fn choose_backup(
    repo: &Repository,
    source: &str,
    target: &RecoveryTarget,
    wanted: Option<&str>,
) -> Result<BaseBackup> {
    let (snaps, _) = repo.snapshots()?;
    let backups = base_backups(&snaps, source);
    if backups.is_empty() {
        crate::catalog::require_source(repo, source)?;
        return Err(Error::Invalid(format!(
            "the repository has no base backup of source {source:?}; take one with \
             `lifeboat pg backup --source {source} --dsn ...` (list them with `lifeboat pg backups`)"
        )));
    }
    if let Some(spec) = wanted {
        let spec = spec.to_ascii_lowercase();
        let found: Vec<&BaseBackup> = backups
            .iter()
            .filter(|b| b.snapshot_id.to_hex().starts_with(&spec))
            .collect();
        return match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::Invalid(format!(
                "no base backup of {source:?} has an id starting with {spec:?}"
            ))),
            _ => Err(Error::Invalid(format!(
                "{spec:?} matches several base backups; give more digits"
            ))),
        };
    }
    let fits = |b: &BaseBackup| match target {
        RecoveryTarget::Time(t) => b
            .info
            .stop_time
            .parse::<jiff::Timestamp>()
            .is_ok_and(|stop| stop < *t),
        RecoveryTarget::Lsn(l) => b.info.stop_lsn <= *l,
        _ => true,
    };
    backups
        .iter()
        .rev()
        .find(|b| fits(b))
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no base backup of {source:?} ends before {target}; the oldest ends at {} ({})",
                backups[0].info.stop_time, backups[0].info.stop_lsn
            ))
        })
}

/// Refuses a directory that holds a running cluster.
pub fn refuse_running(dir: &Path) -> Result<()> {
    let pidfile = dir.join("postmaster.pid");
    if let Ok(text) = std::fs::read_to_string(&pidfile) {
        if let Some(pid) = crate::server_files::PostmasterPid::parse(&text).map(|p| p.pid) {
            // "Cannot tell" (`hidepid`) is not "gone": the one rule in `cluster`.
            if crate::cluster::process_alive(pid) {
                return Err(Error::Invalid(format!(
                    "{} holds a running PostgreSQL (postmaster.pid names process {pid}); stop it \
                     first, or restore somewhere else",
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// Restores a base backup of `opts.source` into `opts.target_dir` and prepares recovery to
/// `opts.target`. PostgreSQL does the recovery when it starts.
///
/// # Errors
/// [`Error::Invalid`] when no base backup fits, the target directory is not empty (without
/// `delta`) or holds a running cluster, or the WAL from the backup's start to its stop is
/// not in the repository; repository errors. Damaged files are listed in the report's
/// `files.errors` (and the caller must not start the cluster then).
pub fn pg_restore(
    repo: &Repository,
    opts: &PgRestoreOptions,
    progress: &Progress,
) -> Result<PgRestoreReport> {
    lifeboat_repo::wal::validate_source(&opts.source)?;
    // What goes into postgresql.auto.conf is checked here too, not only by the CLI.
    match &opts.target {
        RecoveryTarget::Xid(x) => drop(parse_xid(x)?),
        RecoveryTarget::Name(n) => drop(parse_restore_point(n)?),
        _ => {}
    }
    if let Some(t) = &opts.timeline {
        parse_timeline(t)?;
    }
    let dir = &opts.target_dir;
    refuse_running(dir)?;
    if !opts.delta {
        lifeboat_sources::restore::ensure_empty(
            dir,
            "restore into an empty directory, or pass --delta to rewrite only what differs",
        )?;
    }
    let backup = choose_backup(repo, &opts.source, &opts.target, opts.backup.as_deref())?;
    let info = &backup.info;
    let size = SegmentSize::new(info.segment_size).unwrap_or_default();

    // The WAL from the backup's start to its stop must be there, or the restore can never
    // become consistent.
    let catalog = WalCatalog::load(repo, &opts.source, size)?;
    let first = Segment::containing(info.timeline, info.start_lsn, size);
    let last = Segment::ending_at(info.timeline, info.stop_lsn, size);
    if let Some(missing) = catalog.first_missing(first, last, info.stop_lsn) {
        return Err(Error::Repo(lifeboat_repo::Error::damaged(
            lifeboat_repo::wal::wal_path(&opts.source, &missing.name(size)),
            format!(
                "missing: base backup {} needs WAL from {} to {} and this segment is not in the \
                 repository",
                backup.snapshot_id.short(),
                info.start_lsn,
                info.stop_lsn
            ),
        )));
    }
    let wal_available_to = available_to(&catalog, first);
    // A target time that has not happened yet can never be reached: PostgreSQL would replay
    // everything and then stop with "recovery ended before configured recovery target was
    // reached", long after this command said it was fine.
    if let RecoveryTarget::Time(t) = &opts.target {
        let now = jiff::Timestamp::now();
        if *t > now {
            return Err(Error::Invalid(format!(
                "the recovery target time {t} is in the future (now {now}); the repository's \
                 WAL of {:?} reaches {} (its newest base backup ended {}); name a time that \
                 has passed, or use --latest to recover everything there is",
                opts.source,
                wal_available_to.map_or_else(|| info.stop_lsn.to_string(), |l| l.to_string()),
                backup.info.stop_time,
            )));
        }
    }

    // Files.
    let _lease = lifeboat_repo::lease::Lease::acquire_read(repo, "pg restore")?;
    let (_, snap) = repo.find_snapshot(&backup.snapshot_id.to_hex())?;
    let index = repo.load_index()?;
    let name = Path::new(&info.data_dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let mut files_opts = opts.files.clone();
    files_opts.into_target = true;
    files_opts.existing = if opts.delta {
        Existing::Mirror
    } else {
        Existing::Refuse
    };
    // Made durable below, every filesystem of the tree at once (pg_wal or tablespaces may
    // live on others), before backup_label names the files.
    files_opts.sync = false;
    let short = backup.snapshot_id.short();
    let files = restore(
        repo,
        &index,
        Selection {
            tree: &snap.tree,
            subpath: name.as_bytes(),
            snapshot: &short,
        },
        dir,
        &files_opts,
        progress,
    )?;

    // What recovery needs.
    let owner = owner_of(dir)?;
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(Error::io(&p))?;
        chown(&p, owner)?;
    }
    // Every relation file and directory durable before backup_label names them.
    let synced = std::time::Instant::now();
    if opts.durable {
        sync_filesystems(dir)?;
    }
    let sync_seconds = synced.elapsed().as_secs_f64();
    let settings = recovery_settings(opts);
    write_auto_conf(dir, &settings, owner)?;
    if !info.tablespace_map.is_empty() {
        write_file(&dir.join("tablespace_map"), &info.tablespace_map, owner)?;
    }
    write_file(&dir.join("backup_label"), &info.backup_label, owner)?;
    write_file(&dir.join("recovery.signal"), "", owner)?;
    sync_dir(dir)?;
    let archiving = match &opts.archiving {
        Archiving::Off => ArchivingReport {
            mode: "off",
            source: None,
        },
        Archiving::ToSource { source, .. } => ArchivingReport {
            mode: "to_source",
            source: Some(source.clone()),
        },
        Archiving::AsSource => ArchivingReport {
            mode: "as_source",
            source: Some(opts.source.clone()),
        },
    };
    Ok(PgRestoreReport {
        backup,
        target: opts.target.clone(),
        files,
        wal_available_to,
        settings,
        archiving,
        sync_seconds,
    })
}

/// How far WAL reaches contiguously from `first` on its timeline.
fn available_to(catalog: &WalCatalog, first: Segment) -> Option<Lsn> {
    let size = catalog.size;
    let mut s = first;
    let mut end = None;
    loop {
        if catalog.segments.contains(&s) {
            end = Some(s.end(size));
            s = s.next();
            continue;
        }
        let streamed = catalog.streamed_to(&s);
        if streamed > 0 {
            end = Some(Lsn(s.start(size).0 + streamed));
        }
        return end;
    }
}

/// Quotes a value for postgresql.conf, whose parser reads backslash escapes inside quotes:
/// a backslash is doubled as well as a quote (`a\'b` must not end the string early).
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

fn recovery_settings(opts: &PgRestoreOptions) -> Vec<String> {
    let mut out = vec![format!(
        "restore_command = {}",
        quote(&opts.restore_command)
    )];
    match &opts.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Immediate => out.push("recovery_target = 'immediate'".into()),
        RecoveryTarget::Time(t) => out.push(format!(
            "recovery_target_time = {}",
            quote(&t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        RecoveryTarget::Lsn(l) => {
            out.push(format!("recovery_target_lsn = {}", quote(&l.to_string())))
        }
        RecoveryTarget::Xid(x) => out.push(format!("recovery_target_xid = {}", quote(x))),
        RecoveryTarget::Name(n) => out.push(format!("recovery_target_name = {}", quote(n))),
    }
    if !matches!(opts.target, RecoveryTarget::Latest) {
        out.push(format!(
            "recovery_target_action = {}",
            quote(opts.action.setting())
        ));
    }
    out.push(format!(
        "recovery_target_timeline = {}",
        quote(opts.timeline.as_deref().unwrap_or("latest"))
    ));
    match &opts.archiving {
        Archiving::Off => out.extend(
            [
                "archive_mode = 'off'",
                "archive_command = ''",
                "archive_library = ''",
            ]
            .map(String::from),
        ),
        Archiving::ToSource {
            archive_command, ..
        } => {
            out.push("archive_mode = 'on'".into());
            out.push(format!("archive_command = {}", quote(archive_command)));
            out.push("archive_library = ''".into());
        }
        Archiving::AsSource => {}
    }
    out.extend(DETACHED.iter().map(|s| (*s).to_string()));
    out.extend(opts.extra_settings.iter().cloned());
    out
}

/// Settings that a restore replaces if the backed-up `postgresql.auto.conf` had them.
const REPLACED: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
    "primary_conninfo",
    "primary_slot_name",
];

fn write_auto_conf(dir: &Path, settings: &[String], owner: Option<(u32, u32)>) -> Result<()> {
    let path = dir.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut extra_keys: Vec<String> = settings
        .iter()
        .filter_map(|l| l.split('=').next().map(|k| k.trim().to_string()))
        .collect();
    extra_keys.extend(REPLACED.iter().map(|k| (*k).to_string()));
    let mut text = String::new();
    for line in old.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if extra_keys.iter().any(|k| k == key) {
            text.push_str("# (replaced by lifeboat pg restore) ");
        }
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "# lifeboat pg restore, {}\n",
        jiff::Timestamp::now()
    ));
    for s in settings {
        text.push_str(s);
        text.push('\n');
    }
    write_file(&path, &text, owner)
}

/// Writes `text` to `path`, gives it `owner`, and fsyncs it (its directory entry is made
/// durable by [`sync_dir`] after the last recovery file).
fn write_file(path: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(Error::io(path))?;
    f.write_all(text.as_bytes()).map_err(Error::io(path))?;
    chown(path, owner)?;
    f.sync_all().map_err(Error::io(path))
}

/// Fsyncs directory `dir` (the entries created in it).
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Makes everything under `dir` durable: one `syncfs` per filesystem the tree spans (the
/// data directory's, and those of symlinked `pg_wal` or tablespaces and of mount points
/// inside it). One call per filesystem costs what writing back the restored data costs;
/// an fsync per file would add a journal commit per file (measured in docs/postgres.md).
///
/// # Errors
/// [`Error::Io`] naming the directory whose filesystem could not be synced.
pub fn sync_filesystems(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut devices: std::collections::BTreeMap<u64, PathBuf> = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let md = std::fs::metadata(&d).map_err(Error::io(&d))?;
        devices.entry(md.dev()).or_insert_with(|| d.clone());
        let rd = std::fs::read_dir(&d).map_err(Error::io(&d))?;
        for e in rd {
            let e = e.map_err(Error::io(&d))?;
            let ft = e.file_type().map_err(Error::io(&e.path()))?;
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_symlink() {
                // pg_wal or a tablespace elsewhere: its filesystem, not its tree (the
                // restore wrote into the directory the link names, and only there).
                let p = e.path();
                if let Ok(md) = std::fs::metadata(&p) {
                    if md.is_dir() {
                        devices.entry(md.dev()).or_insert(p);
                    }
                }
            }
        }
    }
    for path in devices.values() {
        lifeboat_sources::beneath::sync_filesystem(path).map_err(Error::io(path))?;
    }
    Ok(())
}

/// The owner of `dir` when this process is root (a restore run as root into a directory
/// owned by `postgres` must leave nothing PostgreSQL cannot read); `None` otherwise.
fn owner_of(dir: &Path) -> Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let md = std::fs::metadata(dir).map_err(Error::io(dir))?;
    Ok(Some((md.uid(), md.gid())))
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(Error::io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_an_offset_and_accept_postgres_style() {
        let want: jiff::Timestamp = "2026-11-30T13:03:27.25Z".parse().unwrap();
        for t in [
            "2026-11-30T14:03:27.25+01:00",
            "2026-11-30 14:03:27.25+01",
            "2026-11-30 14:03:27.25+0100",
            "2026-11-30 13:03:27.25+00",
            "2026-11-30T13:03:27.25Z",
        ] {
            assert_eq!(parse_time(t).unwrap(), want, "{t}");
        }
        assert!(parse_time("2026-11-30 14:03:27").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    /// Issue 9, item 8: a multi-byte character in the offset panicked (byte slicing).
    #[test]
    fn r9_hostile_times_are_errors_not_panics() {
        for t in [
            "2026-11-30 14:03:27+1é1",
            "2026-11-30 14:03:27+é",
            "2026-11-30 14:03:27-ééé",
            "2026-11-30 14:03:27+12345",
            "é2026-11-30 14:03:27+01",
            "2026-11-30 14:03:27+01:00:00:00",
        ] {
            let e = parse_time(t).unwrap_err().to_string();
            assert!(e.contains("--to-time") && e.contains("UTC offset"), "{e}");
        }
    }

    #[test]
    fn xids_names_and_timelines_are_checked() {
        assert_eq!(parse_xid(" 7382 ").unwrap(), "7382");
        for bad in [
            "",
            "0",
            "-1",
            "0x10",
            "1 2",
            "7382'",
            "99999999999999999999999",
        ] {
            assert!(parse_xid(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_restore_point("before 'migration'").unwrap(),
            "before 'migration'"
        );
        for bad in ["", "a\nrestore_command = 'x'", &"x".repeat(64)] {
            assert!(parse_restore_point(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_timeline("latest").unwrap(), "latest");
        assert_eq!(parse_timeline("3").unwrap(), "3");
        for bad in ["", "0", "-1", "next", "4294967296", "1'"] {
            assert!(parse_timeline(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoting_doubles_backslashes_and_quotes() {
        assert_eq!(quote(r"a\'b"), r"'a\\''b'");
    }

    proptest::proptest! {
        /// No `--to-time`, `--to-xid`, `--to-name` or `--timeline` text panics.
        #[test]
        fn target_parsers_never_panic(
            any_text in "\\PC{0,48}",
            near_miss in "[0-9 :T.Z+é-]{0,32}",
        ) {
            for s in [&any_text, &near_miss] {
                let _ = parse_time(s);
                let _ = parse_xid(s);
                let _ = parse_restore_point(s);
                let _ = parse_timeline(s);
            }
        }

        /// Times printed PostgreSQL's way (space, fraction, `+HH` or `+HHMM` offset) read
        /// back as the same instant.
        #[test]
        fn postgres_style_times_roundtrip(
            secs in 0i64..4_102_444_800,
            micros in 0i32..1_000_000,
            off_min in -14 * 60i32..=14 * 60,
        ) {
            let ts = jiff::Timestamp::new(secs, micros * 1000).unwrap();
            let off = jiff::tz::Offset::from_seconds(off_min * 60).unwrap();
            let z = ts.to_zoned(jiff::tz::TimeZone::fixed(off));
            let (h, m) = (off_min.abs() / 60, off_min.abs() % 60);
            let sign = if off_min < 0 { '-' } else { '+' };
            let off_text = if m == 0 { format!("{sign}{h:02}") } else { format!("{sign}{h:02}{m:02}") };
            let text = format!("{} {}{off_text}", z.date(), z.time());
            proptest::prop_assert_eq!(parse_time(&text).unwrap(), ts, "{}", text);
        }
    }

    #[test]
    fn settings_name_the_target_and_quote_values() {
        let opts = PgRestoreOptions {
            source: "orders".into(),
            target_dir: PathBuf::from("/tmp/x"),
            target: RecoveryTarget::Name("before 'migration'".into()),
            timeline: None,
            action: TargetAction::Pause,
            delta: false,
            backup: None,
            restore_command: "lifeboat pg wal-fetch --source orders %f %p".into(),
            archiving: Archiving::Off,
            durable: true,
            extra_settings: vec![],
            files: RestoreOptions::default(),
        };
        let s = recovery_settings(&opts);
        assert_eq!(
            s[0],
            "restore_command = 'lifeboat pg wal-fetch --source orders %f %p'"
        );
        assert!(s.contains(&"recovery_target_name = 'before ''migration'''".to_string()));
        assert!(s.contains(&"recovery_target_action = 'pause'".to_string()));
        assert!(s.contains(&"recovery_target_timeline = 'latest'".to_string()));
        let t = RecoveryTarget::Time(parse_time("2026-11-30 14:03:27.123456+00").unwrap());
        let s = recovery_settings(&PgRestoreOptions { target: t, ..opts });
        assert!(
            s.contains(&"recovery_target_time = '2026-11-30 14:03:27.123456+00'".to_string()),
            "{s:?}"
        );
    }

    #[test]
    fn a_restore_archives_nowhere_unless_told_and_never_waits_on_production() {
        let opts = PgRestoreOptions {
            source: "orders".into(),
            target_dir: PathBuf::from("/tmp/x"),
            target: RecoveryTarget::Latest,
            timeline: None,
            action: TargetAction::Promote,
            delta: false,
            backup: None,
            restore_command: "fetch %f %p".into(),
            archiving: Archiving::Off,
            durable: true,
            extra_settings: vec![],
            files: RestoreOptions::default(),
        };
        let s = recovery_settings(&opts);
        for want in [
            "archive_mode = 'off'",
            "archive_command = ''",
            "archive_library = ''",
            "primary_conninfo = ''",
            "synchronous_standby_names = ''",
        ] {
            assert!(s.contains(&want.to_string()), "{want}: {s:?}");
        }
        let s = recovery_settings(&PgRestoreOptions {
            archiving: Archiving::ToSource {
                source: "orders-drill".into(),
                archive_command: "push --source orders-drill '%p'".into(),
            },
            ..opts.clone()
        });
        assert!(s.contains(&"archive_mode = 'on'".to_string()), "{s:?}");
        assert!(
            s.contains(&"archive_command = 'push --source orders-drill ''%p'''".to_string()),
            "{s:?}"
        );
        let s = recovery_settings(&PgRestoreOptions {
            archiving: Archiving::AsSource,
            ..opts
        });
        assert!(!s.iter().any(|l| l.starts_with("archive_")), "{s:?}");
        assert!(s.contains(&"synchronous_standby_names = ''".to_string()));
    }
}
