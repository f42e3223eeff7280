//! The restore test (`lifeboat pg verify`): restore a base backup into a scratch directory,
//! start PostgreSQL there, wait until it has recovered, run validation queries, measure, and
//! clean up — also on errors and timeouts.
//!
//! Lives here: [`verify`], [`VerifyOptions`], [`VerifyReport`]; preparing, starting,
//! watching and stopping the scratch server. Never here: the restore itself
//! ([`crate::restore`]), fetching WAL (the `restore_command` the caller builds), printing.
//!
//! The scratch server must never touch production: it never archives (`archive_mode = off`
//! on its command line and in its `postgresql.auto.conf`), never streams from a primary
//! (`primary_conninfo = ''`), listens only on 127.0.0.1 and on a socket inside the scratch
//! directory, and admits only connections over that socket (its own `pg_hba.conf`, whatever
//! the backed-up one says). PostgreSQL refuses to run as root: when this process is root,
//! the server (and so its `restore_command`) runs as the `postgres` OS user.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use lifeboat_repo::Repository;
use lifeboat_sources::restore::RestoreOptions;
use lifeboat_sources::Progress;
use lifeboat_types::{Lsn, Secret, SnapshotId};

use crate::catalog::base_backups;
use crate::error::{Error, Result};
use crate::restore::{pg_restore, refuse_running, PgRestoreOptions, RecoveryTarget, TargetAction};

/// Environment variable naming the directory of the PostgreSQL server binaries (overrides
/// `/usr/lib/postgresql/<major>/bin`); the binary reads it into [`VerifyOptions::bin_dir`].
pub const PG_BIN_ENV: &str = "LIFEBOAT_PG_BIN";

/// The OS user the scratch server runs as when this process is root.
const SERVER_USER: &str = "postgres";

/// How often the server's state is polled while it recovers.
const POLL: Duration = Duration::from_millis(100);

/// Rows kept per query in the report (the count is always complete).
pub const MAX_ROWS: usize = 1000;

/// Server log lines kept in a failure.
const LOG_TAIL_LINES: usize = 25;

/// How long a stopping server may take before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// Where util-linux's `setpriv` may live: it gives the server a parent-death signal, so a
/// killed `lifeboat` does not leave a server running on a copy of production data.
const SETPRIV: &[&str] = &["/usr/bin/setpriv", "/bin/setpriv"];

/// Numbers default scratch directories made by this process.
static NEXT_SCRATCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Starts after a port was taken between choosing and binding it.
const START_ATTEMPTS: u32 = 3;

/// Lines for `postgresql.auto.conf`: they keep the scratch cluster (also a kept one that
/// someone starts later) from archiving into the source or streaming from its primary.
const SAFETY_SETTINGS: &[&str] = &[
    "archive_mode = 'off'",
    "archive_command = ''",
    "primary_conninfo = ''",
    "primary_slot_name = ''",
    "hot_standby = 'on'",
];

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The source name.
    pub source: String,
    /// Where recovery stops. [`RecoveryTarget::Latest`] ends with promotion; any other
    /// target pauses there (read-only, which is all validation queries need).
    pub target: RecoveryTarget,
    /// recovery_target_timeline (`latest`, `current` or a number; default latest).
    pub timeline: Option<String>,
    /// Validation queries, run in order in `dbname`; every one must succeed.
    pub queries: Vec<String>,
    /// The database the queries run in.
    pub dbname: String,
    /// The scratch directory (empty or missing; created, and removed afterwards unless
    /// `keep`). `None`: a new directory under the system temp dir.
    pub scratch: Option<PathBuf>,
    /// Restore plus recovery must finish within this; each query gets it as its
    /// `statement_timeout`.
    pub timeout: Duration,
    /// Keep the scratch directory (the server is stopped cleanly instead of immediately).
    pub keep: bool,
    /// Use this base backup (snapshot id or prefix) instead of the newest that fits.
    pub backup: Option<String>,
    /// The `restore_command` the server runs (`lifeboat pg wal-fetch …`).
    pub restore_command: String,
    /// Extra environment for the server and so its `restore_command` (a repository
    /// password that the command line cannot carry). `LIFEBOAT_PASSWORD` is removed from the
    /// inherited environment unless it is given here.
    pub server_env: Vec<(String, Secret<String>)>,
    /// The PostgreSQL server binaries; `None`: `/usr/lib/postgresql/<major>/bin` for the
    /// major version of the base backup.
    pub bin_dir: Option<PathBuf>,
    /// The file engine's options for the restore.
    pub files: RestoreOptions,
}

/// What a verification found (`--json`: docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Restore and recovery succeeded and every query succeeded.
    pub ok: bool,
    /// The source name.
    pub source: String,
    /// The recovery target.
    pub target: RecoveryTarget,
    /// The base backup restored (`None` when the restore failed before choosing one).
    pub backup: Option<VerifiedBackup>,
    /// Why the restore or the recovery failed (`None` when they succeeded).
    pub failure: Option<Failure>,
    /// How the server ended recovery: `promoted` or `paused` (at the target).
    pub recovery_state: Option<String>,
    /// The last WAL position replayed (`pg_last_wal_replay_lsn()`).
    pub end_lsn: Option<Lsn>,
    /// How far the repository's WAL reaches contiguously from the backup, on its timeline.
    pub wal_available_to: Option<Lsn>,
    /// Commit time of the last transaction replayed (`pg_last_xact_replay_timestamp()`),
    /// RFC 3339 UTC; `None` when no transaction committed after the backup was replayed.
    pub newest_commit: Option<String>,
    /// For [`RecoveryTarget::Latest`]: seconds from `newest_commit` to the moment recovery
    /// finished (the data a disaster now would lose, if nothing committed since the last
    /// replayed commit is in the repository). For a time target: from `newest_commit` to the
    /// target time. `None` without a newest commit or for other targets.
    pub rpo_seconds: Option<f64>,
    /// Seconds to restore the base backup's files.
    pub restore_seconds: f64,
    /// Seconds from starting the server until recovery finished (or failed).
    pub recovery_seconds: Option<f64>,
    /// Seconds for everything, cleanup included.
    pub total_seconds: f64,
    /// The validation queries, in order.
    pub queries: Vec<QueryResult>,
    /// The scratch server (`None` when it was never started).
    pub server: Option<ServerInfo>,
    /// The scratch directory.
    pub scratch: String,
    /// Whether the scratch directory was kept (`--keep`).
    pub kept: bool,
    /// Things that went wrong without failing the verification (cleanup).
    pub warnings: Vec<String>,
}

/// The base backup a verification restored.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedBackup {
    /// Its snapshot.
    pub snapshot_id: SnapshotId,
    /// The timeline it started on.
    pub timeline: u32,
    /// Where its WAL starts.
    pub start_lsn: Lsn,
    /// Where it became consistent.
    pub stop_lsn: Lsn,
    /// When it stopped (RFC 3339).
    pub stop_time: String,
    /// `server_version_num` of the backed-up cluster.
    pub server_version: u32,
}

/// Why a verification failed before its queries.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Which step failed.
    pub stage: FailureStage,
    /// What happened, in words.
    pub message: String,
    /// The WAL file recovery stopped at, when the server log names one.
    pub wal_file: Option<String>,
    /// The last lines of the server log.
    pub log_tail: Vec<String>,
}

/// The step of a verification that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// The base backup could not be restored (damaged or missing data).
    Restore,
    /// The server stopped before recovery finished (damaged or unreadable WAL, a target
    /// past the end of the WAL, settings this machine cannot run).
    Recovery,
    /// Restore plus recovery took longer than the timeout.
    Timeout,
}

/// One validation query and what it returned.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// The query as given.
    pub sql: String,
    /// It ran without error.
    pub ok: bool,
    /// Column names (of the last statement that returned rows).
    pub columns: Vec<String>,
    /// Rows as text (`None` for SQL NULL), at most [`MAX_ROWS`].
    pub rows: Vec<Vec<Option<String>>>,
    /// All rows returned.
    pub row_count: u64,
    /// More rows were returned than kept.
    pub truncated: bool,
    /// The error (`SQLSTATE: message`), when it failed.
    pub error: Option<String>,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
}

/// The scratch server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The OS user it ran as.
    pub os_user: String,
    /// Where its binaries came from.
    pub bin_dir: String,
}

/// Restores a base backup of `opts.source` into a scratch directory, starts PostgreSQL
/// there on a free 127.0.0.1 port, waits until recovery reaches `opts.target`, runs the
/// validation queries, stops the server and removes the directory (unless `opts.keep`).
///
/// A failure of the backup itself (damaged or missing data or WAL, recovery stopping early,
/// a timeout, a failing query) is a report with `ok: false`, not an error.
///
/// # Errors
/// [`Error::Invalid`] for a scratch directory that is not empty or holds a running
/// cluster, no base backup that fits, missing server binaries, or no `postgres` OS user
/// when running as root; [`Error::Io`] / [`Error::Command`] / repository errors when the
/// machine fails (the scratch directory is cleaned up then too).
///
/// # Cancellation
/// The server is started from the calling thread with a parent-death signal (when
/// `setpriv` is there), so it stops when this process dies; the scratch directory then
/// stays behind.
pub fn verify(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &Progress,
) -> Result<VerifyReport> {
    let started = Instant::now();
    // A timeout too long for the clock to represent means no timeout, not a panic.
    let deadline = started
        .checked_add(opts.timeout)
        .unwrap_or(started + crate::backup::FOREVER);
    lifeboat_repo::wal::validate_source(&opts.source)?;
    let user = ServerUser::find()?;
    precheck_binaries(repo, opts)?;
    let mut scratch = Scratch::prepare(opts.scratch.as_deref(), opts.keep)?;
    let mut report = VerifyReport {
        ok: false,
        source: opts.source.clone(),
        target: opts.target.clone(),
        backup: None,
        failure: None,
        recovery_state: None,
        end_lsn: None,
        wal_available_to: None,
        newest_commit: None,
        rpo_seconds: None,
        restore_seconds: 0.0,
        recovery_seconds: None,
        total_seconds: 0.0,
        queries: Vec::new(),
        server: None,
        scratch: scratch.root.display().to_string(),
        kept: opts.keep,
        warnings: Vec::new(),
    };

    // The restore.
    let action = match opts.target {
        RecoveryTarget::Latest => TargetAction::Promote,
        _ => TargetAction::Pause,
    };
    let restore_opts = PgRestoreOptions {
        source: opts.source.clone(),
        target_dir: scratch.data(),
        target: opts.target.clone(),
        timeline: opts.timeline.clone(),
        action,
        delta: false,
        backup: opts.backup.clone(),
        restore_command: opts.restore_command.clone(),
        archiving: crate::restore::Archiving::Off,
        // A scratch copy: a crash discards it, so nothing waits for the disk.
        durable: false,
        extra_settings: SAFETY_SETTINGS.iter().map(|s| (*s).to_string()).collect(),
        files: opts.files.clone(),
    };
    let t = Instant::now();
    let restored = pg_restore(repo, &restore_opts, progress);
    report.restore_seconds = t.elapsed().as_secs_f64();
    let restored = match restored {
        Ok(r) => r,
        Err(e) if e.is_damage() => {
            report.failure = Some(Failure::without_log(
                FailureStage::Restore,
                format!("the restore failed: {e}"),
            ));
            return Ok(scratch.finish(report, started));
        }
        Err(e) => return Err(e),
    };
    let info = &restored.backup.info;
    report.backup = Some(VerifiedBackup {
        snapshot_id: restored.backup.snapshot_id,
        timeline: info.timeline,
        start_lsn: info.start_lsn,
        stop_lsn: info.stop_lsn,
        stop_time: info.stop_time.clone(),
        server_version: info.server_version,
    });
    report.wal_available_to = restored.wal_available_to;
    if !restored.files.errors.is_empty() {
        let n = restored.files.errors.len();
        let first: Vec<String> = restored
            .files
            .errors
            .iter()
            .take(5)
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        report.failure = Some(Failure::without_log(
            FailureStage::Restore,
            format!(
                "{n} file(s) of base backup {} could not be restored: {}",
                restored.backup.snapshot_id.short(),
                first.join("; ")
            ),
        ));
        return Ok(scratch.finish(report, started));
    }
    if Instant::now() >= deadline {
        report.failure = Some(Failure::without_log(
            FailureStage::Timeout,
            format!(
                "the restore alone took {:.1} s, more than the timeout of {} s",
                report.restore_seconds,
                opts.timeout.as_secs()
            ),
        ));
        return Ok(scratch.finish(report, started));
    }

    // The server.
    let version = info.server_version;
    let bin = bin_dir(opts, version)?;
    scratch.configure(&user)?;
    let launch = Launch {
        standby_minimums: standby_minimums(&bin, &scratch.data()),
        bin: bin.clone(),
        version,
        env: &opts.server_env,
        user: &user,
        pauses: action == TargetAction::Pause,
    };
    let t = Instant::now();
    let (waited, notes) = scratch.start_and_wait(&launch, deadline, opts.timeout)?;
    report.warnings.extend(notes);
    report.recovery_seconds = Some(t.elapsed().as_secs_f64());
    report.server = scratch.server.as_ref().map(|s| ServerInfo {
        port: s.port,
        os_user: user.name.clone(),
        bin_dir: bin.display().to_string(),
    });
    let ready = match waited {
        Waited::Ready(r) => r,
        Waited::Failed(f) => {
            report.failure = Some(f);
            return Ok(scratch.finish(report, started));
        }
        Waited::Raise(_) => unreachable!("start_and_wait restarts or fails on Raise"),
    };
    let recovered_at = jiff::Timestamp::now();
    report.recovery_state = Some(ready.state.clone());
    let mut client = ready.client;
    match recovery_facts(&mut client) {
        Ok((lsn, newest)) => {
            report.end_lsn = lsn;
            if let Some(ts) = newest {
                report.rpo_seconds = match &opts.target {
                    RecoveryTarget::Latest => Some(recovered_at.duration_since(ts)),
                    RecoveryTarget::Time(t) => Some(t.duration_since(ts)),
                    _ => None,
                }
                .map(|d| d.as_secs_f64());
                report.newest_commit = Some(ts.to_string());
            }
        }
        Err(e) => report
            .warnings
            .push(format!("could not read the replay position and time: {e}")),
    }
    drop(client);

    // The queries.
    report.queries = run_queries(&scratch, &ready.user, opts);
    Ok(scratch.finish(report, started))
}

impl Failure {
    fn without_log(stage: FailureStage, message: String) -> Failure {
        Failure {
            stage,
            message,
            wal_file: None,
            log_tail: Vec::new(),
        }
    }
}

/// The OS user the server runs as.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
    home: Option<String>,
    /// Whether the server must switch to this user (this process is root).
    switch: bool,
}

/// One line of /etc/passwd.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd() -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6).then_some(())?;
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

impl ServerUser {
    fn find() -> Result<ServerUser> {
        let euid = rustix::process::geteuid();
        if euid.is_root() {
            let e = passwd()
                .into_iter()
                .find(|e| e.name == SERVER_USER)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "PostgreSQL refuses to run as root, and there is no `{SERVER_USER}` OS \
                         user to run the scratch server as: install the PostgreSQL server \
                         package (it creates the user), or run lifeboat as the user that owns \
                         your clusters"
                    ))
                })?;
            return Ok(ServerUser {
                name: e.name,
                uid: e.uid,
                gid: e.gid,
                home: Some(e.home),
                switch: true,
            });
        }
        let uid = euid.as_raw();
        let name = passwd()
            .into_iter()
            .find(|e| e.uid == uid)
            .map_or_else(|| uid.to_string(), |e| e.name);
        Ok(ServerUser {
            name,
            uid,
            gid: rustix::process::getegid().as_raw(),
            home: None,
            switch: false,
        })
    }

    /// Database roles to try, in order: `postgres`, then the OS user's name (what `initdb`
    /// names the bootstrap superuser by default).
    fn roles(&self) -> Vec<String> {
        let mut r = vec![SERVER_USER.to_string()];
        if self.name != SERVER_USER {
            r.push(self.name.clone());
        }
        r
    }
}

/// The server binaries' directory for `server_version`.
fn bin_dir(opts: &VerifyOptions, server_version: u32) -> Result<PathBuf> {
    let major = if server_version >= 100_000 {
        (server_version / 10_000).to_string()
    } else {
        format!("{}.{}", server_version / 10_000, server_version / 100 % 100)
    };
    let dir = opts
        .bin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    if dir.join("postgres").is_file() {
        Ok(dir)
    } else {
        Err(Error::Invalid(format!(
            "the base backup is of PostgreSQL {major}, and there is no server binary at {}: \
             install PostgreSQL {major} (Debian/Ubuntu: postgresql-{major}), or point \
             {PG_BIN_ENV} at its bin directory",
            dir.join("postgres").display()
        )))
    }
}

/// Fails before the (possibly long) restore when the binaries for the base backup that
/// will most likely be chosen are missing. The restore chooses by the target; the check
/// after it is the exact one.
fn precheck_binaries(repo: &Repository, opts: &VerifyOptions) -> Result<()> {
    let (snaps, _) = repo.snapshots()?;
    let backups = base_backups(&snaps, &opts.source);
    let likely = match &opts.backup {
        Some(spec) => {
            let spec = spec.to_ascii_lowercase();
            backups
                .iter()
                .find(|b| b.snapshot_id.to_hex().starts_with(&spec))
        }
        None => backups.last(),
    };
    match likely {
        Some(b) => bin_dir(opts, b.info.server_version).map(|_| ()),
        None => Ok(()), // the restore says what is missing
    }
}

/// The scratch directory and the server in it; stops the server and removes the
/// directory (unless kept) when dropped.
struct Scratch {
    root: PathBuf,
    /// This run created `root` (so it removes `root` itself, not only what is inside).
    created: bool,
    keep: bool,
    server: Option<Server>,
    done: bool,
}

struct Server {
    child: Child,
    port: u16,
}

/// What starting the server needs.
struct Launch<'a> {
    bin: PathBuf,
    version: u32,
    env: &'a [(String, Secret<String>)],
    user: &'a ServerUser,
    /// Settings a hot standby must not set lower than the primary had (from pg_control).
    standby_minimums: Vec<(String, String)>,
    /// Whether recovery is meant to pause at its target (else it ends with promotion).
    pauses: bool,
}

/// How waiting for recovery ended.
enum Waited {
    Ready(Box<Ready>),
    Failed(Failure),
    /// Replay paused because the WAL raised these settings above the server's.
    Raise(Vec<(String, String)>),
}

/// Restarts with raised settings before giving up (one per setting that can need it).
const RAISE_RESTARTS: u32 = 5;

struct Ready {
    client: postgres::Client,
    /// The database role that connected.
    user: String,
    state: String,
}

impl Scratch {
    /// Checks or creates the scratch directory.
    fn prepare(given: Option<&Path>, keep: bool) -> Result<Scratch> {
        let root = match given {
            Some(p) => std::path::absolute(p).map_err(Error::io(p))?,
            None => std::env::temp_dir().join(format!(
                "lifeboat-verify-{}-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_millisecond(),
                NEXT_SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
        };
        // The socket path must fit in sockaddr_un (108 bytes with the NUL).
        if root.join("sock/.s.PGSQL.65535").as_os_str().len() > 107 {
            return Err(Error::Invalid(format!(
                "the scratch directory {} is too long a path for the server's Unix socket \
                 (at most about 85 characters); give a shorter --scratch",
                root.display()
            )));
        }
        let created = match given {
            Some(_) => {
                refuse_running(&root)?;
                match std::fs::symlink_metadata(&root) {
                    Ok(md) if !md.is_dir() => {
                        return Err(Error::Invalid(format!(
                            "--scratch {} is not a directory",
                            root.display()
                        )))
                    }
                    Ok(_) => {
                        let mut rd = std::fs::read_dir(&root).map_err(Error::io(&root))?;
                        if rd.next().is_some() {
                            return Err(Error::Invalid(format!(
                                "--scratch {} is not empty; give an empty or missing directory \
                                 (verify removes everything it creates there)",
                                root.display()
                            )));
                        }
                        false
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if let Some(parent) = root.parent() {
                            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
                        }
                        DirBuilder::new()
                            .mode(0o700)
                            .create(&root)
                            .map_err(Error::io(&root))?;
                        true
                    }
                    Err(e) => return Err(Error::io(&root)(e)),
                }
            }
            None => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&root)
                    .map_err(Error::io(&root))?;
                true
            }
        };
        Ok(Scratch {
            root,
            created,
            keep,
            server: None,
            done: false,
        })
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn sock(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Writes what the scratch server needs beside the restored data directory and gives
    /// the whole scratch directory to the server's OS user.
    fn configure(&self, user: &ServerUser) -> Result<()> {
        let sock = self.sock();
        DirBuilder::new()
            .mode(0o700)
            .create(&sock)
            .map_err(Error::io(&sock))?;
        let hba = self.root.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# lifeboat pg verify: connections over the scratch socket only\nlocal all all trust\n",
        )
        .map_err(Error::io(&hba))?;
        let ident = self.root.join("pg_ident.conf");
        std::fs::write(&ident, "").map_err(Error::io(&ident))?;
        let log = self.log_path();
        std::fs::write(&log, "").map_err(Error::io(&log))?;
        let data = self.data();
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            // Debian keeps postgresql.conf outside the data directory; defaults then.
            std::fs::write(
                &conf,
                "# lifeboat pg verify: the base backup had no postgresql.conf\n",
            )
            .map_err(Error::io(&conf))?;
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(&data))?;
        if user.switch {
            chown_tree(&self.root, user.uid, user.gid)?;
            check_reachable(&self.root, user)?;
        }
        Ok(())
    }

    /// Starts the server (again on a new port when the chosen one was taken meanwhile) and
    /// waits until it has recovered, stopped, or the deadline passed.
    ///
    /// When the WAL raises `max_connections` or a like setting above what the server runs
    /// with (the primary changed it after the base backup), hot standby pauses replay: the
    /// server is restarted with the primary's value, as a real restore would have to be.
    /// Returns notes on what was raised.
    fn start_and_wait(
        &mut self,
        launch: &Launch<'_>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Waited, Vec<String>)> {
        let mut attempt = 1;
        let mut restarts = 0;
        let mut settings = launch.standby_minimums.clone();
        let mut notes = Vec::new();
        loop {
            let log_from = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            self.spawn(launch, &settings)?;
            match self.wait(launch, deadline, timeout, log_from)? {
                Waited::Raise(raise) if restarts < RAISE_RESTARTS => {
                    restarts += 1;
                    if let Some(w) = self.stop_with(rustix::process::Signal::INT) {
                        notes.push(w);
                    }
                    for (name, value) in raise {
                        notes.push(format!(
                            "the WAL raises {name} to {value} after the base backup: the scratch \
                             server was restarted with it (a real restore needs it too)"
                        ));
                        settings.retain(|(n, _)| *n != name);
                        settings.push((name, value));
                    }
                }
                Waited::Raise(raise) => {
                    let log = read_from(&self.log_path(), log_from);
                    let what: Vec<String> =
                        raise.iter().map(|(n, v)| format!("{n} = {v}")).collect();
                    return Ok((
                        Waited::Failed(Failure {
                            stage: FailureStage::Recovery,
                            message: format!(
                                "recovery paused for insufficient settings even after {} \
                                 restarts with raised ones (now needs {})",
                                RAISE_RESTARTS,
                                what.join(", ")
                            ),
                            wal_file: None,
                            log_tail: tail(&log),
                        }),
                        notes,
                    ));
                }
                Waited::Failed(f)
                    if f.stage == FailureStage::Recovery
                        && attempt < START_ATTEMPTS
                        && f.log_tail
                            .iter()
                            .any(|l| l.contains("could not create any TCP/IP sockets")) =>
                {
                    tracing::info!("port taken before the scratch server bound it; retrying");
                    attempt += 1;
                }
                w => return Ok((w, notes)),
            }
        }
    }

    fn spawn(&mut self, launch: &Launch<'_>, minimums: &[(String, String)]) -> Result<()> {
        let port = free_port()?;
        let postgres = launch.bin.join("postgres");
        let mut cmd = match SETPRIV.iter().find(|p| Path::new(p).is_file()) {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "QUIT", "--"]).arg(&postgres);
                c
            }
            None => Command::new(&postgres),
        };
        cmd.arg("-D").arg(self.data());
        let settings: Vec<(String, String)> = self
            .server_settings(port, launch.version)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, v) in settings.iter().chain(minimums) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(Error::io(&log_path))?;
        let log2 = log.try_clone().map_err(Error::io(&log_path))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&self.root)
            .env_remove("LIFEBOAT_PASSWORD")
            .env_remove("PGDATA")
            .env_remove("PGPORT");
        for (k, v) in launch.env {
            cmd.env(k, v.expose());
        }
        if launch.user.switch {
            cmd.uid(launch.user.uid).gid(launch.user.gid);
            cmd.env("USER", &launch.user.name)
                .env("LOGNAME", &launch.user.name);
            if let Some(home) = &launch.user.home {
                cmd.env("HOME", home);
            }
        }
        let child = cmd.spawn().map_err(|e| Error::Command {
            what: format!("start {}", postgres.display()),
            detail: e.to_string(),
        })?;
        tracing::info!(port, pid = child.id(), "scratch server started");
        self.server = Some(Server { child, port });
        Ok(())
    }

    /// The server's settings, given on its command line so that they beat every
    /// configuration file of the backup.
    fn server_settings(&self, port: u16, version: u32) -> Vec<(&'static str, String)> {
        let quoted = |p: PathBuf| format!("\"{}\"", p.display().to_string().replace('"', "\"\""));
        let mut s = vec![
            ("data_directory", self.data().display().to_string()),
            ("port", port.to_string()),
            ("listen_addresses", "127.0.0.1".to_string()),
            ("unix_socket_directories", quoted(self.sock())),
            ("unix_socket_group", String::new()),
            ("unix_socket_permissions", "0700".to_string()),
            (
                "hba_file",
                self.root.join("pg_hba.conf").display().to_string(),
            ),
            (
                "ident_file",
                self.root.join("pg_ident.conf").display().to_string(),
            ),
            // Never the production server's (Debian's pg_ctlcluster reads it).
            (
                "external_pid_file",
                self.root
                    .join("postmaster.external.pid")
                    .display()
                    .to_string(),
            ),
            ("ssl", "off".to_string()),
            ("archive_mode", "off".to_string()),
            ("archive_command", String::new()),
            ("primary_conninfo", String::new()),
            ("primary_slot_name", String::new()),
            ("synchronous_standby_names", String::new()),
            ("hot_standby", "on".to_string()),
            ("logging_collector", "off".to_string()),
            ("log_destination", "stderr".to_string()),
            ("log_min_messages", "warning".to_string()),
            ("lc_messages", "C".to_string()),
            ("cluster_name", "lifeboat-verify".to_string()),
        ];
        if version >= 150_000 {
            s.push(("archive_library", String::new()));
        }
        s
    }

    /// Waits for the server to finish (or pause) recovery.
    fn wait(
        &mut self,
        launch: &Launch<'_>,
        deadline: Instant,
        timeout: Duration,
        log_from: u64,
    ) -> Result<Waited> {
        let state_sql = if launch.version >= 140_000 {
            "select case when not pg_is_in_recovery() then 'promoted' \
             else pg_get_wal_replay_pause_state() end"
        } else {
            "select case when not pg_is_in_recovery() then 'promoted' \
             when pg_is_wal_replay_paused() then 'paused' else 'not paused' end"
        };
        let roles = launch.user.roles();
        let mut client: Option<(postgres::Client, String)> = None;
        let mut last = String::from("the server was not accepting connections yet");
        loop {
            let server = self
                .server
                .as_mut()
                .expect("wait runs after spawn set the server");
            let exited = server.child.try_wait().map_err(|e| Error::Command {
                what: "watch the scratch server".into(),
                detail: e.to_string(),
            })?;
            if let Some(status) = exited {
                let log = read_from(&self.log_path(), log_from);
                let wal_file = wal_file_in(&log);
                let message = match &wal_file {
                    Some(w) => format!(
                        "recovery stopped: WAL file {w} could not be restored from the repository \
                         (the server exited: {status})"
                    ),
                    None => format!(
                        "the server exited before recovery finished ({status}): {}",
                        last_fatal(&log).unwrap_or("see the log lines")
                    ),
                };
                return Ok(Waited::Failed(Failure {
                    stage: FailureStage::Recovery,
                    message,
                    wal_file,
                    log_tail: tail(&log),
                }));
            }
            let port = server.port;
            if client.is_none() && self.accepting() {
                match connect(&self.sock(), port, &roles, "template1") {
                    Ok(c) => client = Some(c),
                    Err(e) => last = e,
                }
            }
            if let Some((c, _)) = client.as_mut() {
                match c.simple_query(state_sql) {
                    Ok(msgs) => {
                        let state = first_value(&msgs).unwrap_or_default();
                        if state == "paused" {
                            let log = read_from(&self.log_path(), log_from);
                            let raise = insufficient_settings(&log);
                            if !raise.is_empty() {
                                return Ok(Waited::Raise(raise));
                            }
                        }
                        if state == "paused" && !launch.pauses {
                            // Not at a target: hot standby found settings lower than the
                            // primary's, or WAL it cannot replay without help.
                            let log = read_from(&self.log_path(), log_from);
                            return Ok(Waited::Failed(Failure {
                                stage: FailureStage::Recovery,
                                message: format!(
                                    "recovery paused before the end of the WAL: {}",
                                    last_warning(&log).unwrap_or("see the log lines")
                                ),
                                wal_file: None,
                                log_tail: tail(&log),
                            }));
                        }
                        if state == "promoted" || state == "paused" {
                            let (client, user) = client.take().expect("checked just above");
                            return Ok(Waited::Ready(Box::new(Ready {
                                client,
                                user,
                                state,
                            })));
                        }
                        last = format!("recovery state: {state}");
                    }
                    Err(e) => {
                        last = describe(&e);
                        client = None;
                    }
                }
            }
            if Instant::now() >= deadline {
                let log = read_from(&self.log_path(), log_from);
                return Ok(Waited::Failed(Failure {
                    stage: FailureStage::Timeout,
                    message: format!(
                        "recovery did not finish within the timeout of {} s ({last})",
                        timeout.as_secs()
                    ),
                    wal_file: None,
                    log_tail: tail(&log),
                }));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether postmaster.pid says the server accepts connections (what `pg_ctl -w` looks
    /// at): `ready` as a primary, `standby` in hot standby. Connecting earlier would fill
    /// the log with "not yet accepting connections".
    fn accepting(&self) -> bool {
        std::fs::read_to_string(self.data().join("postmaster.pid")).is_ok_and(|t| {
            t.lines()
                .nth(7)
                .is_some_and(|s| matches!(s.trim(), "ready" | "standby"))
        })
    }

    /// Stops the server: immediately, or cleanly when the directory is kept.
    fn stop(&mut self) -> Option<String> {
        self.stop_with(if self.keep {
            rustix::process::Signal::INT // fast shutdown: a clean, restartable directory
        } else {
            rustix::process::Signal::QUIT // immediate: it is thrown away anyway
        })
    }

    /// Stops the server with `signal` (SIGINT: fast shutdown, SIGQUIT: immediate), then
    /// SIGKILL after [`STOP_DEADLINE`]; returns a warning when it had to kill.
    fn stop_with(&mut self, signal: rustix::process::Signal) -> Option<String> {
        let mut server = self.server.take()?;
        if matches!(server.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        let pid = rustix::process::Pid::from_child(&server.child);
        let _ = rustix::process::kill_process(pid, signal);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match server.child.try_wait() {
                Ok(Some(_)) => return None,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    return Some(format!(
                        "the scratch server (pid {}) did not stop within {} s and was killed",
                        server.child.id(),
                        STOP_DEADLINE.as_secs()
                    ));
                }
            }
        }
    }

    /// Stops the server, removes the directory unless kept; returns warnings.
    fn cleanup(&mut self) -> Vec<String> {
        self.done = true;
        let mut warnings: Vec<String> = self.stop().into_iter().collect();
        if self.keep {
            return warnings;
        }
        let removed = if self.created {
            std::fs::remove_dir_all(&self.root)
        } else {
            std::fs::read_dir(&self.root).and_then(|rd| {
                for e in rd {
                    let p = e?.path();
                    if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)?;
                    } else {
                        std::fs::remove_file(&p)?;
                    }
                }
                Ok(())
            })
        };
        if let Err(e) = removed {
            warnings.push(format!(
                "could not remove the scratch directory {}: {e}; it holds a copy of the \
                 source's data, remove it by hand",
                self.root.display()
            ));
        }
        warnings
    }

    /// Cleans up and completes the report.
    fn finish(mut self, mut report: VerifyReport, started: Instant) -> VerifyReport {
        report.warnings.extend(self.cleanup());
        report.ok = report.failure.is_none() && report.queries.iter().all(|q| q.ok);
        report.total_seconds = started.elapsed().as_secs_f64();
        report
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.done {
            for w in self.cleanup() {
                tracing::warn!("{w}");
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
/// No socket can be bound on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("127.0.0.1:0"))?;
    let port = l.local_addr().map_err(Error::io("127.0.0.1:0"))?.port();
    Ok(port)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(Error::io(path))?;
    let md = std::fs::symlink_metadata(path).map_err(Error::io(path))?;
    if md.is_dir() {
        for e in std::fs::read_dir(path).map_err(Error::io(path))? {
            let e = e.map_err(Error::io(path))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Refuses a scratch directory that the server's user cannot reach.
fn check_reachable(root: &Path, user: &ServerUser) -> Result<()> {
    for dir in root.ancestors().skip(1) {
        let Ok(md) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = md.mode();
        let ok = mode & 0o001 != 0
            || (md.gid() == user.gid && mode & 0o010 != 0)
            || (md.uid() == user.uid && mode & 0o100 != 0);
        if !ok {
            return Err(Error::Invalid(format!(
                "the scratch server runs as the `{}` OS user, which cannot enter {} (mode {:o}); \
                 give a --scratch it can reach (e.g. under /var/tmp)",
                user.name,
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Connects over the scratch socket as the first role that exists.
fn connect(
    sock: &Path,
    port: u16,
    roles: &[String],
    dbname: &str,
) -> std::result::Result<(postgres::Client, String), String> {
    let mut last = String::new();
    for role in roles {
        let mut config = postgres::Config::new();
        config
            .host_path(sock)
            .port(port)
            .user(role)
            .dbname(dbname)
            .application_name("lifeboat pg verify")
            .connect_timeout(Duration::from_secs(10));
        match config.connect(postgres::NoTls) {
            Ok(c) => return Ok((c, role.clone())),
            Err(e) => {
                let role_missing = e
                    .as_db_error()
                    .is_some_and(|db| matches!(db.code().code(), "28000" | "28P01"));
                last = format!(
                    "connect to database {dbname} as {role} on port {port}: {}",
                    describe(&e)
                );
                if !role_missing {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// An error as `SQLSTATE: message` (plus detail and hint) when the server sent one.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => e.to_string(),
    }
}

fn first_value(msgs: &[postgres::SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// The last replayed position and commit time.
fn recovery_facts(
    client: &mut postgres::Client,
) -> std::result::Result<(Option<Lsn>, Option<jiff::Timestamp>), String> {
    let msgs = client
        .simple_query(
            "select pg_last_wal_replay_lsn()::text, \
             to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .map_err(|e| describe(&e))?;
    let row = msgs
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or("no row")?;
    let lsn = row.get(0).and_then(|s| s.parse::<Lsn>().ok());
    let ts = row.get(1).and_then(|s| s.parse::<jiff::Timestamp>().ok());
    Ok((lsn, ts))
}

/// Runs the validation queries in `opts.dbname`, each with the timeout as its
/// `statement_timeout`.
fn run_queries(scratch: &Scratch, role: &str, opts: &VerifyOptions) -> Vec<QueryResult> {
    if opts.queries.is_empty() {
        return Vec::new();
    }
    let failed = |sql: &str, error: String| QueryResult {
        sql: sql.to_string(),
        ok: false,
        columns: Vec::new(),
        rows: Vec::new(),
        row_count: 0,
        truncated: false,
        error: Some(error),
        duration_seconds: 0.0,
    };
    let port = scratch.server.as_ref().map_or(0, |s| s.port);
    let mut client = match connect(&scratch.sock(), port, &[role.to_string()], &opts.dbname) {
        Ok((c, _)) => c,
        Err(e) => return opts.queries.iter().map(|q| failed(q, e.clone())).collect(),
    };
    let secs = opts.timeout.as_secs().max(1);
    if let Err(e) = client.batch_execute(&format!("set statement_timeout = '{secs}s'")) {
        let e = describe(&e);
        return opts.queries.iter().map(|q| failed(q, e.clone())).collect();
    }
    let mut out = Vec::new();
    for sql in &opts.queries {
        let t = Instant::now();
        let result = client.simple_query(sql);
        let seconds = t.elapsed().as_secs_f64();
        match result {
            Ok(msgs) => {
                let mut q = QueryResult {
                    sql: sql.clone(),
                    ok: true,
                    columns: Vec::new(),
                    rows: Vec::new(),
                    row_count: 0,
                    truncated: false,
                    error: None,
                    duration_seconds: seconds,
                };
                for m in &msgs {
                    match m {
                        postgres::SimpleQueryMessage::RowDescription(cols) => {
                            q.columns = cols.iter().map(|c| c.name().to_string()).collect();
                        }
                        postgres::SimpleQueryMessage::Row(r) => {
                            q.row_count += 1;
                            if q.rows.len() < MAX_ROWS {
                                q.rows.push(
                                    (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect(),
                                );
                            } else {
                                q.truncated = true;
                            }
                        }
                        _ => {}
                    }
                }
                out.push(q);
            }
            Err(e) => {
                let mut q = failed(sql, describe(&e));
                q.duration_seconds = seconds;
                out.push(q);
                // A query that opened a transaction and failed leaves it aborted.
                let _ = client.batch_execute("rollback");
            }
        }
    }
    out
}

/// The log written since `from`.
fn read_from(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

fn tail(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| (*l).to_string())
        .collect()
}

/// Settings the server must raise to go on replaying, from PostgreSQL's "hot standby is
/// not possible because of insufficient parameter settings" and its DETAIL line
/// ("max_connections = 100 is a lower setting than on the primary server, where its value
/// was 150.").
fn insufficient_settings(log: &str) -> Vec<(String, String)> {
    const MARK: &str = "is a lower setting than on the primary server, where its value was ";
    let mut out: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        let Some(i) = line.find(MARK) else { continue };
        let Some(d) = line.find("DETAIL:") else {
            continue;
        };
        let lhs = line[d + "DETAIL:".len()..i].trim();
        let Some((name, _)) = lhs.split_once(" = ") else {
            continue;
        };
        let value: String = line[i + MARK.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let name = name.trim();
        if value.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        out.retain(|(n, _)| n != name);
        out.push((name.to_string(), value));
    }
    out
}

/// The last WARNING, FATAL or PANIC line of a server log, with its DETAIL line.
fn last_warning(log: &str) -> Option<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let i = lines
        .iter()
        .rposition(|l| l.contains("WARNING:") || l.contains("FATAL:") || l.contains("PANIC:"))?;
    let end = if lines.get(i + 1).is_some_and(|l| l.contains("DETAIL:")) {
        i + 1
    } else {
        i
    };
    let start = log.find(lines[i])?;
    let stop = log.find(lines[end])? + lines[end].len();
    Some(log[start..stop].trim())
}

/// `max_connections` and the other settings that a hot standby must not set lower than
/// its primary, at the values the backed-up cluster's pg_control holds. A data directory
/// without its postgresql.conf (Debian keeps it in /etc) would otherwise run on defaults
/// and pause recovery. Empty when `pg_controldata` cannot tell (the server then says why).
fn standby_minimums(bin: &Path, data: &Path) -> Vec<(String, String)> {
    let out = Command::new(bin.join("pg_controldata"))
        .arg("-D")
        .arg(data)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .stdin(Stdio::null())
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            tracing::warn!(
                "pg_controldata failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!("cannot run pg_controldata: {e}");
            return Vec::new();
        }
    };
    control_settings(&text)
}

fn control_settings(pg_controldata: &str) -> Vec<(String, String)> {
    const NAMES: &[(&str, &str)] = &[
        ("max_connections setting:", "max_connections"),
        ("max_worker_processes setting:", "max_worker_processes"),
        ("max_wal_senders setting:", "max_wal_senders"),
        ("max_prepared_xacts setting:", "max_prepared_transactions"),
        ("max_locks_per_xact setting:", "max_locks_per_transaction"),
    ];
    let mut out = Vec::new();
    for line in pg_controldata.lines() {
        for (label, name) in NAMES {
            if let Some(v) = line.strip_prefix(label) {
                let v = v.trim();
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    out.push(((*name).to_string(), v.to_string()));
                }
            }
        }
    }
    out
}

/// The last FATAL or PANIC line of a server log.
fn last_fatal(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(str::trim)
}

/// The WAL file a stopped recovery names: PostgreSQL's `could not restore file "X"`, or
/// a WAL file name in the last FATAL/PANIC line or in `pg wal-fetch`'s error.
fn wal_file_in(log: &str) -> Option<String> {
    const MARK: &str = "could not restore file \"";
    for line in log.lines().rev() {
        if let Some(i) = line.find(MARK) {
            let rest = &line[i + MARK.len()..];
            if let Some(end) = rest.find('"') {
                return Some(rest[..end].to_string());
            }
        }
    }
    log.lines()
        .rev()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:") || l.contains("wal-fetch"))
        .find_map(wal_name_token)
}

/// The first 24-hex-digit word in `line` (a WAL segment name).
fn wal_name_token(line: &str) -> Option<String> {
    line.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 24)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_damaged_wal_file_is_found_in_the_server_log() {
        let log = "\
2026-01-01 00:00:00 UTC [9] LOG:  restored log file \"000000010000000000000002\" from archive
error: pg wal-fetch 000000010000000000000003: wal/orders/000000010000000000000003: damaged
hint: recovery stops here instead of skipping WAL
2026-01-01 00:00:00 UTC [9] FATAL:  could not restore file \"000000010000000000000003\" from archive: child process exited with exit code 126
2026-01-01 00:00:00 UTC [8] LOG:  startup process (PID 9) exited with exit code 1
";
        assert_eq!(
            wal_file_in(log).as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(
            last_fatal(log).map(|l| l.contains("could not restore")),
            Some(true)
        );
        // Without PostgreSQL's line, wal-fetch's error names it.
        let log = "error: pg wal-fetch 00000002000000000000000A: damaged\n";
        assert_eq!(
            wal_file_in(log).as_deref(),
            Some("00000002000000000000000A")
        );
        assert_eq!(wal_file_in("LOG: all fine\n"), None);
    }

    #[test]
    fn standby_minimums_come_from_pg_controldata() {
        let text = "\
pg_control version number:            1300
wal_level setting:                    replica
max_connections setting:              250
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
";
        assert_eq!(
            control_settings(text),
            [
                ("max_connections", "250"),
                ("max_worker_processes", "8"),
                ("max_wal_senders", "10"),
                ("max_prepared_transactions", "0"),
                ("max_locks_per_transaction", "64"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let log = "LOG: x\nWARNING:  hot standby is not possible because of insufficient parameter settings\nDETAIL:  max_connections = 100 is a lower setting than on the primary server, where its value was 250.\nLOG: y\n";
        let w = last_warning(log).unwrap();
        assert!(w.starts_with("WARNING:") && w.ends_with("was 250."), "{w}");
        assert_eq!(
            insufficient_settings(log),
            [("max_connections".to_string(), "250".to_string())]
        );
        assert!(insufficient_settings("LOG: recovery has paused\n").is_empty());
    }

    #[test]
    fn scratch_dirs_must_be_empty_and_are_removed_unless_kept() {
        let base = tempfile::tempdir().unwrap();
        let full = base.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("x"), "x").unwrap();
        let e = Scratch::prepare(Some(&full), false).err().unwrap();
        assert!(e.is_usage() && e.to_string().contains("not empty"), "{e}");
        let file = full.join("x");
        assert!(Scratch::prepare(Some(&file), false).is_err());

        // A missing dir is created and removed whole.
        let new = base.path().join("a/b");
        let s = Scratch::prepare(Some(&new), false).unwrap();
        std::fs::create_dir(s.data()).unwrap();
        drop(s);
        assert!(!new.exists());
        assert!(base.path().join("a").exists());
        // An existing empty dir is emptied, not removed.
        let empty = base.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let s = Scratch::prepare(Some(&empty), false).unwrap();
        std::fs::create_dir(s.data()).unwrap();
        std::fs::write(s.log_path(), "log").unwrap();
        drop(s);
        assert!(empty.exists());
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        // Kept.
        let s = Scratch::prepare(Some(&empty), true).unwrap();
        std::fs::create_dir(s.data()).unwrap();
        drop(s);
        assert!(empty.join("data").exists());
        // Too long for a socket.
        let long = base.path().join("x".repeat(100));
        let e = Scratch::prepare(Some(&long), false).err().unwrap();
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(!long.exists());
    }

    #[test]
    fn binaries_follow_the_backup_major_version() {
        let opts = VerifyOptions {
            source: "orders".into(),
            target: RecoveryTarget::Latest,
            timeline: None,
            queries: vec![],
            dbname: "postgres".into(),
            scratch: None,
            timeout: Duration::from_secs(1),
            keep: false,
            backup: None,
            restore_command: String::new(),
            server_env: vec![],
            bin_dir: None,
            files: RestoreOptions::default(),
        };
        let e = bin_dir(&opts, 90_624).err().unwrap();
        assert!(
            e.to_string()
                .contains("/usr/lib/postgresql/9.6/bin/postgres"),
            "{e}"
        );
        let e = bin_dir(&opts, 990_001).err().unwrap();
        assert!(e.to_string().contains("postgresql-99"), "{e}");
    }
}
