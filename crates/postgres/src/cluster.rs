//! PostgreSQL cluster operations for high availability: the steps the failover controller
//! (ADR 0017) drives on the members of a primary/standby cluster.
//!
//! Lives here: [`Member`] (a member's name, address and data directory), [`Pg`] (how to
//! reach and run PostgreSQL 15) and its operations: [`Pg::init_primary`], [`Pg::adopt`],
//! [`Pg::clone_standby`], [`Pg::promote`], [`Pg::start`], [`Pg::stop`], [`Pg::status`],
//! [`Pg::fence`], [`Pg::repoint`], [`Pg::rejoin`], [`Pg::set_synchronous_standbys`],
//! [`Pg::set_generation`]. Every operation is synchronous and bounded by a timeout from
//! [`Timeouts`]; the async daemon runs them on a blocking pool. Errors ([`ClusterError`])
//! name the member, the command and the last lines of the server log or of the command's
//! stderr.
//!
//! Operations that touch files (`init_primary`, `clone_standby`, `start`, `stop`, `fence`,
//! `rejoin`) need the member's data directory on this host; the SQL ones (`promote`,
//! `status`, `repoint`, `set_*`) work over the network. When this process runs as root,
//! server-side programs run as the data directory's owner (else `postgres`) through
//! `runuser -u USER --`, and files written into a data directory are given to its owner.
//! The server log of a member is the file beside its data directory: `<data_dir>.log`.
//!
//! Never here: deleting a data directory (a failed rewind moves it aside, and it stays there
//! for a human or a later cleanup to remove), deciding *whether* to fail over (that is
//! `lifeboat-failover`'s state machine), passwords in errors, logs or command lines (they
//! go to libpq through `PGPASSWORD` and are redacted from captured output).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lifeboat_types::{Lsn, Secret};
use postgres::SimpleQueryMessage;

/// Where Debian's `postgresql-15` puts the server programs.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The OS user that runs PostgreSQL when this process is root and no data directory says
/// otherwise.
pub const DEFAULT_OS_USER: &str = "postgres";

/// The prefix of the physical replication slots Lifeboat creates for its standbys.
pub const SLOT_PREFIX: &str = "lifeboat_";

/// How many lines of a server log (or of a command's stderr) an error carries.
const LOG_LINES: usize = 20;

/// `wal_keep_size` (MB) while pg_rewind runs crash recovery on its target: all of it.
const KEEP_ALL_WAL_MB: u32 = 1 << 30;

/// How often waits look again.
const POLL: Duration = Duration::from_millis(25);

/// How often a running command is checked for completion.
const CMD_POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------
// Errors

/// The last lines of a server log (or of a command's stderr), shown under an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The file the lines come from; `None` for a command's own output.
    pub path: Option<PathBuf>,
    /// The lines, oldest first.
    pub lines: Vec<String>,
}

impl fmt::Display for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return Ok(());
        }
        match &self.path {
            Some(p) => write!(f, "\nlast lines of {}:", p.display())?,
            None => write!(f, "\noutput:")?,
        }
        for l in &self.lines {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// A failed cluster operation. Every variant names the member; none carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A program (initdb, pg_ctl, pg_basebackup, pg_rewind, pg_controldata) failed.
    #[error("member {member}: {command} failed: {detail}{log}")]
    Command {
        /// The member's name.
        member: String,
        /// The program and what it was asked to do (`pg_ctl start`).
        command: String,
        /// Exit status and the last lines of its stderr.
        detail: String,
        /// The server log's last lines.
        log: Box<LogTail>,
    },
    /// An operation did not finish in time (a program was killed, a state never came).
    #[error("member {member}: {what} did not finish within {:.1} s{detail}{log}", after.as_secs_f64())]
    Timeout {
        /// The member's name.
        member: String,
        /// What was waited for.
        what: String,
        /// The timeout.
        after: Duration,
        /// The last thing observed (starts with `: ` when present).
        detail: String,
        /// The server log's last lines.
        log: Box<LogTail>,
    },
    /// A connection or a statement failed.
    #[error("member {member} ({target}): {what}: {message}")]
    Sql {
        /// The member's name.
        member: String,
        /// `host:port`.
        target: String,
        /// What was being done (never the statement when it holds a password).
        what: String,
        /// SQLSTATE, when the server sent an error.
        code: Option<String>,
        /// The server's message, or the client's.
        message: String,
    },
    /// A local file or directory could not be read or written.
    #[error("member {member}: {path}: {source}")]
    Io {
        /// The member's name.
        member: String,
        /// The path and what was done to it.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL program is missing.
    #[error(
        "{path} not found: install PostgreSQL 15 (`cargo xtask setup`, package postgresql-15) \
         or point Lifeboat at its bin directory"
    )]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An existing cluster lacks what replication and rewinding need.
    #[error("member {member} cannot take part in failover:{}", list(problems))]
    Unusable {
        /// The member's name.
        member: String,
        /// Each problem with the change that fixes it.
        problems: Vec<String>,
    },
    /// `promote` on a member that is not in recovery.
    #[error("member {member} is not a standby (not in recovery): nothing to promote")]
    AlreadyPrimary {
        /// The member's name.
        member: String,
    },
    /// A primary was needed and the member is in recovery.
    #[error("member {member} is a standby (in recovery), not a primary")]
    NotPrimary {
        /// The member's name.
        member: String,
    },
    /// The member must be stopped for this and it runs.
    #[error("member {member} is running (postmaster {pid}): {hint}")]
    StillRunning {
        /// The member's name.
        member: String,
        /// The postmaster's PID.
        pid: u32,
        /// What to do first.
        hint: &'static str,
    },
    /// The member carries a higher generation than the one being written.
    #[error(
        "member {member} already carries generation {current}; refusing to write the older {given}"
    )]
    StaleGeneration {
        /// The member's name.
        member: String,
        /// The generation it carries.
        current: u64,
        /// The generation that was to be written.
        given: u64,
    },
    /// Neither pg_rewind nor the re-clone could make the old primary a standby. Its data
    /// directory is back where it was.
    #[error("member {member}: rejoin failed: pg_rewind: {rewind}; then the re-clone: {clone}")]
    Rejoin {
        /// The member's name.
        member: String,
        /// Why pg_rewind (or the rewound standby) failed.
        rewind: String,
        /// Why the re-clone failed.
        #[source]
        clone: Box<ClusterError>,
    },
    /// A standby cannot follow a primary: it has WAL past the point where the primary's
    /// timeline forked (it received writes the new primary never got). Rejoin it instead
    /// ([`Pg::rejoin`] rewinds it).
    #[error(
        "member {member} cannot stream from {primary}: it has WAL the new primary's timeline \
         does not (server said: {line}); fence it and rejoin it (pg_rewind) instead"
    )]
    Diverged {
        /// The standby's name.
        member: String,
        /// The primary's name.
        primary: String,
        /// The server log line that says so.
        line: String,
    },
    /// Arguments that cannot work (a bad member name, an unknown owner, …).
    #[error("{0}")]
    Invalid(String),
}

fn list(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

impl ClusterError {
    /// Whether trying again later can help: timeouts, and connections that failed before
    /// the server answered or while it started up or shut down.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Timeout { .. } => true,
            ClusterError::Sql { code: None, .. } => true,
            ClusterError::Sql { code: Some(c), .. } => {
                c.starts_with("08") || c == "57P03" || c == "57P01" || c == "53300"
            }
            _ => false,
        }
    }

    /// The member the error is about, when there is one.
    pub fn member(&self) -> Option<&str> {
        match self {
            ClusterError::Command { member, .. }
            | ClusterError::Timeout { member, .. }
            | ClusterError::Sql { member, .. }
            | ClusterError::Io { member, .. }
            | ClusterError::Unusable { member, .. }
            | ClusterError::AlreadyPrimary { member }
            | ClusterError::NotPrimary { member }
            | ClusterError::StillRunning { member, .. }
            | ClusterError::StaleGeneration { member, .. }
            | ClusterError::Rejoin { member, .. }
            | ClusterError::Diverged { member, .. } => Some(member),
            ClusterError::MissingBinary { .. } | ClusterError::Invalid(_) => None,
        }
    }
}

/// Shorthand for results of cluster operations.
pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

// ---------------------------------------------------------------------------------------
// Inputs

/// One member of a cluster as the operations see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member's name: 1–63 ASCII letters, digits, `-` or `_`. It is the standby's
    /// `application_name` (what `synchronous_standby_names` lists) and names its slot.
    pub name: String,
    /// The address others connect to (a host name, an IP address, or a socket directory
    /// starting with `/`).
    pub host: String,
    /// The TCP port it listens on.
    pub port: u16,
    /// Its data directory (only used on the member's own host).
    pub data_dir: PathBuf,
}

impl Member {
    /// A member named `name` at `host:port` with its data in `data_dir`.
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Member {
            name: name.into(),
            host: host.into(),
            port,
            data_dir: data_dir.into(),
        }
    }

    /// The physical replication slot a primary keeps for this member as a standby:
    /// `lifeboat_` + the name in lower case with `-` as `_` (names differing only in case
    /// or in `-`/`_` share a slot, so keep them apart in the config).
    pub fn slot_name(&self) -> String {
        let mut s = String::from(SLOT_PREFIX);
        for c in self.name.chars() {
            let c = c.to_ascii_lowercase();
            s.push(if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            });
        }
        s.truncate(63);
        s
    }

    /// The server log: the file `<data_dir>.log` beside the data directory (outside it,
    /// so `pg_basebackup` and `pg_rewind` never copy one member's log onto another).
    pub fn log_path(&self) -> PathBuf {
        let normal: PathBuf = self.data_dir.components().collect();
        let mut s = normal.into_os_string();
        s.push(".log");
        PathBuf::from(s)
    }

    /// The password file of the member as a standby: `<data_dir>.pgpass` beside the data
    /// directory. `primary_conninfo` names it (`passfile=`) instead of holding the
    /// password, which PostgreSQL would print into its log on every reload.
    pub fn passfile_path(&self) -> PathBuf {
        let normal: PathBuf = self.data_dir.components().collect();
        let mut s = normal.into_os_string();
        s.push(".pgpass");
        PathBuf::from(s)
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn validate(&self) -> ClusterResult<()> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ClusterError::Invalid(format!(
                "member name {:?}: use 1-63 ASCII letters, digits, '-' or '_'",
                self.name
            )));
        }
        if self.host.is_empty() || self.host.contains(['\0', '\n']) {
            return Err(ClusterError::Invalid(format!(
                "member {}: host {:?} is not an address",
                self.name, self.host
            )));
        }
        if self.port == 0 {
            return Err(ClusterError::Invalid(format!(
                "member {}: port 0 is not a port",
                self.name
            )));
        }
        Ok(())
    }
}

/// How long each kind of step may take before it fails with [`ClusterError::Timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection. Default 5 s.
    pub connect: Duration,
    /// One SQL statement (`statement_timeout` of Lifeboat's sessions). Default 30 s.
    pub sql: Duration,
    /// `initdb`. Default 120 s.
    pub init: Duration,
    /// `pg_ctl start` until the server accepts connections (crash recovery included).
    /// Default 300 s.
    pub start: Duration,
    /// `pg_ctl stop`. Default 60 s.
    pub stop: Duration,
    /// `pg_basebackup`. Default 6 h.
    pub clone: Duration,
    /// `pg_rewind`. Default 1 h.
    pub rewind: Duration,
    /// A started standby until its walreceiver streams from the right primary, and a
    /// reloaded setting until sessions see it. Default 60 s.
    pub streaming: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            sql: Duration::from_secs(30),
            init: Duration::from_secs(120),
            start: Duration::from_secs(300),
            stop: Duration::from_secs(60),
            clone: Duration::from_secs(6 * 3600),
            rewind: Duration::from_secs(3600),
            streaming: Duration::from_secs(60),
        }
    }
}

/// How clients from the cluster's networks authenticate (pg_hba.conf method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HostAuth {
    /// `scram-sha-256`: the [`Pg`] password is set on the user at `initdb`.
    #[default]
    ScramSha256,
    /// `trust`: no password. Only for loopback test clusters.
    Trust,
}

/// What [`Pg::init_primary`] writes into a new cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSettings {
    /// `listen_addresses`; standbys inherit it, so use `*` or addresses valid on every
    /// member. Default `*`.
    pub listen_addresses: String,
    /// Networks allowed to connect, for normal and replication connections (pg_hba.conf):
    /// CIDRs, or plain IP addresses (taken as /32 or /128). Default loopback only.
    pub allowed_networks: Vec<String>,
    /// How those networks authenticate. Default scram-sha-256.
    pub auth: HostAuth,
    /// `initdb --data-checksums` (pg_rewind needs checksums or `wal_log_hints`; both are
    /// set by default). Default true.
    pub data_checksums: bool,
    /// `max_wal_senders`. Default 10.
    pub max_wal_senders: u32,
    /// `max_replication_slots`. Default 10.
    pub max_replication_slots: u32,
    /// `unix_socket_directories`; `None` keeps PostgreSQL's (`/var/run/postgresql` on
    /// Debian).
    pub socket_dir: Option<PathBuf>,
    /// More `initdb` arguments. Default `--encoding=UTF8 --no-locale`.
    pub initdb_args: Vec<String>,
    /// More postgresql.conf settings, written after Lifeboat's (so they win).
    pub extra: Vec<(String, String)>,
}

impl Default for InitSettings {
    fn default() -> Self {
        InitSettings {
            listen_addresses: "*".into(),
            allowed_networks: vec!["127.0.0.1/32".into(), "::1/128".into()],
            auth: HostAuth::default(),
            data_checksums: true,
            max_wal_senders: 10,
            max_replication_slots: 10,
            socket_dir: None,
            initdb_args: vec!["--encoding=UTF8".into(), "--no-locale".into()],
            extra: Vec::new(),
        }
    }
}

/// How [`Pg::stop`] shuts a server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopMode {
    /// `-m fast`: sessions are cancelled, a shutdown checkpoint is written.
    Fast,
    /// `-m immediate`: every process exits at once; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// How many of the listed standbys must confirm a commit (`synchronous_standby_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SyncMode {
    /// `ANY n (…)`: any `n` of them (quorum).
    Any(u32),
    /// `FIRST n (…)`: the first `n` connected ones in list order (priority).
    First(u32),
}

// ---------------------------------------------------------------------------------------
// Outputs

/// A standby's walreceiver (`pg_stat_wal_receiver`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalReceiver {
    /// `streaming`, `starting`, `waiting`, `stopping`, …
    pub status: String,
    /// The host it is connected to.
    pub sender_host: Option<String>,
    /// The port it is connected to.
    pub sender_port: Option<u16>,
    /// The timeline it receives.
    pub received_tli: Option<u32>,
}

/// What a member is doing now ([`Pg::status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Whether it is a standby (`pg_is_in_recovery()`).
    pub in_recovery: bool,
    /// A primary's current timeline; a standby's received timeline (else the timeline of
    /// its last restartpoint).
    pub timeline: Option<u32>,
    /// A primary's `pg_current_wal_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// A standby's `pg_last_wal_receive_lsn()`.
    pub receive_lsn: Option<Lsn>,
    /// A standby's `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<Lsn>,
    /// `lifeboat.generation`, when set.
    pub generation: Option<u64>,
    /// A standby's walreceiver, when one runs.
    pub wal_receiver: Option<WalReceiver>,
}

/// What [`Pg::init_primary`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitReport {
    /// From `initdb` to accepting connections.
    pub took: Duration,
}

/// What [`Pg::adopt`] found in a usable cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdoptReport {
    /// Whether it was running (then the checks used its live settings, else pg_control's
    /// record of its last run).
    pub running: bool,
    /// Data checksums are on.
    pub data_checksums: bool,
    /// `wal_log_hints` is on.
    pub wal_log_hints: bool,
    /// Whether it is in recovery (a standby), when running.
    pub in_recovery: Option<bool>,
    /// Settings that are fine but could be better (e.g. a change waiting for a restart).
    pub notes: Vec<String>,
}

/// What [`Pg::clone_standby`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloneReport {
    /// The slot on the primary.
    pub slot: String,
    /// Whether this call created it.
    pub slot_created: bool,
    /// From the slot to a streaming standby.
    pub took: Duration,
}

/// What [`Pg::promote`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromoteReport {
    /// The timeline before (as the standby saw it).
    pub previous_timeline: Option<u32>,
    /// The new primary's timeline.
    pub timeline: u32,
    /// From `pg_promote()` to a session that is not in recovery.
    pub took: Duration,
}

/// What [`Pg::fence`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FenceReport {
    /// Whether a postmaster ran.
    pub was_running: bool,
    /// Whether `pg_ctl stop` failed and the postmaster was killed with SIGKILL.
    pub killed: bool,
    /// From the call to a stopped server.
    pub took: Duration,
}

/// What [`Pg::repoint`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepointReport {
    /// The slot on the new primary.
    pub slot: String,
    /// The new primary's timeline, which the standby now receives.
    pub timeline: u32,
    /// From the call to streaming.
    pub took: Duration,
}

/// How [`Pg::rejoin`] made the old primary a standby.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RejoinPath {
    /// `pg_rewind` undid its divergent changes.
    Rewound,
    /// `pg_rewind` found nothing to undo (it had not diverged).
    NoRewindNeeded,
    /// There was no data directory (a replaced disk), so it was cloned.
    Cloned,
    /// Rewinding failed, so it was cloned anew with `pg_basebackup`.
    Recloned {
        /// Where its old data directory now is (kept, never deleted).
        set_aside: PathBuf,
        /// Why rewinding failed.
        rewind_error: String,
    },
}

/// What [`Pg::rejoin`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejoinReport {
    /// Rewound or re-cloned.
    pub path: RejoinPath,
    /// Lifeboat slots the old primary kept for its former standbys, dropped (they would
    /// hold WAL on it forever). pg_rewind (PostgreSQL 14+) already removes them when it
    /// rewinds, so this names slots only after [`RejoinPath::NoRewindNeeded`].
    pub dropped_slots: Vec<String>,
    /// From the call to streaming.
    pub took: Duration,
}

/// Output of a program that succeeded.
struct Ran {
    stdout: String,
    stderr: String,
}

// ---------------------------------------------------------------------------------------
// The handle

/// How to run and reach the PostgreSQL 15 servers of a cluster: the bin directory, the
/// database user (a superuser: `ALTER SYSTEM`, `pg_promote`, `pg_rewind` and replication
/// need one) and its password, the OS user for server programs, and the timeouts.
#[derive(Debug, Clone)]
pub struct Pg {
    bin_dir: PathBuf,
    user: String,
    password: Option<Secret<String>>,
    os_user: Option<String>,
    dbname: String,
    timeouts: Timeouts,
}

impl Default for Pg {
    fn default() -> Self {
        Pg::new("postgres")
    }
}

impl Pg {
    /// A handle connecting as database user `user` without a password, with programs from
    /// [`DEFAULT_BIN_DIR`] and default [`Timeouts`].
    pub fn new(user: impl Into<String>) -> Self {
        Pg {
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
            user: user.into(),
            password: None,
            os_user: None,
            dbname: "postgres".into(),
            timeouts: Timeouts::default(),
        }
    }

    /// Uses the server programs in `dir`.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// Connects with `password` (also pg_basebackup and pg_rewind, through `PGPASSWORD`).
    /// Standbys get it in a password file beside their data directory
    /// ([`Member::passfile_path`], mode 0600) that their `primary_conninfo` names.
    pub fn with_password(mut self, password: Secret<String>) -> Self {
        self.password = Some(password);
        self
    }

    /// Runs server programs as OS user `user` when this process is root (instead of the
    /// data directory's owner, or `postgres` before there is one).
    pub fn with_os_user(mut self, user: impl Into<String>) -> Self {
        self.os_user = Some(user.into());
        self
    }

    /// Uses `timeouts`.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The directory of the server programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The timeouts in use.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    // -- connections ---------------------------------------------------------------------

    /// Opens a session on `member` (database `postgres`, `statement_timeout` =
    /// [`Timeouts::sql`], TCP keepalives so a vanished host fails within ~15 s).
    ///
    /// # Errors
    /// [`ClusterError::Sql`] when the connection fails.
    pub fn connect(&self, member: &Member) -> ClusterResult<postgres::Client> {
        let mut c = postgres::Config::new();
        c.host(&member.host)
            .port(member.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("lifeboat")
            .connect_timeout(self.timeouts.connect)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .options(&format!(
                "-c statement_timeout={}",
                self.timeouts.sql.as_millis().max(1)
            ));
        if let Some(p) = &self.password {
            c.password(p.expose().as_bytes());
        }
        c.connect(postgres::NoTls)
            .map_err(|e| self.sql_error(member, "connect", &e))
    }

    fn sql_error(&self, member: &Member, what: &str, e: &postgres::Error) -> ClusterError {
        let (code, message) = match e.as_db_error() {
            Some(db) => {
                let mut m = db.message().to_string();
                if let Some(d) = db.detail() {
                    m.push_str(&format!(" (detail: {d})"));
                }
                if let Some(h) = db.hint() {
                    m.push_str(&format!(" (hint: {h})"));
                }
                (Some(db.code().code().to_string()), m)
            }
            None => {
                // The client's message, with its causes (a refused connection says why).
                let mut m = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    let t = s.to_string();
                    if !m.contains(&t) {
                        m.push_str(&format!(": {t}"));
                    }
                    src = s.source();
                }
                (None, m)
            }
        };
        ClusterError::Sql {
            member: member.name.clone(),
            target: member.target(),
            what: what.to_string(),
            code,
            message: self.redact(message),
        }
    }

    /// Runs `sql` (simple protocol) and returns the rows as text.
    fn query(
        &self,
        member: &Member,
        client: &mut postgres::Client,
        what: &str,
        sql: &str,
    ) -> ClusterResult<Vec<Vec<Option<String>>>> {
        let msgs = client
            .simple_query(sql)
            .map_err(|e| self.sql_error(member, what, &e))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Runs `sql` and returns the first column of its first row.
    fn query_value(
        &self,
        member: &Member,
        client: &mut postgres::Client,
        what: &str,
        sql: &str,
    ) -> ClusterResult<Option<String>> {
        Ok(self
            .query(member, client, what, sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    fn in_recovery(&self, member: &Member, client: &mut postgres::Client) -> ClusterResult<bool> {
        let v = self.query_value(
            member,
            client,
            "ask whether it is in recovery",
            "select pg_is_in_recovery()",
        )?;
        Ok(v.as_deref() == Some("t"))
    }

    /// A libpq connection string for `member` without the password (that goes through
    /// `PGPASSWORD`), for pg_basebackup and pg_rewind.
    fn conninfo(&self, member: &Member, application_name: Option<&str>) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            conninfo_value(&member.host),
            member.port,
            conninfo_value(&self.user),
            conninfo_value(&self.dbname)
        );
        if let Some(a) = application_name {
            s.push_str(&format!(" application_name={}", conninfo_value(a)));
        }
        s
    }

    /// `primary_conninfo` for `standby` streaming from `primary`; with a password, it
    /// names the standby's password file ([`Member::passfile_path`]), never the password.
    fn primary_conninfo(&self, primary: &Member, standby: &Member) -> String {
        let mut s = format!(
            "host={} port={} user={} application_name={}",
            conninfo_value(&primary.host),
            primary.port,
            conninfo_value(&self.user),
            conninfo_value(&standby.name)
        );
        if self.password.is_some() {
            s.push_str(&format!(
                " passfile={}",
                conninfo_value(&standby.passfile_path().display().to_string())
            ));
        }
        s
    }

    /// Writes `standby`'s password file (mode 0600, owned by its data directory's owner)
    /// when there is a password.
    fn write_passfile(&self, standby: &Member) -> ClusterResult<()> {
        let Some(p) = &self.password else {
            return Ok(());
        };
        let esc = |v: &str| v.replace('\\', "\\\\").replace(':', "\\:");
        let line = format!("*:*:*:{}:{}\n", esc(&self.user), esc(p.expose()));
        self.write_owned(standby, &standby.passfile_path(), &line)
    }

    fn redact(&self, text: String) -> String {
        match &self.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose().as_str(), "***"),
            _ => text,
        }
    }

    // -- programs ------------------------------------------------------------------------

    /// The OS user server programs run as for `member`, when this process is root.
    fn run_as(&self, member: &Member) -> ClusterResult<Option<String>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        if let Some(u) = &self.os_user {
            return Ok(Some(u.clone()));
        }
        if let Ok(md) = fs::metadata(&member.data_dir) {
            if md.uid() != 0 {
                return match user_name(md.uid()) {
                    Some(n) => Ok(Some(n)),
                    None => Err(ClusterError::Invalid(format!(
                        "member {}: {} belongs to uid {}, which has no /etc/passwd entry; \
                         give it to the postgres user or name one with Pg::with_os_user",
                        member.name,
                        member.data_dir.display(),
                        md.uid()
                    ))),
                };
            }
        }
        Ok(Some(DEFAULT_OS_USER.to_string()))
    }

    /// A command for server program `program`, run as [`Pg::run_as`].
    fn program(&self, member: &Member, program: &str) -> ClusterResult<Command> {
        let path = self.bin_dir.join(program);
        if !path.is_file() {
            return Err(ClusterError::MissingBinary { path });
        }
        let mut cmd = match self.run_as(member)? {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .env_remove("PGUSER")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        Ok(cmd)
    }

    /// Adds the password for libpq (never on the command line).
    fn with_pgpassword(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p.expose());
        }
    }

    /// Runs `cmd` to completion within `timeout` (then kills its process group), and
    /// returns its output, or an error with its stderr and `member`'s server log.
    fn run(
        &self,
        member: &Member,
        what: &str,
        mut cmd: Command,
        timeout: Duration,
    ) -> ClusterResult<Ran> {
        let io = |e: std::io::Error| ClusterError::Io {
            member: member.name.clone(),
            path: format!("temp file for the output of {what}"),
            source: e,
        };
        let mut out = tempfile::tempfile().map_err(io)?;
        let mut err = tempfile::tempfile().map_err(io)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().map_err(io)?))
            .stderr(Stdio::from(err.try_clone().map_err(io)?))
            .process_group(0);
        let started = Instant::now();
        tracing::debug!(member = %member.name, "running {what}");
        let mut child = cmd.spawn().map_err(|e| ClusterError::Io {
            member: member.name.clone(),
            path: format!("start {what}"),
            source: e,
        })?;
        let status: Option<ExitStatus> = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(e) => {
                    return Err(ClusterError::Io {
                        member: member.name.clone(),
                        path: format!("wait for {what}"),
                        source: e,
                    })
                }
            }
            if started.elapsed() >= timeout {
                let pid = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(CMD_POLL);
        };
        let read = |f: &mut fs::File| -> String {
            let mut buf = Vec::new();
            let _ = f.rewind();
            let _ = f.read_to_end(&mut buf);
            self.redact(String::from_utf8_lossy(&buf).into_owned())
        };
        let stdout = read(&mut out);
        let stderr = read(&mut err);
        match status {
            Some(s) if s.success() => Ok(Ran { stdout, stderr }),
            Some(s) => Err(ClusterError::Command {
                member: member.name.clone(),
                command: what.to_string(),
                detail: format!("{s}{}", indent_tail(&stderr, &stdout)),
                log: Box::new(self.log_tail(member)),
            }),
            None => Err(ClusterError::Timeout {
                member: member.name.clone(),
                what: what.to_string(),
                after: timeout,
                detail: format!(" (killed){}", indent_tail(&stderr, &stdout)),
                log: Box::new(self.log_tail(member)),
            }),
        }
    }

    /// The last lines of `member`'s server log (empty when there is none here).
    pub fn log_tail(&self, member: &Member) -> LogTail {
        /// Enough for the last lines of any log, however large the file.
        const TAIL_BYTES: u64 = 64 << 10;
        let path = member.log_path();
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = fs::File::open(&path)?;
            let len = f.metadata()?.len();
            f.seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
            let mut buf = Vec::new();
            f.take(TAIL_BYTES).read_to_end(&mut buf)?;
            Ok(buf)
        };
        let text = match read() {
            Ok(b) => self.redact(String::from_utf8_lossy(&b).into_owned()),
            Err(_) => return LogTail::default(),
        };
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        LogTail {
            lines: lines[lines.len().saturating_sub(LOG_LINES)..].to_vec(),
            path: Some(path),
        }
    }

    fn io_error(
        member: &Member,
        path: impl AsRef<Path>,
        doing: &str,
    ) -> impl FnOnce(std::io::Error) -> ClusterError {
        let path = format!("{doing} {}", path.as_ref().display());
        let member = member.name.clone();
        move |source| ClusterError::Io {
            member,
            path,
            source,
        }
    }

    /// Writes `text` to `name` in `member`'s data directory (temp file, fsync, rename),
    /// owned by the data directory's owner.
    fn write_data_file(&self, member: &Member, name: &str, text: &str) -> ClusterResult<()> {
        self.write_owned(member, &member.data_dir.join(name), text)
    }

    /// Writes `text` to `path` (temp file, fsync, rename; mode 0600), owned by the owner of
    /// `member`'s data directory.
    fn write_owned(&self, member: &Member, path: &Path, text: &str) -> ClusterResult<()> {
        let Some(dir) = path.parent() else {
            return Err(ClusterError::Invalid(format!(
                "{} has no directory",
                path.display()
            )));
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!("{name}.lifeboat-tmp"));
        let md = fs::metadata(&member.data_dir).map_err(Self::io_error(
            member,
            &member.data_dir,
            "stat",
        ))?;
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode_0600()
                .open(&tmp)
                .map_err(Self::io_error(member, &tmp, "create"))?;
            f.write_all(text.as_bytes())
                .map_err(Self::io_error(member, &tmp, "write"))?;
            f.sync_all()
                .map_err(Self::io_error(member, &tmp, "fsync"))?;
        }
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&tmp, Some(md.uid()), Some(md.gid()))
                .map_err(Self::io_error(member, &tmp, "chown"))?;
        }
        fs::rename(&tmp, path).map_err(Self::io_error(member, path, "rename into place"))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Sets `settings` in postgresql.auto.conf of a stopped member (replacing earlier lines
    /// for the same names).
    fn set_auto_conf(&self, member: &Member, settings: &[(&str, String)]) -> ClusterResult<()> {
        let path = member.data_dir.join("postgresql.auto.conf");
        let old = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Self::io_error(member, &path, "read")(e)),
        };
        let mut text = String::new();
        for line in old.lines() {
            let key = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if settings.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
        for (k, v) in settings {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        self.write_data_file(member, "postgresql.auto.conf", &text)
    }

    /// `pg_controldata` as name → value.
    fn controldata(&self, member: &Member) -> ClusterResult<HashMap<String, String>> {
        let mut cmd = self.program(member, "pg_controldata")?;
        cmd.arg("-D").arg(&member.data_dir).env("LC_ALL", "C");
        let ran = self.run(member, "pg_controldata", cmd, self.timeouts.sql)?;
        Ok(crate::server_files::parse_controldata(&ran.stdout))
    }

    // -- lifecycle -----------------------------------------------------------------------

    /// The postmaster's PID when `member`'s server runs on this host: `postmaster.pid`
    /// names a live process that is a postgres.
    ///
    /// # Errors
    /// [`ClusterError::Io`] when postmaster.pid exists and cannot be read.
    pub fn postmaster_pid(&self, member: &Member) -> ClusterResult<Option<u32>> {
        let path = member.data_dir.join("postmaster.pid");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_error(member, &path, "read")(e)),
        };
        let Some(pid) = crate::server_files::PostmasterPid::parse(&text).map(|p| p.pid) else {
            return Ok(None);
        };
        if !process_alive(pid) {
            return Ok(None);
        }
        // A name that cannot be read (not ours to see) is trusted, as the cwd below is.
        if let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) {
            let comm = comm.trim();
            if !(comm.starts_with("postgres") || comm.starts_with("postmaster")) {
                return Ok(None);
            }
        }
        // After a crash the PID may belong to another cluster's process now: a postmaster
        // works in its data directory (unreadable when it is not ours to see; then trust it).
        if let (Ok(cwd), Ok(dir)) = (
            fs::read_link(format!("/proc/{pid}/cwd")),
            fs::canonicalize(&member.data_dir),
        ) {
            if cwd != dir {
                return Ok(None);
            }
        }
        Ok(Some(pid))
    }

    /// Whether `member`'s server runs on this host (see [`Pg::postmaster_pid`]).
    ///
    /// # Errors
    /// As [`Pg::postmaster_pid`].
    pub fn is_running(&self, member: &Member) -> ClusterResult<bool> {
        Ok(self.postmaster_pid(member)?.is_some())
    }

    /// Starts `member`'s server (`pg_ctl start -w`, log in [`Member::log_path`]) and waits
    /// until it accepts connections on its host and port. Does nothing when it runs.
    ///
    /// # Errors
    /// [`ClusterError::Command`] or [`ClusterError::Timeout`] with the server log.
    pub fn start(&self, member: &Member) -> ClusterResult<()> {
        member.validate()?;
        if self.is_running(member)? {
            return self.wait_ready(member);
        }
        let secs = self.timeouts.start.as_secs().max(1);
        let mut cmd = self.program(member, "pg_ctl")?;
        cmd.args(["start", "-w", "-t", &secs.to_string(), "-D"])
            .arg(&member.data_dir)
            .arg("-l")
            .arg(member.log_path());
        self.run(
            member,
            "pg_ctl start",
            cmd,
            self.timeouts.start + Duration::from_secs(5),
        )?;
        self.wait_ready(member)
    }

    /// Waits until a session on `member` can be opened.
    fn wait_ready(&self, member: &Member) -> ClusterResult<()> {
        let deadline = Instant::now() + self.timeouts.start;
        loop {
            match self.connect(member) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline || !self.is_running(member)? => {
                    return Err(ClusterError::Timeout {
                        member: member.name.clone(),
                        what: "accepting connections (or the server exited)".into(),
                        after: self.timeouts.start,
                        detail: format!(": {e}"),
                        log: Box::new(self.log_tail(member)),
                    })
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Stops `member`'s server with `mode` and waits until the postmaster is gone.
    /// Returns whether it was running.
    ///
    /// # Errors
    /// [`ClusterError::Command`] or [`ClusterError::Timeout`] when it does not stop.
    pub fn stop(&self, member: &Member, mode: StopMode) -> ClusterResult<bool> {
        let Some(pid) = self.postmaster_pid(member)? else {
            return Ok(false);
        };
        // `pg_ctl stop -W` only sends the signal; the wait is here, looking every 10 ms
        // (`pg_ctl -w` looks every 100 ms, which would add ~50 ms to every fence).
        let mut cmd = self.program(member, "pg_ctl")?;
        cmd.args(["stop", "-W", "-m", mode.arg(), "-D"])
            .arg(&member.data_dir);
        let what = format!("pg_ctl stop -m {}", mode.arg());
        if let Err(e) = self.run(member, &what, cmd, self.timeouts.stop) {
            // It may have exited between the check and pg_ctl.
            if self.postmaster_pid(member)?.is_none() {
                return Ok(true);
            }
            return Err(e);
        }
        let deadline = Instant::now() + self.timeouts.stop;
        // The postmaster removes postmaster.pid as it exits.
        while member.data_dir.join("postmaster.pid").exists() && process_alive(pid) {
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    member: member.name.clone(),
                    what,
                    after: self.timeouts.stop,
                    detail: format!(": postmaster {pid} still runs"),
                    log: Box::new(self.log_tail(member)),
                });
            }
            std::thread::sleep(CMD_POLL);
        }
        Ok(true)
    }

    /// Waits until no process runs inside `member`'s data directory (backends orphaned by a
    /// killed postmaster keep its shared memory until they notice).
    fn wait_no_processes(&self, member: &Member) -> ClusterResult<()> {
        let Ok(dir) = fs::canonicalize(&member.data_dir) else {
            return Ok(());
        };
        let deadline = Instant::now() + self.timeouts.stop;
        loop {
            let pids = processes_in(&dir);
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    member: member.name.clone(),
                    what: "the exit of every server process".into(),
                    after: self.timeouts.stop,
                    detail: format!(": processes {pids:?} still run in {}", dir.display()),
                    log: Box::new(self.log_tail(member)),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    // -- init and adopt ------------------------------------------------------------------

    /// Creates a new primary in `member.data_dir` (which must not exist, or be empty):
    /// `initdb` (data checksums by default), postgresql.conf for replication (`port`,
    /// `listen_addresses`, `wal_level = replica`, `max_wal_senders`,
    /// `max_replication_slots`, `hot_standby = on`, `wal_log_hints = on`), a pg_hba.conf
    /// for normal and replication connections from `settings.allowed_networks`; then starts
    /// it and waits until it accepts connections.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] for a non-empty data directory or scram without a
    /// password; [`ClusterError::Command`] with initdb's or the server's output.
    pub fn init_primary(
        &self,
        member: &Member,
        settings: &InitSettings,
    ) -> ClusterResult<InitReport> {
        member.validate()?;
        let started = Instant::now();
        if !is_empty_or_missing(&member.data_dir) {
            return Err(ClusterError::Invalid(format!(
                "member {}: {} is not empty (or not readable); use adopt for an existing cluster",
                member.name,
                member.data_dir.display()
            )));
        }
        let method = match (settings.auth, &self.password) {
            (HostAuth::Trust, _) => "trust",
            (HostAuth::ScramSha256, Some(_)) => "scram-sha-256",
            (HostAuth::ScramSha256, None) => {
                return Err(ClusterError::Invalid(format!(
                    "member {}: scram-sha-256 authentication needs a password (Pg::with_password)",
                    member.name
                )))
            }
        };
        let mut cmd = self.program(member, "initdb")?;
        cmd.arg("-D")
            .arg(&member.data_dir)
            .args(["-U", &self.user, "--auth-local=peer"])
            .arg(format!("--auth-host={method}"));
        if settings.data_checksums {
            cmd.arg("--data-checksums");
        }
        cmd.args(&settings.initdb_args);
        // The password reaches initdb in a file only its OS user can read, removed after.
        let pwfile = match &self.password {
            Some(p) => {
                let f = self.owner_temp_file(member, p.expose())?;
                cmd.arg(format!("--pwfile={}", f.path().display()));
                Some(f)
            }
            None => None,
        };
        let r = self.run(member, "initdb", cmd, self.timeouts.init);
        drop(pwfile);
        r?;

        let mut conf = format!(
            "\n# Lifeboat (init_primary)\nlisten_addresses = {}\nport = {}\n\
             wal_level = replica\nmax_wal_senders = {}\nmax_replication_slots = {}\n\
             hot_standby = on\nwal_log_hints = on\n",
            conf_quote(&settings.listen_addresses),
            member.port,
            settings.max_wal_senders,
            settings.max_replication_slots,
        );
        if let Some(d) = &settings.socket_dir {
            conf.push_str(&format!(
                "unix_socket_directories = {}\n",
                conf_quote(&d.display().to_string())
            ));
        }
        for (k, v) in &settings.extra {
            conf.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        let conf_path = member.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(Self::io_error(member, &conf_path, "append to"))?;

        let mut hba = String::from(
            "# Written by Lifeboat (init_primary).\n\
             # TYPE  DATABASE     USER  ADDRESS  METHOD\n\
             local   all          all            peer\n\
             local   replication  all            peer\n",
        );
        for net in &settings.allowed_networks {
            let net = cidr(net);
            hba.push_str(&format!("host    all          all   {net}  {method}\n"));
            hba.push_str(&format!("host    replication  all   {net}  {method}\n"));
        }
        self.write_data_file(member, "pg_hba.conf", &hba)?;
        self.start(member)?;
        Ok(InitReport {
            took: started.elapsed(),
        })
    }

    /// A temp file holding `text`, readable only by the OS user of `member`'s programs.
    fn owner_temp_file(
        &self,
        member: &Member,
        text: &str,
    ) -> ClusterResult<tempfile::NamedTempFile> {
        let io = Self::io_error(member, std::env::temp_dir(), "create a password file in");
        let mut f = tempfile::NamedTempFile::new().map_err(io)?;
        f.write_all(format!("{text}\n").as_bytes())
            .and_then(|_| f.flush())
            .map_err(Self::io_error(member, f.path(), "write"))?;
        if let Some(user) = self.run_as(member)? {
            let (uid, gid) = user_ids(&user).ok_or_else(|| {
                ClusterError::Invalid(format!("OS user {user} is not in /etc/passwd"))
            })?;
            std::os::unix::fs::chown(f.path(), Some(uid), Some(gid)).map_err(Self::io_error(
                member,
                f.path(),
                "chown",
            ))?;
        }
        Ok(f)
    }

    /// Checks that an existing cluster (running, or stopped on this host) can take part in
    /// failover: `wal_level` replica or logical, data checksums or `wal_log_hints` (for
    /// pg_rewind), `max_wal_senders` and `max_replication_slots` above 0, `hot_standby`.
    ///
    /// # Errors
    /// [`ClusterError::Unusable`] listing every problem and the setting that fixes it;
    /// [`ClusterError::Sql`] or [`ClusterError::Command`] when it cannot be inspected.
    pub fn adopt(&self, member: &Member) -> ClusterResult<AdoptReport> {
        member.validate()?;
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let running;
        let in_recovery;
        let (wal_level, hints, checksums, senders, slots, hot): (
            String,
            bool,
            bool,
            i64,
            i64,
            Option<bool>,
        );
        match self.connect(member) {
            Ok(mut c) => {
                running = true;
                in_recovery = Some(self.in_recovery(member, &mut c)?);
                let rows = self.query(
                    member,
                    &mut c,
                    "read its settings",
                    "select name, setting, pending_restart from pg_settings where name in \
                     ('wal_level','wal_log_hints','data_checksums','max_wal_senders',\
                     'max_replication_slots','hot_standby','server_version_num')",
                )?;
                let mut s: HashMap<String, String> = HashMap::new();
                for r in rows {
                    if let (Some(Some(n)), Some(Some(v))) = (r.first(), r.get(1)) {
                        if r.get(2).cloned().flatten().as_deref() == Some("t") {
                            notes.push(format!("{n} was changed and waits for a restart"));
                        }
                        s.insert(n.clone(), v.clone());
                    }
                }
                let get = |k: &str| s.get(k).cloned().unwrap_or_default();
                let version: u32 = get("server_version_num").parse().unwrap_or(0);
                if version / 10000 != 15 {
                    problems.push(format!(
                        "it runs PostgreSQL {version}; Lifeboat's cluster operations need 15"
                    ));
                }
                wal_level = get("wal_level");
                hints = get("wal_log_hints") == "on";
                checksums = get("data_checksums") == "on";
                senders = get("max_wal_senders").parse().unwrap_or(0);
                slots = get("max_replication_slots").parse().unwrap_or(0);
                hot = Some(get("hot_standby") == "on");
            }
            Err(e) => {
                if !member.data_dir.join("PG_VERSION").is_file() {
                    return Err(e);
                }
                if let Some(pid) = self.postmaster_pid(member)? {
                    // Running here but not reachable: the address or pg_hba is wrong.
                    problems.push(format!(
                        "it runs (postmaster {pid}) but Lifeboat cannot connect: {e}; check \
                         port, listen_addresses and pg_hba.conf"
                    ));
                }
                running = false;
                in_recovery = None;
                let version =
                    fs::read_to_string(member.data_dir.join("PG_VERSION")).unwrap_or_default();
                if version.trim() != "15" {
                    problems.push(format!(
                        "its data directory is PostgreSQL {}; Lifeboat's cluster operations \
                         need 15",
                        version.trim()
                    ));
                }
                let cd = self.controldata(member)?;
                let get = |k: &str| cd.get(k).cloned().unwrap_or_default();
                wal_level = get("wal_level setting");
                hints = get("wal_log_hints setting") == "on";
                checksums = get("Data page checksum version")
                    .parse::<u32>()
                    .unwrap_or(0)
                    > 0;
                senders = get("max_wal_senders setting").parse().unwrap_or(0);
                slots = i64::MAX; // pg_control does not record it
                hot = None;
                notes.push(
                    "stopped: checked the settings pg_control recorded at its last run".into(),
                );
            }
        }
        if wal_level != "replica" && wal_level != "logical" {
            problems.push(format!(
                "wal_level is {wal_level}: set wal_level = replica and restart"
            ));
        }
        if !hints && !checksums {
            problems.push(
                "neither data checksums nor wal_log_hints are on, so pg_rewind cannot work: set \
                 wal_log_hints = on and restart (or enable checksums with pg_checksums \
                 --enable on the stopped cluster)"
                    .into(),
            );
        }
        if senders < 2 {
            problems.push(format!(
                "max_wal_senders is {senders}: set max_wal_senders = 10 and restart"
            ));
        }
        if slots < 2 {
            problems.push(format!(
                "max_replication_slots is {slots}: set max_replication_slots = 10 and restart"
            ));
        }
        if hot == Some(false) {
            problems.push(
                "hot_standby is off: set hot_standby = on (standbys need it to be probed)".into(),
            );
        }
        if !problems.is_empty() {
            return Err(ClusterError::Unusable {
                member: member.name.clone(),
                problems,
            });
        }
        Ok(AdoptReport {
            running,
            data_checksums: checksums,
            wal_log_hints: hints,
            in_recovery,
            notes,
        })
    }

    // -- standbys ------------------------------------------------------------------------

    /// Creates the physical slot for `standby` on `primary` (reserving WAL at once) unless
    /// it exists. Returns the slot's name and whether this call created it.
    ///
    /// # Errors
    /// [`ClusterError::Sql`].
    pub fn ensure_slot(&self, primary: &Member, standby: &Member) -> ClusterResult<(String, bool)> {
        standby.validate()?;
        let slot = standby.slot_name();
        let mut c = self.connect(primary)?;
        let what = format!("create replication slot {slot}");
        let r = c.query(
            "select pg_create_physical_replication_slot($1::name, true) \
             where not exists (select 1 from pg_replication_slots where slot_name = $1::name)",
            &[&slot],
        );
        match r {
            Ok(rows) => Ok((slot, !rows.is_empty())),
            Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_OBJECT) => {
                Ok((slot, false))
            }
            Err(e) => Err(self.sql_error(primary, &what, &e)),
        }
    }

    /// Clones `standby` from `primary`: creates its slot on the primary, runs
    /// `pg_basebackup -X stream -c fast -S slot -R` into `standby.data_dir` (which must not
    /// exist, or be empty), sets its `port`, `primary_conninfo` (with `application_name` =
    /// its name, so `synchronous_standby_names` can list it) and `primary_slot_name`,
    /// starts it and waits until it streams from the primary.
    ///
    /// The standby inherits the primary's postgresql.conf, pg_hba.conf and
    /// postgresql.auto.conf (including `synchronous_standby_names` and
    /// `lifeboat.generation`).
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] for a non-empty data directory; [`ClusterError::Command`]
    /// with pg_basebackup's stderr; [`ClusterError::Timeout`] when it does not stream.
    pub fn clone_standby(&self, primary: &Member, standby: &Member) -> ClusterResult<CloneReport> {
        primary.validate()?;
        standby.validate()?;
        let started = Instant::now();
        if !is_empty_or_missing(&standby.data_dir) {
            return Err(ClusterError::Invalid(format!(
                "member {}: {} is not empty (or not readable); Lifeboat never clones over a \
                 data directory",
                standby.name,
                standby.data_dir.display()
            )));
        }
        let (slot, slot_created) = self.ensure_slot(primary, standby)?;
        let mut cmd = self.program(standby, "pg_basebackup")?;
        cmd.arg("-D")
            .arg(&standby.data_dir)
            .arg("-d")
            .arg(self.conninfo(primary, Some(&standby.name)))
            .args(["-X", "stream", "-c", "fast", "-R", "-w", "-S", &slot]);
        self.with_pgpassword(&mut cmd);
        self.run(
            standby,
            &format!("pg_basebackup from {} ({})", primary.name, primary.target()),
            cmd,
            self.timeouts.clone,
        )?;
        self.configure_standby(primary, standby)?;
        self.start(standby)?;
        self.wait_streaming(standby, primary, None)?;
        Ok(CloneReport {
            slot,
            slot_created,
            took: started.elapsed(),
        })
    }

    /// Sets a stopped standby's port, conninfo and slot, and makes sure standby.signal is
    /// there.
    fn configure_standby(&self, primary: &Member, standby: &Member) -> ClusterResult<()> {
        self.write_passfile(standby)?;
        self.set_auto_conf(
            standby,
            &[
                ("port", standby.port.to_string()),
                ("primary_conninfo", self.primary_conninfo(primary, standby)),
                ("primary_slot_name", standby.slot_name()),
            ],
        )?;
        if !standby.data_dir.join("standby.signal").is_file() {
            self.write_data_file(standby, "standby.signal", "")?;
        }
        Ok(())
    }

    /// Reads `pg_stat_wal_receiver` on `standby`.
    pub fn wal_receiver(&self, standby: &Member) -> ClusterResult<Option<WalReceiver>> {
        let mut c = self.connect(standby)?;
        self.read_wal_receiver(standby, &mut c)
    }

    fn read_wal_receiver(
        &self,
        standby: &Member,
        c: &mut postgres::Client,
    ) -> ClusterResult<Option<WalReceiver>> {
        let rows = self.query(
            standby,
            c,
            "read pg_stat_wal_receiver",
            "select status, sender_host, sender_port, received_tli from pg_stat_wal_receiver",
        )?;
        Ok(rows.into_iter().next().map(|r| WalReceiver {
            status: r.first().cloned().flatten().unwrap_or_default(),
            sender_host: r.get(1).cloned().flatten(),
            sender_port: r.get(2).cloned().flatten().and_then(|p| p.parse().ok()),
            received_tli: r.get(3).cloned().flatten().and_then(|p| p.parse().ok()),
        }))
    }

    /// Waits until `standby`'s walreceiver streams from `primary` (on `timeline`, when
    /// given).
    ///
    /// # Errors
    /// [`ClusterError::Diverged`] as soon as the standby's log (when it is on this host)
    /// says it cannot follow the primary's timeline; [`ClusterError::Timeout`] with the
    /// last state seen and the standby's log.
    pub fn wait_streaming(
        &self,
        standby: &Member,
        primary: &Member,
        timeline: Option<u32>,
    ) -> ClusterResult<WalReceiver> {
        let from = log_len(standby);
        self.wait_streaming_since(standby, primary, timeline, from)
    }

    /// [`Pg::wait_streaming`], reading the standby's log from byte `log_from`.
    fn wait_streaming_since(
        &self,
        standby: &Member,
        primary: &Member,
        timeline: Option<u32>,
        mut log_from: u64,
    ) -> ClusterResult<WalReceiver> {
        let deadline = Instant::now() + self.timeouts.streaming;
        let mut client: Option<postgres::Client> = None;
        let mut last = String::from("nothing yet");
        loop {
            if let Some(line) = diverged_line(standby, &mut log_from) {
                return Err(ClusterError::Diverged {
                    member: standby.name.clone(),
                    primary: primary.name.clone(),
                    line: self.redact(line),
                });
            }
            if client.is_none() {
                match self.connect(standby) {
                    Ok(c) => client = Some(c),
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(c) = client.as_mut() {
                match self.read_wal_receiver(standby, c) {
                    Ok(Some(w)) => {
                        let ok = w.status == "streaming"
                            && w.sender_port == Some(primary.port)
                            && w.sender_host.as_deref() == Some(primary.host.as_str())
                            && timeline.is_none_or(|t| w.received_tli == Some(t));
                        if ok {
                            return Ok(w);
                        }
                        last = format!("walreceiver {w:?}");
                    }
                    Ok(None) => last = "no walreceiver".into(),
                    Err(e) => {
                        last = e.to_string();
                        client = None;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    member: standby.name.clone(),
                    what: format!(
                        "streaming from {} ({}){}",
                        primary.name,
                        primary.target(),
                        timeline
                            .map(|t| format!(" on timeline {t}"))
                            .unwrap_or_default()
                    ),
                    after: self.timeouts.streaming,
                    detail: format!(": last seen: {last}"),
                    log: Box::new(self.log_tail(standby)),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Promotes standby `member` (`pg_promote(wait => false)`, then polls
    /// `pg_is_in_recovery()` every 10 ms for up to `wait`: `pg_promote(true, n)` looks only
    /// every 100 ms, which costs ~80 ms of every failover), and reports the new timeline
    /// and how long it took.
    ///
    /// # Errors
    /// [`ClusterError::AlreadyPrimary`] when it is not in recovery;
    /// [`ClusterError::Timeout`] when it is still in recovery after `wait`.
    pub fn promote(&self, member: &Member, wait: Duration) -> ClusterResult<PromoteReport> {
        member.validate()?;
        let before = self.status(member)?;
        if !before.in_recovery {
            return Err(ClusterError::AlreadyPrimary {
                member: member.name.clone(),
            });
        }
        let mut c = self.connect(member)?;
        let started = Instant::now();
        let signalled = self.query_value(
            member,
            &mut c,
            "pg_promote",
            "select pg_promote(wait => false)",
        )?;
        if signalled.as_deref() != Some("t") {
            return Err(ClusterError::Command {
                member: member.name.clone(),
                command: "pg_promote".into(),
                detail: format!("returned {signalled:?} (the promote signal was not sent)"),
                log: Box::new(self.log_tail(member)),
            });
        }
        let deadline = started + wait;
        let timeline = loop {
            // RecoveryInProgress() reads shared state, so the same session sees the change.
            let rows = self.query(
                member,
                &mut c,
                "check the promotion",
                "select pg_is_in_recovery(), case when pg_is_in_recovery() then null \
                 else substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) end",
            )?;
            let r = rows.into_iter().next().unwrap_or_default();
            let in_recovery = r.first().cloned().flatten();
            let tli = r
                .get(1)
                .cloned()
                .flatten()
                .and_then(|t| u32::from_str_radix(&t, 16).ok());
            match (in_recovery.as_deref(), tli) {
                (Some("f"), Some(t)) => break t,
                _ if Instant::now() >= deadline => {
                    return Err(ClusterError::Timeout {
                        member: member.name.clone(),
                        what: "promotion".into(),
                        after: wait,
                        detail: format!(": still in recovery: {in_recovery:?}"),
                        log: Box::new(self.log_tail(member)),
                    })
                }
                _ => std::thread::sleep(CMD_POLL),
            }
        };
        let took = started.elapsed();
        tracing::info!(member = %member.name, timeline, ?took, "promoted");
        Ok(PromoteReport {
            previous_timeline: before.timeline,
            timeline,
            took,
        })
    }

    /// What `member` is doing: primary or standby, timeline, LSNs, generation, walreceiver.
    ///
    /// # Errors
    /// [`ClusterError::Sql`].
    pub fn status(&self, member: &Member) -> ClusterResult<Status> {
        let mut c = self.connect(member)?;
        let rows = self.query(
            member,
            &mut c,
            "read its status",
            "select pg_is_in_recovery(), \
               case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end, \
               pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
               case when pg_is_in_recovery() then (pg_control_checkpoint()).timeline_id::text \
                    else substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) end, \
               current_setting('lifeboat.generation', true), pg_is_in_recovery()",
        )?;
        let r = rows.into_iter().next().unwrap_or_default();
        let col = |i: usize| r.get(i).cloned().flatten();
        let lsn = |i: usize| col(i).and_then(|v| v.parse::<Lsn>().ok());
        let in_recovery = col(0).as_deref() == Some("t");
        let wal_receiver = if in_recovery {
            self.read_wal_receiver(member, &mut c)?
        } else {
            None
        };
        let mut timeline = col(4).and_then(|t| {
            if in_recovery {
                t.parse().ok()
            } else {
                u32::from_str_radix(&t, 16).ok()
            }
        });
        if let Some(t) = wal_receiver.as_ref().and_then(|w| w.received_tli) {
            timeline = Some(t);
        }
        Ok(Status {
            in_recovery,
            timeline,
            current_lsn: lsn(1),
            receive_lsn: lsn(2),
            replay_lsn: lsn(3),
            generation: col(5).and_then(|g| g.trim().parse().ok()),
            wal_receiver,
        })
    }

    /// Fences `member` (an old primary) so it accepts no more writes: writes
    /// `standby.signal` into its data directory first (any later start comes up read-only,
    /// in recovery), then stops it with `pg_ctl stop -m immediate` (SIGKILL to the
    /// postmaster if that fails). Works when the server is already dead.
    ///
    /// # Errors
    /// [`ClusterError::Io`] when standby.signal cannot be written (the data directory is
    /// not here); [`ClusterError::Timeout`] when the server cannot be stopped.
    ///
    /// # Crash safety
    /// standby.signal is fsynced before the stop, so a fence interrupted at any point
    /// leaves a server that either still runs (fence again) or starts read-only.
    pub fn fence(&self, member: &Member) -> ClusterResult<FenceReport> {
        member.validate()?;
        let started = Instant::now();
        self.write_data_file(member, "standby.signal", "")?;
        let mut killed = false;
        let was_running = match self.stop(member, StopMode::Immediate) {
            Ok(r) => r,
            Err(e) => {
                let Some(pid) = self.postmaster_pid(member)? else {
                    return Err(e);
                };
                tracing::warn!(member = %member.name, "pg_ctl stop failed, killing {pid}: {e}");
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                killed = true;
                let deadline = Instant::now() + self.timeouts.stop;
                while process_alive(pid) {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(POLL);
                }
                true
            }
        };
        Ok(FenceReport {
            was_running,
            killed,
            took: started.elapsed(),
        })
    }

    /// Points running standby `standby` at `new_primary`: creates its slot there, sets
    /// `primary_conninfo` and `primary_slot_name` with `ALTER SYSTEM` and reloads (no
    /// restart since PostgreSQL 13), then waits until its walreceiver streams from the new
    /// primary on the new primary's timeline (`recovery_target_timeline = 'latest'`, the
    /// default, follows the switch). With a password, the standby's password file
    /// ([`Member::passfile_path`]) must exist on its host: clone and rejoin write it.
    ///
    /// # Errors
    /// [`ClusterError::NotPrimary`] when `new_primary` is in recovery;
    /// [`ClusterError::Timeout`] when the standby does not follow (e.g. it had received WAL
    /// past the point where the new primary's timeline forked: rejoin it instead).
    pub fn repoint(&self, standby: &Member, new_primary: &Member) -> ClusterResult<RepointReport> {
        standby.validate()?;
        new_primary.validate()?;
        let started = Instant::now();
        let st = self.status(new_primary)?;
        if st.in_recovery {
            return Err(ClusterError::NotPrimary {
                member: new_primary.name.clone(),
            });
        }
        let timeline = st.timeline.ok_or_else(|| ClusterError::Sql {
            member: new_primary.name.clone(),
            target: new_primary.target(),
            what: "read its timeline".into(),
            code: None,
            message: "no timeline in the answer".into(),
        })?;
        let (slot, _) = self.ensure_slot(new_primary, standby)?;
        if standby.data_dir.is_dir() {
            // Here, so its password file can be brought up to date.
            self.write_passfile(standby)?;
        }
        let log_from = log_len(standby);
        let mut c = self.connect(standby)?;
        self.query(
            standby,
            &mut c,
            "ALTER SYSTEM SET primary_conninfo",
            &format!(
                "alter system set primary_conninfo = {}",
                sql_literal(&self.primary_conninfo(new_primary, standby))?
            ),
        )?;
        self.query(
            standby,
            &mut c,
            "ALTER SYSTEM SET primary_slot_name",
            &format!(
                "alter system set primary_slot_name = {}",
                sql_literal(&slot)?
            ),
        )?;
        self.query(standby, &mut c, "pg_reload_conf", "select pg_reload_conf()")?;
        drop(c);
        self.wait_streaming_since(standby, new_primary, Some(timeline), log_from)?;
        Ok(RepointReport {
            slot,
            timeline,
            took: started.elapsed(),
        })
    }

    /// Makes `old_primary` (stopped or crashed, on this host; fence it first) a standby of
    /// `new_primary`: creates its slot on the new primary, runs `pg_rewind --source-server
    /// … --write-recovery-conf` (which first runs crash recovery on a crashed target), sets
    /// port, `primary_conninfo` and slot, starts it, waits until it streams on the new
    /// timeline, and drops the Lifeboat slots it kept for its old standbys. When rewinding
    /// fails or the rewound server does not stream, it moves the data directory aside
    /// (`<data_dir>.lifeboat-old-<time>`, kept) and clones the standby anew; the report
    /// says which path was taken.
    ///
    /// # Errors
    /// [`ClusterError::StillRunning`] when the old primary runs;
    /// [`ClusterError::NotPrimary`] when `new_primary` is in recovery;
    /// [`ClusterError::Rejoin`] when the re-clone fails too (the old data directory is then
    /// moved back).
    pub fn rejoin(
        &self,
        old_primary: &Member,
        new_primary: &Member,
    ) -> ClusterResult<RejoinReport> {
        old_primary.validate()?;
        new_primary.validate()?;
        let started = Instant::now();
        if let Some(pid) = self.postmaster_pid(old_primary)? {
            return Err(ClusterError::StillRunning {
                member: old_primary.name.clone(),
                pid,
                hint: "fence it (or stop it) before it rejoins",
            });
        }
        if self.status(new_primary)?.in_recovery {
            return Err(ClusterError::NotPrimary {
                member: new_primary.name.clone(),
            });
        }
        if !old_primary.data_dir.join("PG_VERSION").is_file()
            && is_empty_or_missing(&old_primary.data_dir)
        {
            self.clone_standby(new_primary, old_primary)?;
            return Ok(RejoinReport {
                path: RejoinPath::Cloned,
                dropped_slots: Vec::new(),
                took: started.elapsed(),
            });
        }
        self.wait_no_processes(old_primary)?;
        self.ensure_slot(new_primary, old_primary)?;
        // A freshly promoted primary's pg_control still names the old timeline until its
        // first checkpoint, and pg_rewind reads the timeline from there.
        self.checkpoint(new_primary)?;
        let rewound = self.rewind(old_primary, new_primary).and_then(|path| {
            self.configure_standby(new_primary, old_primary)?;
            let timeline = self.status(new_primary)?.timeline;
            let log_from = log_len(old_primary);
            let started = self.start(old_primary).and_then(|()| {
                self.wait_streaming_since(old_primary, new_primary, timeline, log_from)
            });
            if let Err(e) = started {
                // Leave nothing running that the re-clone would trip over.
                let _ = self.stop(old_primary, StopMode::Immediate);
                return Err(e);
            }
            Ok(path)
        });
        let path = match rewound {
            Ok(p) => p,
            // The new primary failing is no reason to throw the old one's data away.
            Err(e) if e.member() == Some(new_primary.name.as_str()) => return Err(e),
            Err(e) => {
                let rewind_error = e.to_string();
                tracing::warn!(member = %old_primary.name, "rewind failed, re-cloning: {rewind_error}");
                let set_aside = self.reclone(old_primary, new_primary, &rewind_error)?;
                RejoinPath::Recloned {
                    set_aside,
                    rewind_error,
                }
            }
        };
        let dropped_slots = match self.drop_lifeboat_slots(old_primary) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(member = %old_primary.name, "could not drop stale slots: {e}");
                Vec::new()
            }
        };
        Ok(RejoinReport {
            path,
            dropped_slots,
            took: started.elapsed(),
        })
    }

    /// `CHECKPOINT` on `member` (bounded by the rewind timeout: a busy server can take a
    /// while to write its dirty buffers).
    fn checkpoint(&self, member: &Member) -> ClusterResult<()> {
        let mut c = self.connect(member)?;
        self.query(
            member,
            &mut c,
            "CHECKPOINT",
            &format!(
                "set statement_timeout = {}; checkpoint",
                self.timeouts.rewind.as_millis().max(1)
            ),
        )?;
        Ok(())
    }

    /// Runs pg_rewind on a stopped `target` from `source`.
    fn rewind(&self, target: &Member, source: &Member) -> ClusterResult<RejoinPath> {
        // A rewind interrupted by a crash of this process left its signal files aside.
        for name in ["standby.signal", "recovery.signal"] {
            let signal = target.data_dir.join(name);
            let aside = target.data_dir.join(format!("{name}.lifeboat-rewind"));
            if aside.exists() && !signal.exists() {
                fs::rename(&aside, &signal).map_err(Self::io_error(target, &aside, "move back"))?;
            }
        }
        let cd = self.controldata(target)?;
        let state = cd
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        let clean = state == "shut down" || state == "shut down in recovery";
        let mut moved = Vec::new();
        let mut auto_conf = None;
        if !clean {
            // pg_rewind first runs crash recovery with `postgres --single`, which refuses
            // standby mode: a fenced (crashed, standby.signal) target has its signal files
            // moved aside for it, and put back afterwards whatever happens.
            // That recovery ends with a checkpoint that recycles the WAL before it, where
            // the last checkpoint before the fork is, which pg_rewind then needs (seen with
            // a crashed standby that had received WAL the new primary lacks): keep all WAL
            // for it. pg_rewind replaces postgresql.auto.conf with the source's; on failure
            // the target's own comes back.
            let path = target.data_dir.join("postgresql.auto.conf");
            let text = fs::read_to_string(&path).map_err(Self::io_error(target, &path, "read"))?;
            self.set_auto_conf(target, &[("wal_keep_size", KEEP_ALL_WAL_MB.to_string())])?;
            auto_conf = Some(text);
            for name in ["standby.signal", "recovery.signal"] {
                let from = target.data_dir.join(name);
                if from.exists() {
                    let to = target.data_dir.join(format!("{name}.lifeboat-rewind"));
                    fs::rename(&from, &to).map_err(Self::io_error(target, &from, "move aside"))?;
                    moved.push((from, to));
                }
            }
        }
        let mut cmd = self.program(target, "pg_rewind")?;
        cmd.arg("--target-pgdata")
            .arg(&target.data_dir)
            .arg(format!("--source-server={}", self.conninfo(source, None)))
            .arg("--write-recovery-conf")
            .env("LC_ALL", "C");
        self.with_pgpassword(&mut cmd);
        let r = self.run(
            target,
            &format!("pg_rewind from {} ({})", source.name, source.target()),
            cmd,
            self.timeouts.rewind,
        );
        if let (Err(_), Some(text)) = (&r, &auto_conf) {
            self.write_data_file(target, "postgresql.auto.conf", text)?;
        }
        for (from, to) in moved {
            if to.exists() {
                if from.exists() {
                    let _ = fs::remove_file(&to);
                } else {
                    fs::rename(&to, &from).map_err(Self::io_error(target, &to, "move back"))?;
                }
            }
        }
        let ran = r?;
        let no_rewind =
            ran.stderr.contains("no rewind required") || ran.stdout.contains("no rewind required");
        Ok(if no_rewind {
            RejoinPath::NoRewindNeeded
        } else {
            RejoinPath::Rewound
        })
    }

    /// Moves `member`'s data directory aside and clones it anew from `primary`; on failure
    /// moves it back. Returns where the old one went.
    fn reclone(
        &self,
        member: &Member,
        primary: &Member,
        rewind_error: &str,
    ) -> ClusterResult<PathBuf> {
        // The clone runs as the old directory's owner, not as whoever the empty place
        // would suggest.
        let pg = match self.run_as(member)? {
            Some(user) => self.clone().with_os_user(user),
            None => self.clone(),
        };
        let aside = sibling(&member.data_dir, "lifeboat-old");
        fs::rename(&member.data_dir, &aside).map_err(Self::io_error(
            member,
            &member.data_dir,
            "move aside",
        ))?;
        tracing::info!(member = %member.name, "moved {} to {}", member.data_dir.display(), aside.display());
        match pg.clone_standby(primary, member) {
            Ok(_) => Ok(aside),
            Err(clone) => {
                let _ = self.stop(member, StopMode::Immediate);
                if member.data_dir.exists() {
                    let failed = sibling(&member.data_dir, "lifeboat-failed-clone");
                    fs::rename(&member.data_dir, &failed).map_err(Self::io_error(
                        member,
                        &member.data_dir,
                        "move aside",
                    ))?;
                }
                fs::rename(&aside, &member.data_dir).map_err(Self::io_error(
                    member,
                    &aside,
                    "move back",
                ))?;
                Err(ClusterError::Rejoin {
                    member: member.name.clone(),
                    rewind: rewind_error.to_string(),
                    clone: Box::new(clone),
                })
            }
        }
    }

    /// Drops the inactive `lifeboat_*` slots on `member`.
    fn drop_lifeboat_slots(&self, member: &Member) -> ClusterResult<Vec<String>> {
        let mut c = self.connect(member)?;
        let rows = self.query(
            member,
            &mut c,
            "drop stale Lifeboat slots",
            "select slot_name::text from pg_replication_slots \
             where slot_name like 'lifeboat\\_%' and not active",
        )?;
        let mut dropped = Vec::new();
        for name in rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
        {
            let r = c.execute("select pg_drop_replication_slot($1::name)", &[&name]);
            match r {
                Ok(_) => dropped.push(name),
                Err(e) => {
                    return Err(self.sql_error(member, &format!("drop slot {name}"), &e));
                }
            }
        }
        Ok(dropped)
    }

    // -- settings ------------------------------------------------------------------------

    /// Sets `synchronous_standby_names` on `primary` to `ANY n ("a","b")` or
    /// `FIRST n (…)` (names quoted), or to empty (asynchronous) when `names` is empty;
    /// reloads and waits until new sessions see it.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] for `n` of 0 or more than the names;
    /// [`ClusterError::Sql`]; [`ClusterError::Timeout`] when the reload is not seen.
    pub fn set_synchronous_standbys(
        &self,
        primary: &Member,
        names: &[&str],
        mode: SyncMode,
    ) -> ClusterResult<()> {
        let value = synchronous_standby_names(names, mode)?;
        self.set_reloadable(primary, "synchronous_standby_names", &value)
    }

    /// Writes `generation` into `primary` as `lifeboat.generation` (`ALTER SYSTEM` +
    /// reload; read it with `current_setting('lifeboat.generation', true)`), and waits
    /// until new sessions see it.
    ///
    /// # Errors
    /// [`ClusterError::StaleGeneration`] when the member already carries a higher one.
    pub fn set_generation(&self, primary: &Member, generation: u64) -> ClusterResult<()> {
        if let Some(current) = self.generation(primary)? {
            if current > generation {
                return Err(ClusterError::StaleGeneration {
                    member: primary.name.clone(),
                    current,
                    given: generation,
                });
            }
        }
        self.set_reloadable(primary, "lifeboat.generation", &generation.to_string())
    }

    /// The `lifeboat.generation` `member` carries, when set.
    ///
    /// # Errors
    /// [`ClusterError::Sql`].
    pub fn generation(&self, member: &Member) -> ClusterResult<Option<u64>> {
        let mut c = self.connect(member)?;
        let v = self.query_value(
            member,
            &mut c,
            "read lifeboat.generation",
            "select current_setting('lifeboat.generation', true)",
        )?;
        Ok(v.and_then(|g| g.trim().parse().ok()))
    }

    /// `ALTER SYSTEM SET name = value`, reload, wait until a new session shows it.
    fn set_reloadable(&self, member: &Member, name: &str, value: &str) -> ClusterResult<()> {
        let mut c = self.connect(member)?;
        if name.contains('.') {
            // PostgreSQL 15's ALTER SYSTEM only knows a custom setting that the session has
            // a placeholder for.
            self.query(
                member,
                &mut c,
                &format!("declare {name}"),
                &format!(
                    "select set_config({}, {}, false)",
                    sql_literal(name)?,
                    sql_literal(value)?
                ),
            )?;
        }
        self.query(
            member,
            &mut c,
            &format!("ALTER SYSTEM SET {name}"),
            &format!("alter system set {name} = {}", sql_literal(value)?),
        )?;
        self.query(member, &mut c, "pg_reload_conf", "select pg_reload_conf()")?;
        drop(c);
        let check = format!("select current_setting({}, true)", sql_literal(name)?);
        let deadline = Instant::now() + self.timeouts.streaming;
        loop {
            let mut c = self.connect(member)?;
            let got = self.query_value(member, &mut c, &format!("read {name}"), &check)?;
            if got.as_deref() == Some(value) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    member: member.name.clone(),
                    what: format!("the reload of {name}"),
                    after: self.timeouts.streaming,
                    detail: format!(": sessions still see {got:?}"),
                    log: Box::new(self.log_tail(member)),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers (pure)

/// `synchronous_standby_names` for `names` in `mode` (empty for no names).
///
/// # Errors
/// [`ClusterError::Invalid`] for a count of 0 or above the number of names, or a name with
/// a NUL.
pub fn synchronous_standby_names(names: &[&str], mode: SyncMode) -> ClusterResult<String> {
    if names.is_empty() {
        return Ok(String::new());
    }
    let (word, n) = match mode {
        SyncMode::Any(n) => ("ANY", n),
        SyncMode::First(n) => ("FIRST", n),
    };
    if n == 0 || n as usize > names.len() {
        return Err(ClusterError::Invalid(format!(
            "{word} {n} of {} standbys: the count must be between 1 and the number of names",
            names.len()
        )));
    }
    let mut quoted = Vec::new();
    for name in names {
        if name.is_empty() || name.contains('\0') {
            return Err(ClusterError::Invalid(format!(
                "standby name {name:?} cannot be listed"
            )));
        }
        quoted.push(format!("\"{}\"", name.replace('"', "\"\"")));
    }
    Ok(format!("{word} {n} ({})", quoted.join(",")))
}

/// A value for postgresql.conf: single quotes, `\` and `'` escaped.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// A libpq connection-string value, quoted when needed.
fn conninfo_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// An SQL string literal that means the same whatever `standard_conforming_strings` is.
fn sql_literal(v: &str) -> ClusterResult<String> {
    if v.contains('\0') {
        return Err(ClusterError::Invalid(
            "a setting value cannot hold a NUL character".into(),
        ));
    }
    Ok(format!(
        "E'{}'",
        v.replace('\\', "\\\\").replace('\'', "\\'")
    ))
}

/// A pg_hba address: plain IPs get a host mask.
fn cidr(net: &str) -> String {
    if net.contains('/') {
        return net.to_string();
    }
    match net.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => format!("{net}/32"),
        Ok(std::net::IpAddr::V6(_)) => format!("{net}/128"),
        Err(_) => net.to_string(),
    }
}

/// A free sibling path `<dir>.<tag>-<unix seconds>[-n]`.
fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let normal: PathBuf = dir.components().collect();
    let base = format!("{}.{tag}-{secs}", normal.display());
    let mut p = PathBuf::from(&base);
    let mut n = 1;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    p
}

/// Whether `dir` is missing or an empty directory.
fn is_empty_or_missing(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The last lines of `stderr` (or `stdout` when stderr is empty), indented.
fn indent_tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LOG_LINES)..]
        .iter()
        .map(|l| format!("\n  {l}"))
        .collect()
}

/// The length of `member`'s server log (0 when there is none here).
fn log_len(member: &Member) -> u64 {
    fs::metadata(member.log_path())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The first line at or after byte `*from` of `member`'s server log saying that it cannot
/// follow its primary's timeline; advances `*from` past the complete lines read.
fn diverged_line(member: &Member, from: &mut u64) -> Option<String> {
    const MARKERS: [&str; 3] = [
        "is not in this server's history",
        "forked off current database system timeline",
        "is not a child of this server's history",
    ];
    let mut f = fs::File::open(member.log_path()).ok()?;
    if f.metadata().ok()?.len() < *from {
        *from = 0; // rotated or truncated
    }
    f.seek(std::io::SeekFrom::Start(*from)).ok()?;
    let mut buf = Vec::new();
    f.take(16 << 20).read_to_end(&mut buf).ok()?;
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    *from += complete as u64;
    String::from_utf8_lossy(&buf[..complete])
        .lines()
        .find(|l| MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
}

/// Whether process `pid` exists and is not a zombie. When `/proc/<pid>/stat` cannot be
/// read (`hidepid`, another user's process) the kernel is asked with `kill(pid, 0)`: only
/// `ESRCH` means that no such process exists — "cannot tell" is not "gone". The one rule
/// for "does this PostgreSQL process still run" (the executor's fence and `pg restore`'s
/// refusal of a running cluster use it too).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| {
                !matches!(
                    rustix::process::test_kill_process(p),
                    Err(rustix::io::Errno::SRCH)
                )
            }),
    }
}

/// PIDs of processes whose working directory is `dir` (PostgreSQL's all chdir into their
/// data directory).
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

fn passwd() -> Vec<(String, u32, u32)> {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn user_name(uid: u32) -> Option<String> {
    passwd().into_iter().find(|e| e.1 == uid).map(|e| e.0)
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    passwd()
        .into_iter()
        .find(|e| e.0 == name)
        .map(|e| (e.1, e.2))
}

/// `OpenOptions::mode(0o600)` under a name that reads well in a chain.
trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_are_quoted() {
        assert_eq!(
            synchronous_standby_names(&["s1", "we\"ird"], SyncMode::Any(1)).unwrap(),
            r#"ANY 1 ("s1","we""ird")"#
        );
        assert_eq!(
            synchronous_standby_names(&["a"], SyncMode::First(1)).unwrap(),
            r#"FIRST 1 ("a")"#
        );
        assert_eq!(
            synchronous_standby_names(&[], SyncMode::Any(1)).unwrap(),
            ""
        );
        assert!(synchronous_standby_names(&["a"], SyncMode::Any(2)).is_err());
        assert!(synchronous_standby_names(&["a"], SyncMode::Any(0)).is_err());
    }

    #[test]
    fn slot_names_are_sanitized() {
        let m = Member::new("Shop-DB_2", "h", 5432, "/d");
        assert_eq!(m.slot_name(), "lifeboat_shop_db_2");
        let long = Member::new("x".repeat(63), "h", 5432, "/d");
        assert_eq!(long.slot_name().len(), 63);
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote(r"a'b\c"), r"'a''b\\c'");
        assert_eq!(conninfo_value("127.0.0.1"), "127.0.0.1");
        assert_eq!(conninfo_value("p w'd"), r"'p w\'d'");
        assert_eq!(sql_literal(r"it's\").unwrap(), r"E'it\'s\\'");
        assert_eq!(cidr("10.0.0.1"), "10.0.0.1/32");
        assert_eq!(cidr("::1"), "::1/128");
        assert_eq!(cidr("10.0.0.0/8"), "10.0.0.0/8");
    }

    #[test]
    fn log_path_is_beside_the_data_dir() {
        let m = Member::new("p", "h", 1, "/srv/pg/main/");
        assert_eq!(m.log_path(), PathBuf::from("/srv/pg/main.log"));
    }

    #[test]
    fn divergence_is_read_from_new_complete_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let m = Member::new("s", "h", 1, dir.path().join("s"));
        let mut from = 0;
        assert_eq!(diverged_line(&m, &mut from), None, "no log yet");
        let old = "LOG:  new timeline 2 forked off current database system timeline 1 before \
                   current recovery point 0/5\n";
        fs::write(m.log_path(), old).unwrap();
        // Lines from before the wait are skipped.
        from = old.len() as u64;
        assert_eq!(diverged_line(&m, &mut from), None);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.log_path())
            .unwrap();
        f.write_all(b"LOG:  started streaming\nFATAL:  requested starting point 0/5 on timeline 1 is not in this server's hist")
            .unwrap();
        assert_eq!(
            diverged_line(&m, &mut from),
            None,
            "an incomplete line waits"
        );
        f.write_all(b"ory\n").unwrap();
        let line = diverged_line(&m, &mut from).unwrap();
        assert!(
            line.starts_with("FATAL:  requested starting point"),
            "{line}"
        );
    }

    #[test]
    fn pids_that_are_gone_are_not_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn member_names_are_checked() {
        assert!(Member::new("ok-1_a", "h", 1, "/d").validate().is_ok());
        assert!(Member::new("", "h", 1, "/d").validate().is_err());
        assert!(Member::new("a b", "h", 1, "/d").validate().is_err());
        assert!(Member::new("a", "h", 0, "/d").validate().is_err());
    }
}
