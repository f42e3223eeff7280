//! Command-line arguments (clap). Never here: behaviour.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use lifeboat_types::{parse_duration_between, DurationError, MAX_DURATION};

/// Every time-valued flag reads the one duration syntax (`250ms`, `30s`, `1h`, `7d`) of
/// `lifeboat_types::parse_duration`, as `lifeboat.toml` does; clap prints the error after
/// the flag's name.
fn duration_flag(min: Duration, max: Duration, text: &str) -> Result<Duration, String> {
    parse_duration_between(text, min, max).map_err(|e| format!("{e} (fix: {})", e.fix()))
}

/// A duration from 1ms to an hour (flush intervals).
fn duration_up_to_an_hour(text: &str) -> Result<Duration, String> {
    duration_flag(Duration::from_millis(1), Duration::from_secs(3600), text)
}

/// A duration flag that used to take a plain number of seconds: the number is still read
/// as seconds (deprecated; the command warns once with [`SecondsOr::warn_if_plain`]).
#[derive(Debug, Clone)]
pub struct SecondsOr {
    /// The duration.
    pub value: Duration,
    /// The plain number given, when it was one.
    pub plain: Option<String>,
}

impl SecondsOr {
    /// Prints a deprecation warning on stderr when the flag was given a plain number.
    pub fn warn_if_plain(&self, flag: &str) {
        if let Some(n) = &self.plain {
            eprintln!(
                "warning: {flag} {n}: a plain number of seconds is deprecated (fix: write {n}s; durations take a unit: 250ms, 30s, 1h, 7d)"
            );
        }
    }
}

/// Parses a [`SecondsOr`] within `min..=max`.
fn seconds_or_duration(min: Duration, max: Duration, text: &str) -> Result<SecondsOr, String> {
    match parse_duration_between(text, min, max) {
        Ok(value) => Ok(SecondsOr { value, plain: None }),
        Err(DurationError::NoUnit { .. }) => duration_flag(min, max, &format!("{}s", text.trim()))
            .map(|value| SecondsOr {
                value,
                plain: Some(text.trim().to_string()),
            }),
        Err(e) => Err(format!("{e} (fix: {})", e.fix())),
    }
}

/// `--wal-wait`: zero to a week; a plain number is seconds (deprecated).
fn wal_wait(text: &str) -> Result<SecondsOr, String> {
    seconds_or_duration(Duration::ZERO, MAX_DURATION, text)
}

/// `pg verify --timeout`: 1s to a week; a plain number is seconds (deprecated).
fn verify_timeout(text: &str) -> Result<SecondsOr, String> {
    seconds_or_duration(Duration::from_secs(1), MAX_DURATION, text)
}

/// Lifeboat: disaster recovery for online shops. Deduplicated, encrypted, verifiable
/// backups on local disk or S3.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, max_term_width = 100)]
pub struct Args {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, ClapArgs)]
pub struct Global {
    /// Repository: a local path or s3://BUCKET/PREFIX (S3 settings from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(
        short = 'r',
        long,
        env = "LIFEBOAT_REPOSITORY",
        global = true,
        hide_env_values = true
    )]
    pub repo: Option<String>,
    /// Read the password from this file (first line). Or set LIFEBOAT_PASSWORD.
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// More log output (-v, -vv). LIFEBOAT_LOG (e.g. `debug`, `warn,lifeboat_server=debug`)
    /// overrides it (docs/logging.md).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr: `text`, or `json` (one JSON object per event and line, for
    /// journald or Loki). Errors and command output keep their own format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LIFEBOAT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How log events are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event and line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(InitCmd),
    /// Back up files and directories (or a stream from stdin) into a new snapshot.
    Backup(BackupCmd),
    /// List snapshots.
    Snapshots(SnapshotsCmd),
    /// List the files of a snapshot: SNAPSHOT[:PATH].
    Ls(LsCmd),
    /// Show what changed between two snapshots.
    Diff(DiffCmd),
    /// Show repository statistics.
    Stats(StatsCmd),
    /// Restore a snapshot (or a path inside it) into a directory.
    Restore(RestoreCmd),
    /// Write one file of a snapshot to stdout: SNAPSHOT:PATH.
    Dump(DumpCmd),
    /// Verify the repository; with --read-data, every byte.
    Check(CheckCmd),
    /// Remove snapshots by a retention policy.
    Forget(ForgetCmd),
    /// Delete data no snapshot needs (safe beside running backups).
    Prune(PruneCmd),
    /// Copy snapshots to another repository (the DR copy), incrementally.
    Copy(CopyCmd),
    /// Manage the passwords (keys) of a repository.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Show the repository format version and migrate it to the current one.
    Migrate(MigrateCmd),
    /// PostgreSQL: base backups, WAL archiving and streaming, point-in-time restore.
    #[command(subcommand)]
    Pg(PgCmd),
    /// The daemon's config file (lifeboat.toml).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The main job on embedded defaults: back up a directory into a local repository,
    /// list snapshots, restore, and verify the restore bit for bit.
    Demo(DemoCmd),
    /// Run the daemon: health checks, automatic or approved failover, the proxy, the API.
    Run(crate::ha::RunCmd),
    /// Show the cluster: each member's role, state, PID, LSNs and lag; the coordinator;
    /// the proxy; the last failover.
    Status(crate::ha::StatusCmd),
    /// Failover commands (manual mode).
    #[command(subcommand)]
    Failover(crate::ha::FailoverCmd),
    /// A planned change of primary, with no data loss.
    Switchover(crate::ha::SwitchoverCmd),
    /// Pause (on) or resume (off) automatic failover, rejoin and recovery.
    Maintenance(crate::ha::MaintenanceCmd),
    /// Create or adopt the config's PostgreSQL cluster.
    #[command(subcommand)]
    Cluster(crate::ha::ClusterCmd),
    /// A complete local estate on embedded defaults: a repository, a two-member sync
    /// PostgreSQL cluster, the daemon with its proxy and API.
    Quickstart(crate::ha::QuickstartCmd),
    /// Print a shell completion script on stdout (e.g. `lifeboat completions bash >
    /// /etc/bash_completion.d/lifeboat`).
    Completions(CompletionsCmd),
    /// Write a man page per command into a directory (for packages).
    #[command(hide = true)]
    Manpages(ManpagesCmd),
}

/// `completions`.
#[derive(Debug, ClapArgs)]
pub struct CompletionsCmd {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `manpages`.
#[derive(Debug, ClapArgs)]
pub struct ManpagesCmd {
    /// Directory to write `lifeboat.1`, `lifeboat-backup.1`, … into (created if missing).
    pub dir: PathBuf,
}

/// `demo`.
#[derive(Debug, ClapArgs)]
pub struct DemoCmd {
    /// Directory to back up (default: a generated sample shop tree).
    pub source: Option<PathBuf>,
    /// Where the local repository lives (default: ./lifeboat-demo/repo, or --repo).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// `init`.
#[derive(Debug, ClapArgs)]
pub struct InitCmd {
    /// Share blob ids and chunking with this repository, so `copy` can move data between
    /// them (the source's password: --from-password-file or LIFEBOAT_FROM_PASSWORD,
    /// default the same password).
    #[arg(long, value_name = "URL")]
    pub copy_params_from: Option<String>,
    /// Password file of the --copy-params-from repository.
    #[arg(long, env = "LIFEBOAT_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Argon2id memory cost of the key (e.g. 64MiB). Lower only for tests.
    #[arg(long, default_value = "19MiB")]
    pub kdf_memory: String,
    /// zstd compression level (0 = off). 2 keeps the repository at or below restic's size
    /// on our benchmark data for ~5 % more CPU than level 1 (BENCHMARKS.md).
    #[arg(long, default_value_t = 2)]
    pub compression: i32,
    /// Target pack file size (e.g. 16MiB).
    #[arg(long, default_value = "16MiB")]
    pub pack_size: String,
}

/// `backup`.
#[derive(Debug, ClapArgs)]
pub struct BackupCmd {
    /// Files and directories to back up; each becomes an entry of the snapshot's root.
    #[arg(required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    pub host: Option<String>,
    /// Leave out paths matching this glob (repeatable), e.g. '*.tmp' or '/srv/shop/cache'.
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Read the data from stdin (e.g. `pg_dump shop | lifeboat backup --stdin --stdin-filename shop.sql`).
    #[arg(long, conflicts_with = "paths")]
    pub stdin: bool,
    /// File name of the stdin data in the snapshot.
    #[arg(long, default_value = "stdin")]
    pub stdin_filename: String,
    /// Use this snapshot as parent instead of the newest with the same host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot.
    #[arg(long)]
    pub force: bool,
}

/// Which snapshots a command considers (restic's semantics, `lifeboat_repo::select`):
/// `latest` is the newest snapshot that passes them, an id must pass them too.
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct SnapshotFilterArgs {
    /// Only snapshots with these tags: `--tag a,b` needs both, `--tag a --tag b` either.
    #[arg(long = "tag", value_name = "TAG[,TAG...]")]
    pub tags: Vec<String>,
    /// Only snapshots of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots whose backed-up paths include this one (repeatable: all of them);
    /// relative paths are taken from the current directory, as `backup` does. A stdin
    /// backup's path is /NAME (its --stdin-filename).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `snapshots`.
#[derive(Debug, ClapArgs)]
pub struct SnapshotsCmd {
    /// Which snapshots to list.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `ls`.
#[derive(Debug, ClapArgs)]
pub struct LsCmd {
    /// SNAPSHOT[:PATH]; SNAPSHOT is an id, a unique prefix, or `latest` (the newest that
    /// passes --tag/--host/--path).
    pub target: String,
    /// Show mode, size and time.
    #[arg(short, long)]
    pub long: bool,
    /// Which snapshots `latest` (or an id) may be.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `diff`.
#[derive(Debug, ClapArgs)]
pub struct DiffCmd {
    /// The older snapshot.
    pub from: String,
    /// The newer snapshot.
    pub to: String,
    /// Which snapshots `latest` (or an id) may be, for both.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `stats`.
#[derive(Debug, ClapArgs)]
pub struct StatsCmd {}

/// `restore`.
#[derive(Debug, ClapArgs)]
pub struct RestoreCmd {
    /// SNAPSHOT[:PATH]; SNAPSHOT is an id, a unique prefix, or `latest` (the newest that
    /// passes --tag/--host/--path).
    pub target_snapshot: String,
    /// Directory to restore into (created if missing). It must be empty unless --overwrite.
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore into a directory that is not empty: replace what the snapshot has (files
    /// whose contents already match are kept), leave everything else.
    #[arg(long)]
    pub overwrite: bool,
    /// With --overwrite: also delete what the snapshot does not have, so the target becomes
    /// the snapshot.
    #[arg(long, requires = "overwrite")]
    pub delete: bool,
    /// Which snapshots `latest` (or an id) may be.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `dump`.
#[derive(Debug, ClapArgs)]
pub struct DumpCmd {
    /// SNAPSHOT:PATH of a file.
    pub target: String,
    /// Which snapshots `latest` (or an id) may be.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `check`.
#[derive(Debug, ClapArgs)]
pub struct CheckCmd {
    /// Read and verify every pack (and WAL object) in full.
    #[arg(long)]
    pub read_data: bool,
    /// Read and verify a random N% of the packs (and WAL objects), each in full (e.g. 10%).
    /// With --read-data too, the subset is what is read.
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
}

/// `forget`.
#[derive(Debug, ClapArgs)]
pub struct ForgetCmd {
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// … days.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// … weeks.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// … months.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// … years.
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag")]
    pub keep_tags: Vec<String>,
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Apply the policy only to these snapshots (the others are kept).
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// `prune`.
#[derive(Debug, ClapArgs)]
pub struct PruneCmd {
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `copy`.
#[derive(Debug, ClapArgs)]
pub struct CopyCmd {
    /// Target repository (created, sharing blob ids, when it does not exist).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Password file of the target (or LIFEBOAT_TO_PASSWORD; default: the same password).
    #[arg(long, env = "LIFEBOAT_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Snapshots to copy (default: all that pass --tag/--host/--path).
    pub snapshots: Vec<String>,
    /// Which snapshots to copy (and which `latest` or an id may be).
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    /// Skip reading back each new pack from the target.
    #[arg(long)]
    pub no_verify: bool,
}

/// `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a config file and report every mistake with file, line, column and the fix
    /// (exit 0 valid, 2 not). Also warns about what is valid but unsafe: secrets other
    /// users can read, a config file others can change, an API open beyond this host.
    Validate {
        /// The config file.
        #[arg(long, env = "LIFEBOAT_CONFIG", default_value = "lifeboat.toml")]
        config: PathBuf,
        /// Fail (exit 2) on warnings too.
        #[arg(long)]
        strict: bool,
    },
}

/// `key`.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Add a password (from --new-password-file or LIFEBOAT_NEW_PASSWORD), or generate a
    /// machine key with --generate.
    Add {
        /// File holding the new password.
        #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", conflicts_with = "generate")]
        new_password_file: Option<PathBuf>,
        /// Argon2id memory cost.
        #[arg(long, default_value = "19MiB")]
        kdf_memory: String,
        /// Generate a random 256-bit password into this new file (mode 0600) and add it with
        /// the cheapest key derivation: a random secret needs no stretching, and commands
        /// that run once per WAL file (`pg wal-push`) then open the repository in
        /// microseconds. Keep the file like any password file.
        #[arg(long, value_name = "FILE")]
        generate: Option<PathBuf>,
    },
    /// List the keys.
    List,
    /// Remove a key by id (or unique prefix).
    Remove {
        /// The key id.
        id: String,
    },
}

/// `migrate`.
#[derive(Debug, ClapArgs)]
pub struct MigrateCmd {}

/// `pg`: continuous protection of a PostgreSQL cluster (docs/postgres.md).
#[derive(Debug, Subcommand)]
pub enum PgCmd {
    /// Take a base backup of a running cluster (pg_backup_start/stop; reads the data
    /// directory, stores only changed chunks).
    Backup(PgBackupCmd),
    /// archive_command: store one WAL file (`%p`). Exit 0 stored or already there with the
    /// same content; non-zero otherwise (PostgreSQL retries).
    WalPush(PgWalPushCmd),
    /// restore_command: write WAL file `%f` to `%p`. Exit 0 fetched; 1 not in the
    /// repository; 126 damaged or unreadable (PostgreSQL stops recovery instead of
    /// skipping WAL).
    WalFetch(PgWalFetchCmd),
    /// Restore a base backup and prepare recovery to a point in time.
    Restore(PgRestoreCmd),
    /// List base backups and the WAL available (ranges and gaps).
    Backups(PgBackupsCmd),
    /// List the PostgreSQL sources the repository holds base backups or WAL of.
    Sources(PgSourcesCmd),
    /// List a server's replication slots with the WAL each holds back; warn (exit 1) about
    /// an unused slot whose WAL piles up.
    Slots(PgSlotsCmd),
    /// The background pusher of `pg wal-push --async` (started by it; not for people).
    #[command(hide = true)]
    ArchivePusher(PgPusherCmd),
    /// The background prefetcher of `pg wal-fetch --prefetch` (started by it).
    #[command(hide = true)]
    WalPrefetcher(PgPrefetcherCmd),
    /// Receive WAL continuously over the replication protocol (with a replication slot)
    /// and make it durable in the repository every --flush-interval: RPO of a fraction of
    /// a second. Runs until SIGINT/SIGTERM; reconnects and follows timeline switches.
    Stream(PgStreamCmd),
    /// Restore test: restore into a scratch directory, start PostgreSQL on a free port,
    /// wait for recovery, run validation queries, report durations and the RPO achieved,
    /// clean up.
    Verify(PgVerifyCmd),
}

/// The source every `pg` command names.
#[derive(Debug, ClapArgs)]
pub struct PgSource {
    /// Which cluster, inside the repository (like pgBackRest's stanza): letters, digits,
    /// '_', '.', '-'.
    #[arg(long, env = "LIFEBOAT_PG_SOURCE")]
    pub source: String,
}

/// `pg backup`.
#[derive(Debug, ClapArgs)]
pub struct PgBackupCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// Connection string of the cluster (libpq key=value or postgresql:// URL).
    #[arg(long, env = "LIFEBOAT_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// The data directory, when it differs from the server's data_directory setting.
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// How long to wait for the WAL the backup needs to reach the repository: a duration
    /// up to a week (e.g. 30s, 5m, 1h; a plain number means seconds, deprecated).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = wal_wait)]
    pub wal_wait: SecondsOr,
}

/// `pg wal-push`.
#[derive(Debug, ClapArgs)]
pub struct PgWalPushCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// The WAL file (`%p`).
    pub path: PathBuf,
    /// Asynchronous archiving: a background pusher pushes every ready segment, several at
    /// a time, and this call answers from the spool (like pgBackRest's archive-async).
    #[arg(long, requires = "spool")]
    pub r#async: bool,
    /// Spool directory for --async (local, writable by the postgres user).
    #[arg(long, env = "LIFEBOAT_SPOOL")]
    pub spool: Option<PathBuf>,
    /// Segments the background pusher pushes at a time.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// `pg wal-fetch`.
#[derive(Debug, ClapArgs)]
pub struct PgWalFetchCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// The WAL file name (`%f`).
    pub name: String,
    /// Where to write it (`%p`).
    pub dest: PathBuf,
    /// Fetch this many segments ahead in the background, into --spool, so replay does not
    /// wait for one fetch at a time (0: off).
    #[arg(long, default_value_t = 0, requires = "spool")]
    pub prefetch: usize,
    /// Spool directory for --prefetch.
    #[arg(long)]
    pub spool: Option<PathBuf>,
}

/// `pg archive-pusher` (started by `pg wal-push --async`).
#[derive(Debug, ClapArgs)]
pub struct PgPusherCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// PostgreSQL's pg_wal directory.
    #[arg(long)]
    pub pg_wal: PathBuf,
    /// The spool directory.
    #[arg(long)]
    pub spool: PathBuf,
    /// Segments pushed at a time.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// `pg wal-prefetcher` (started by `pg wal-fetch --prefetch`).
#[derive(Debug, ClapArgs)]
pub struct PgPrefetcherCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// The spool directory.
    #[arg(long)]
    pub spool: PathBuf,
    /// Segments kept ahead of recovery.
    #[arg(long, default_value_t = 16)]
    pub ahead: usize,
    /// The cluster's WAL segment size in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub segment_size: u64,
}

/// Where recovery stops, and along which timeline (`pg restore` and `pg verify` take the
/// same).
#[derive(Debug, ClapArgs)]
pub struct RecoveryPoint {
    /// The target: at most one.
    #[command(flatten)]
    pub target: RecoveryTargetFlags,
    /// recovery_target_timeline: latest (default), current, or a number.
    #[arg(long)]
    pub timeline: Option<String>,
}

/// The recovery target flags, of which at most one may be given.
#[derive(Debug, ClapArgs)]
#[group(id = "point", multiple = false)]
pub struct RecoveryTargetFlags {
    /// Recover to just before this time: '2026-11-30 14:03:27+00' (the offset is required).
    #[arg(long)]
    pub to_time: Option<String>,
    /// Recover to this WAL position (e.g. 0/16B3748).
    #[arg(long)]
    pub to_lsn: Option<String>,
    /// Recover through this transaction id.
    #[arg(long)]
    pub to_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long)]
    pub to_name: Option<String>,
    /// Recover all WAL in the repository (the default).
    #[arg(long)]
    pub latest: bool,
    /// Recover only to the end of the base backup.
    #[arg(long)]
    pub immediate: bool,
}

/// `pg restore`.
#[derive(Debug, ClapArgs)]
pub struct PgRestoreCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// The data directory to create (empty or missing; or existing with --delta).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Where recovery stops.
    #[command(flatten)]
    pub point: RecoveryPoint,
    /// The port the restored cluster listens on (`port` in postgresql.auto.conf): a number,
    /// or `auto` for a free one; for a restore beside a running cluster. Default: the
    /// backed-up configuration's.
    #[arg(long, value_name = "PORT|auto")]
    pub port: Option<String>,
    /// What the server does at the target: promote (default), pause, shutdown.
    #[arg(long, default_value = "promote", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: String,
    /// Rewrite only what differs in an existing data directory (files are compared by
    /// content); delete what the backup does not have.
    #[arg(long)]
    pub delta: bool,
    /// Use this base backup (snapshot id or prefix) instead of the newest that fits.
    #[arg(long)]
    pub backup: Option<String>,
    /// WAL segments restore_command fetches ahead of replay (0: one at a time).
    #[arg(long, default_value_t = 16)]
    pub prefetch: usize,
    /// The restored cluster is the new production: keep the backed-up archive settings, so
    /// that it archives into the source it was restored from. Without this (or
    /// --archive-to) it archives nowhere.
    #[arg(long, conflicts_with = "archive_to")]
    pub promote_as_source: bool,
    /// Archive the restored cluster's WAL into this other source (a drill that keeps its
    /// WAL) with `lifeboat pg wal-push`.
    #[arg(long, value_name = "SOURCE")]
    pub archive_to: Option<String>,
}

/// `pg backups`.
#[derive(Debug, ClapArgs)]
pub struct PgBackupsCmd {
    #[command(flatten)]
    pub source: PgSource,
}

/// `pg sources`.
#[derive(Debug, ClapArgs)]
pub struct PgSourcesCmd {}

/// `pg slots`.
#[derive(Debug, ClapArgs)]
pub struct PgSlotsCmd {
    /// Connection string of the server.
    #[arg(long, env = "LIFEBOAT_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// An unused slot holding back more WAL than this is reported (exit 1).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub max_retained: lifeboat_types::ByteSize,
}

/// `pg verify`.
#[derive(Debug, ClapArgs)]
pub struct PgVerifyCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// Where recovery stops (as for `pg restore`).
    #[command(flatten)]
    pub point: RecoveryPoint,
    /// A validation query (repeatable), e.g. 'select max(created_at) from orders'; its
    /// result is reported. A query that fails fails the verification.
    #[arg(long = "sql", value_name = "QUERY")]
    pub sql: Vec<String>,
    /// Database the queries run in.
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// Where the scratch data directory goes (default: a new temp dir); it must not hold a
    /// running cluster.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Give up when restore plus recovery take longer than this: a duration from 1s to a
    /// week (e.g. 30m, 2h; a plain number means seconds, deprecated).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = verify_timeout)]
    pub timeout: SecondsOr,
    /// Keep the scratch directory (and stop the server) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Use this base backup (snapshot id or prefix) instead of the newest that fits.
    #[arg(long)]
    pub backup: Option<String>,
}

/// `pg stream`.
#[derive(Debug, ClapArgs)]
pub struct PgStreamCmd {
    #[command(flatten)]
    pub source: PgSource,
    /// Connection string of the primary (a role with REPLICATION; `replication` is added).
    #[arg(long, env = "LIFEBOAT_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Replication slot (default lifeboat_<source>), created when missing.
    #[arg(long)]
    pub slot: Option<String>,
    /// Stream without a slot (the server may remove WAL before it is received).
    #[arg(long, conflicts_with = "slot")]
    pub no_slot: bool,
    /// Do not stream: drop the slot (--slot, default lifeboat_<source>) so the server can
    /// recycle the WAL it holds back, then exit. For a `pg stream` stopped for good.
    #[arg(long, conflicts_with = "no_slot")]
    pub drop_slot: bool,
    /// How often received WAL is made durable: a duration from 1ms to 1h (e.g. 200ms, 1s).
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = duration_up_to_an_hour)]
    pub flush_interval: Duration,
    /// Deprecated spelling of --flush-interval, in milliseconds.
    #[arg(long, hide = true, conflicts_with = "flush_interval", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub flush_interval_ms: Option<u64>,
    /// Make every received batch durable at once (use with
    /// synchronous_standby_names = 'lifeboat_<source>' for no loss of acknowledged commits).
    #[arg(long)]
    pub synchronous: bool,
}
