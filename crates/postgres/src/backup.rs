//! Base backups of a running cluster with PostgreSQL's low-level backup API
//! (`pg_backup_start` / `pg_backup_stop`) and Lifeboat's own file backup engine.
//!
//! Lives here: [`base_backup`] and its options and report, what a base backup leaves out of
//! the data directory, and the check that the WAL a backup needs reached the repository.
//! Never here: WAL archiving itself (`archive`, `stream`), or restore.
//!
//! Why the low-level API and not the replication protocol's `BASE_BACKUP`: Lifeboat runs
//! beside the database, so it reads the data directory with its parallel, deduplicating
//! file engine — which stores only the changed chunks of a 1 GiB relation segment, where
//! `BASE_BACKUP` would stream every byte through one server process
//! (docs/decisions/0012-postgres-base-backup.md).
//!
//! # Crash safety
//! The snapshot is committed last, only after `pg_backup_stop` returned and every WAL file
//! from the backup's start to its stop position is in the repository; a backup killed
//! before that leaves unreferenced packs (garbage for prune) and PostgreSQL ends the backup
//! mode when the session goes away.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use lifeboat_repo::format::{PgBackupInfo, Snapshot};
use lifeboat_repo::wal::validate_source;
use lifeboat_repo::Repository;
use lifeboat_sources::backup::{backup_with, BackupOptions, BackupReport};
use lifeboat_sources::Progress;
use lifeboat_types::Lsn;

use crate::catalog::WalCatalog;
use crate::error::{Error, Result};
use crate::walname::{Segment, SegmentSize};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct PgBackupOptions {
    /// The source name: which cluster, inside the repository.
    pub source: String,
    /// libpq connection string of the cluster (a superuser or a role allowed to run
    /// `pg_backup_start`).
    pub dsn: String,
    /// The data directory, when it differs from the server's `data_directory` as seen
    /// from here.
    pub pgdata: Option<PathBuf>,
    /// Tags recorded on the snapshot (`postgres` is always added).
    pub tags: Vec<String>,
    /// How long to wait for the WAL the backup needs to reach the repository.
    pub wal_wait: Duration,
    /// The file engine's options (threads, host name).
    pub files: BackupOptions,
}

/// What a base backup did (`--json`: docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct PgBackupReport {
    /// The file backup (snapshot id, counters).
    #[serde(flatten)]
    pub files: BackupReport,
    /// The cluster and the WAL it needs.
    pub postgres: PgBackupInfo,
}

/// What a base backup leaves out, relative to the data directory: the contents of these
/// directories (the directories themselves are kept) …
/// What a wait or timeout longer than the clock can represent becomes: ten years, as good as
/// for ever for a command, and far from the end of `Instant`'s range.
pub(crate) const FOREVER: Duration = Duration::from_secs(10 * 365 * 86_400);

const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
/// … these top-level files …
const TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "recovery.signal",
    "standby.signal",
    "current_logfiles",
    "lifeboat-spool",
];
/// … and files with these names anywhere (PostgreSQL's own list for base backups).
const ANY_NAMES: &[&str] = &["pg_internal.init", "pgsql_tmp*"];

/// Escapes `text` so that a glob matches it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '!' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// The exclude globs of a base backup of `pgdata`.
pub fn excludes(pgdata: &Path) -> Vec<String> {
    let root = glob_escape(&pgdata.display().to_string());
    let mut out: Vec<String> = EMPTY_DIRS.iter().map(|d| format!("{root}/{d}/*")).collect();
    out.extend(TOP_FILES.iter().map(|f| format!("{root}/{f}")));
    out.extend(ANY_NAMES.iter().map(|n| (*n).to_string()));
    out
}

/// Where the connection goes, for messages (never the password).
pub(crate) fn target_of(dsn: &str) -> String {
    match dsn.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(s) => s.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}")
        }
        Err(_) => "(unparsable connection string)".into(),
    }
}

/// Whether a connection string carries a password (`password=…` in key=value form, or
/// `postgresql://user:secret@host` / `?password=` in URL form). A string the client cannot
/// parse counts when it mentions `password` at all: better a needless warning than a
/// password shown in `ps`.
pub fn dsn_has_password(dsn: &str) -> bool {
    match dsn.parse::<postgres::Config>() {
        Ok(c) => c.get_password().is_some(),
        Err(_) => {
            dsn.to_ascii_lowercase().contains("password") || {
                // A URL's user:password@ part.
                dsn.split_once("://")
                    .and_then(|(_, rest)| rest.split(['/', '?']).next())
                    .and_then(|auth| auth.rsplit_once('@'))
                    .is_some_and(|(userinfo, _)| userinfo.contains(':'))
            }
        }
    }
}

/// Connects with the sync client.
pub(crate) fn connect(dsn: &str) -> Result<postgres::Client> {
    let target = target_of(dsn);
    let mut config: postgres::Config = dsn.parse().map_err(|e| Error::Sql {
        target: target.clone(),
        message: format!("bad connection string: {e}"),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    if config.get_application_name().is_none() {
        config.application_name("lifeboat");
    }
    config
        .connect(postgres::NoTls)
        .map_err(|e| sql_error(&target, e))
}

pub(crate) fn sql_error(target: &str, e: postgres::Error) -> Error {
    // The innermost cause (the client's own message says only "error connecting to
    // server") and the kind of an I/O error among the causes.
    let (io_kind, innermost) = {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        let (mut kind, mut innermost) = (None, None);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
            }
            innermost = Some(c.to_string());
            cause = c.source();
        }
        (kind, innermost)
    };
    let message = match (e.as_db_error(), io_kind) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(std::io::ErrorKind::ConnectionRefused)) => format!(
            "connection refused at {target} (fix: check that PostgreSQL is running and listens on that host and port, and the --dsn)"
        ),
        (None, Some(std::io::ErrorKind::TimedOut)) => format!(
            "no answer from {target}: the connection timed out (fix: check the host, the port and any firewall between)"
        ),
        (None, _) => match innermost {
            Some(inner) if !e.to_string().contains(&inner) => format!("{e}: {inner}"),
            _ => e.to_string(),
        },
    };
    Error::Sql {
        target: target.to_string(),
        message,
    }
}

/// Facts about the cluster read before the backup starts.
struct Cluster {
    data_dir: String,
    server_version: u32,
    segment_size: SegmentSize,
    system_id: String,
    in_recovery: bool,
    tablespaces: i64,
}

fn inspect(client: &mut postgres::Client, target: &str) -> Result<Cluster> {
    let row = client
        .query_one(
            "select current_setting('data_directory'), \
                    current_setting('server_version_num')::int, \
                    (select setting::bigint from pg_settings where name = 'wal_segment_size'), \
                    (select system_identifier::text from pg_control_system()), \
                    pg_is_in_recovery(), \
                    (select count(*) from pg_tablespace \
                      where spcname not in ('pg_default', 'pg_global'))",
            &[],
        )
        .map_err(|e| sql_error(target, e))?;
    let seg: i64 = row.get(2);
    Ok(Cluster {
        data_dir: row.get(0),
        server_version: row.get::<_, i32>(1) as u32,
        segment_size: SegmentSize::new(seg as u64).ok_or_else(|| Error::Sql {
            target: target.to_string(),
            message: format!("wal_segment_size {seg} is not a segment size"),
        })?,
        system_id: row.get(3),
        in_recovery: row.get(4),
        tablespaces: row.get(5),
    })
}

/// Takes a base backup of the cluster at `opts.dsn` into a new snapshot.
///
/// # Errors
/// [`Error::Invalid`] for a standby, a cluster with tablespaces, or a data directory that
/// is not there; [`Error::Sql`] when PostgreSQL refuses; a WAL error when the WAL the backup
/// needs does not reach the repository within `opts.wal_wait` (nothing is committed then).
pub fn base_backup(
    repo: &Repository,
    opts: &PgBackupOptions,
    progress: &Progress,
) -> Result<PgBackupReport> {
    validate_source(&opts.source)?;
    let target = target_of(&opts.dsn);
    let mut client = connect(&opts.dsn)?;
    let cluster = inspect(&mut client, &target)?;
    if cluster.server_version < 150000 {
        return Err(Error::Invalid(format!(
            "{target} runs PostgreSQL {}; base backups need 15 or newer",
            cluster.server_version
        )));
    }
    if cluster.in_recovery {
        return Err(Error::Invalid(format!(
            "{target} is a standby; take base backups from the primary"
        )));
    }
    if cluster.tablespaces > 0 {
        return Err(Error::Invalid(format!(
            "{target} has {} tablespace(s) outside the data directory; base backups of \
             clusters with tablespaces are not supported yet",
            cluster.tablespaces
        )));
    }
    let pgdata = opts
        .pgdata
        .clone()
        .unwrap_or_else(|| PathBuf::from(&cluster.data_dir));
    if !pgdata.join("PG_VERSION").is_file() {
        return Err(Error::Invalid(format!(
            "{} is not the data directory of {target} (no PG_VERSION); pass --pgdata",
            pgdata.display()
        )));
    }
    check_same_cluster(&pgdata, &cluster, &target)?;

    let label = format!("lifeboat {}", jiff::Timestamp::now());
    let start_time = jiff::Timestamp::now().to_string();
    let row = client
        .query_one("select pg_backup_start($1, true)::text", &[&label])
        .map_err(|e| sql_error(&target, e))?;
    let start_lsn: Lsn = parse_lsn(&row.get::<_, String>(0), &target)?;
    tracing::info!(%start_lsn, source = %opts.source, "backup started");

    let mut files = opts.files.clone();
    files.excludes.extend(excludes(&pgdata));
    // Every file is read: a relation file's size and mtime can stay the same while its
    // pages change (the timestamp granularity), and deduplication stores only the chunks
    // that did change anyway.
    files.force = true;
    files.parent = None;
    // Relation files change a few bytes in most pages when rows change all over a table:
    // store them as XOR layers over their previous version (ADR 0016).
    files.delta_files = Some(is_relation_file);
    if !files.tags.iter().any(|t| t == "postgres") {
        files.tags.push("postgres".into());
    }
    files.tags.extend(opts.tags.iter().cloned());
    let mut info: Option<PgBackupInfo> = None;
    let mut stop = |snap: &mut Snapshot| -> lifeboat_repo::Result<()> {
        let stopped = stop_backup(&mut client, &target)
            .and_then(|(stop_lsn, backup_label, tablespace_map)| {
                let timeline = label_timeline(&backup_label).unwrap_or(1);
                let pg = PgBackupInfo {
                    source: opts.source.clone(),
                    system_id: cluster.system_id.clone(),
                    server_version: cluster.server_version,
                    timeline,
                    start_lsn,
                    stop_lsn,
                    start_time: start_time.clone(),
                    stop_time: jiff::Timestamp::now().to_string(),
                    segment_size: cluster.segment_size.bytes(),
                    data_dir: pgdata.display().to_string(),
                    backup_label,
                    tablespace_map,
                };
                wait_for_wal(repo, &pg, opts.wal_wait)?;
                Ok(pg)
            })
            .map_err(|e| lifeboat_repo::Error::Invalid(e.to_string()))?;
        snap.postgres = Some(stopped.clone());
        info = Some(stopped);
        Ok(())
    };
    let report = backup_with(
        repo,
        std::slice::from_ref(&pgdata),
        &files,
        progress,
        &mut stop,
    )?;
    let postgres = info
        .ok_or_else(|| Error::Invalid("the backup stopped without PostgreSQL's answer".into()))?;
    Ok(PgBackupReport {
        files: report,
        postgres,
    })
}

/// Whether `path` is the main fork of a table or index (`base/<db oid>/<relfilenode>[.<n>]`
/// or `global/<relfilenode>[.<n>]`), whose 8 KiB pages change in place.
pub fn is_relation_file(path: &Path) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let (node, seg) = name.split_once('.').unwrap_or((name, "0"));
    if !digits(node) || !digits(seg) {
        return false;
    }
    let mut up = path
        .ancestors()
        .skip(1)
        .filter_map(|p| p.file_name()?.to_str());
    match (up.next(), up.next()) {
        (Some("global"), _) => true,
        (Some(db), Some("base")) => digits(db),
        _ => false,
    }
}

/// Refuses to back up a data directory that belongs to another cluster than the one the
/// connection reaches (a wrong --pgdata would otherwise pair the files of one cluster with
/// the WAL of another).
fn check_same_cluster(pgdata: &Path, cluster: &Cluster, target: &str) -> Result<()> {
    let version = std::fs::read_to_string(pgdata.join("PG_VERSION")).map_err(Error::io(pgdata))?;
    let major = cluster.server_version / 10000;
    if version.trim() != major.to_string() {
        return Err(Error::Invalid(format!(
            "{} holds a PostgreSQL {} cluster but {target} runs {major}; pass the right --pgdata",
            pgdata.display(),
            version.trim()
        )));
    }
    Ok(())
}

fn parse_lsn(text: &str, target: &str) -> Result<Lsn> {
    text.parse().map_err(|e| Error::Sql {
        target: target.to_string(),
        message: format!("unexpected answer: {e}"),
    })
}

/// `pg_backup_stop`: the stop position, the backup label and the tablespace map.
fn stop_backup(client: &mut postgres::Client, target: &str) -> Result<(Lsn, String, String)> {
    let row = client
        .query_one(
            "select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_backup_stop(true)",
            &[],
        )
        .map_err(|e| sql_error(target, e))?;
    Ok((
        parse_lsn(&row.get::<_, String>(0), target)?,
        row.get(1),
        row.get(2),
    ))
}

/// The `START TIMELINE:` of a backup label.
pub fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until every WAL file from the backup's start to its stop position is in the
/// repository (archived by `archive_command` or written by `pg stream`).
fn wait_for_wal(repo: &Repository, pg: &PgBackupInfo, wait: Duration) -> Result<()> {
    let size = SegmentSize::new(pg.segment_size).unwrap_or_default();
    let first = Segment::containing(pg.timeline, pg.start_lsn, size);
    let last = Segment::ending_at(pg.timeline, pg.stop_lsn, size);
    // A wait too long for the clock to represent waits "for ever" instead of panicking.
    let now = Instant::now();
    let deadline = now.checked_add(wait).unwrap_or(now + FOREVER);
    let mut pause = Duration::from_millis(50);
    loop {
        let catalog = WalCatalog::load(repo, &pg.source, size)?;
        match catalog.first_missing(first, last, pg.stop_lsn) {
            None => return Ok(()),
            Some(missing) if Instant::now() >= deadline => {
                return Err(Error::Invalid(format!(
                    "WAL segment {} that this backup needs did not reach the repository within \
                     {} s; set archive_command = 'lifeboat pg wal-push --source {} %p' (or run \
                     `lifeboat pg stream --source {}`) and take the backup again",
                    missing.name(size),
                    wait.as_secs(),
                    pg.source,
                    pg.source
                )))
            }
            Some(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod dsn_tests {
    use super::*;

    #[test]
    fn passwords_in_connection_strings_are_seen() {
        for dsn in [
            "host=127.0.0.1 port=1 password=hunter2",
            "host=db user=app password = 'hunter 2'",
            "postgresql://app:hunter2@db:5432/shop",
            "postgres://app:hunter2@db/shop?sslmode=disable",
            "postgresql://app@db/shop?password=hunter2",
            "host=db password=hunter2 bogus_option=1",
        ] {
            assert!(dsn_has_password(dsn), "{dsn}");
        }
        for dsn in [
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
            "postgresql://app@db:5432/shop",
            "",
        ] {
            assert!(!dsn_has_password(dsn), "{dsn}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_answered_without_panic(dsn in "\\PC{0,64}") {
            let _ = dsn_has_password(&dsn);
            let _ = target_of(&dsn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_escape_the_data_directory_and_keep_the_directories() {
        let ex = excludes(Path::new("/srv/pg[15]/data"));
        assert!(ex.contains(&"/srv/pg[[]15[]]/data/pg_wal/*".to_string()));
        let set = {
            let mut b = globset::GlobSetBuilder::new();
            for p in &ex {
                b.add(globset::Glob::new(p).unwrap());
            }
            b.build().unwrap()
        };
        let m = |p: &str| set.is_match(p);
        assert!(m("/srv/pg[15]/data/pg_wal/000000010000000000000001"));
        assert!(m("/srv/pg[15]/data/pg_wal/archive_status"));
        assert!(!m("/srv/pg[15]/data/pg_wal"));
        assert!(m("/srv/pg[15]/data/postmaster.pid"));
        assert!(!m("/srv/pg[15]/data/base/1/1259"));
        assert!(!m("/srv/pg1/data/pg_wal/x"), "brackets are literal");
        assert!(set.is_match("pg_internal.init"));
        assert!(set.is_match("pgsql_tmp1234.5"));
    }

    #[test]
    fn relation_files_are_recognised() {
        for yes in [
            "/d/base/5/16384",
            "/d/base/5/16384.1",
            "/d/global/1262",
            "base/16385/2619.12",
        ] {
            assert!(is_relation_file(Path::new(yes)), "{yes}");
        }
        for no in [
            "/d/base/5/16384_fsm",
            "/d/base/5/16384_vm",
            "/d/base/5/PG_VERSION",
            "/d/pg_wal/000000010000000000000001",
            "/d/global/pg_control",
            "/d/base/x/16384",
            "/d/pg_xact/0000",
            "/d/base/5/16384.",
        ] {
            assert!(!is_relation_file(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn label_timeline_is_read() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-11-30 12:00:00 UTC\n\
                     LABEL: lifeboat\nSTART TIMELINE: 3\n";
        assert_eq!(label_timeline(label), Some(3));
        assert_eq!(label_timeline(""), None);
    }
}
