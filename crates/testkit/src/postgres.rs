//! [`PgServer`]: a real PostgreSQL 15 cluster in its own temp dir on a free 127.0.0.1 port,
//! started with `initdb`/`pg_ctl` and stopped by PID when dropped.
//!
//! PostgreSQL refuses to run as root, and these machines run tests as root: every server
//! command then runs as the `postgres` OS user (`runuser -u postgres --`), which owns the
//! temp dir. [`PgServer::as_owner`] wraps any other command the same way, so that
//! `archive_command`s and the tests' own `lifeboat` calls write files the server can read.
//! Never here: installing PostgreSQL (that is `cargo xtask setup`) or skipping when it is
//! absent, and never the default cluster on port 5432.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Error, Result};

/// Environment variable naming the directory of PostgreSQL's server binaries.
pub const PG_BIN_ENV: &str = "LIFEBOAT_PG_BIN";

/// Where Debian's `postgresql-15` puts them.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The OS user that owns clusters when tests run as root.
const OWNER: &str = "postgres";

/// How long a server may take to start, stop or reach a state a test waits for.
const DEADLINE: Duration = Duration::from_secs(120);

/// The directory of `initdb`, `pg_ctl`, `postgres`, `psql`, `pg_basebackup`.
///
/// # Errors
/// [`Error::MissingBinary`] naming `cargo xtask setup` when `initdb` is not there.
pub fn pg_bin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(PG_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
    for tool in ["initdb", "pg_ctl", "postgres", "psql", "pg_basebackup"] {
        if !dir.join(tool).is_file() {
            return Err(Error::MissingBinary {
                what: "PostgreSQL 15 (package postgresql-15)",
                path: dir.join(tool).display().to_string(),
                env: PG_BIN_ENV,
            });
        }
    }
    Ok(dir)
}

/// Whether this process runs as root (then servers run as [`OWNER`]).
fn is_root() -> bool {
    // /proc/self/status names the real, effective, saved and fs uids, in that order.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(Error::io("read /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == user)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| Error::Command {
            what: format!("look up the `{user}` OS user"),
            detail: "not in /etc/passwd: install postgresql-15 with `cargo xtask setup`".into(),
        })
}

/// Gives `path` (and everything below it) to the cluster owner when running as root.
///
/// # Errors
/// When the owner does not exist or a chown fails.
pub fn give_to_owner(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = user_ids(OWNER)?;
    fn walk(p: &Path, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(Error::io(format!("chown {}", p.display())))?;
        let md =
            std::fs::symlink_metadata(p).map_err(Error::io(format!("stat {}", p.display())))?;
        if md.is_dir() {
            for e in std::fs::read_dir(p).map_err(Error::io(format!("list {}", p.display())))? {
                let e = e.map_err(Error::io(format!("list {}", p.display())))?;
                walk(&e.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(path, uid, gid)
}

/// A command that runs as the cluster owner: `runuser -u postgres -- PROGRAM` as root,
/// `PROGRAM` otherwise. The environment is passed through `runuser` unchanged.
pub fn as_owner(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", OWNER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A temp dir owned by the cluster owner (for repositories, spool dirs, restore targets
/// that `lifeboat` running as that user must write).
///
/// # Errors
/// When the dir cannot be made or given away.
pub fn owner_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(Error::io("create temp dir"))?;
    give_to_owner(dir.path())?;
    Ok(dir)
}

/// Runs a command to completion and returns stdout, or [`Error::Command`] with its output.
fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("start {what}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            what: what.to_string(),
            detail: format!(
                "exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A running (or stopped) PostgreSQL cluster owned by a test.
pub struct PgServer {
    bin: PathBuf,
    /// Holds `data/`, `sock/` and `server.log`; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("data", &self.data_dir())
            .field("pid", &self.pid())
            .finish()
    }
}

impl PgServer {
    /// `initdb` (with data checksums) a new cluster, add `conf` lines to postgresql.conf
    /// (after settings for a test server: port, 127.0.0.1 only, a socket in the temp dir,
    /// `wal_level = replica`), and start it.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without PostgreSQL 15; [`Error::Command`] with the output
    /// of a failing `initdb` or `pg_ctl` (and the server log).
    pub fn start(conf: &[&str]) -> Result<Self> {
        let server = Self::init(conf)?;
        server.start_server()?;
        Ok(server)
    }

    /// Like [`PgServer::start`], without starting it.
    ///
    /// # Errors
    /// As [`PgServer::start`].
    pub fn init(conf: &[&str]) -> Result<Self> {
        let server = Self::empty()?;
        run(
            "initdb",
            as_owner(server.bin.join("initdb"))
                .args(["--data-checksums", "-U", "postgres", "--auth=trust", "-D"])
                .arg(server.data_dir()),
        )?;
        server.write_conf(conf)?;
        Ok(server)
    }

    /// A new temp dir and port with no data directory yet (for `pg_basebackup`, or a
    /// restore that a test starts with [`PgServer::adopt`]).
    fn empty() -> Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .map_err(Error::io("create postgres temp dir"))?;
        std::fs::create_dir(dir.path().join("sock")).map_err(Error::io("create socket dir"))?;
        give_to_owner(dir.path())?;
        Ok(PgServer {
            bin,
            dir,
            port: free_port()?,
        })
    }

    /// Takes over a data directory made by someone else (a restore), moving it into a new
    /// temp dir, rewriting its port and socket settings, and starting it. The caller's
    /// recovery settings (postgresql.auto.conf, recovery.signal) stay as they are.
    ///
    /// # Errors
    /// When the move or the start fails.
    pub fn adopt(data: &Path, conf: &[&str]) -> Result<Self> {
        let server = Self::empty()?;
        std::fs::rename(data, server.data_dir())
            .map_err(Error::io(format!("move {} into place", data.display())))?;
        give_to_owner(&server.data_dir())?;
        server.write_conf(conf)?;
        server.start_server()?;
        Ok(server)
    }

    /// A streaming standby of `primary`, cloned with `pg_basebackup -R` and started.
    ///
    /// # Errors
    /// When the clone or the start fails.
    pub fn standby_of(primary: &PgServer, conf: &[&str]) -> Result<Self> {
        let server = Self::empty()?;
        run(
            "pg_basebackup",
            as_owner(server.bin.join("pg_basebackup"))
                .args(["-R", "-X", "stream", "-c", "fast", "-h"])
                .arg(primary.socket_dir())
                .args(["-p", &primary.port.to_string(), "-U", "postgres", "-D"])
                .arg(server.data_dir()),
        )?;
        server.write_conf(conf)?;
        server.start_server()?;
        Ok(server)
    }

    fn write_conf(&self, conf: &[&str]) -> Result<()> {
        use std::io::Write;
        let path = self.data_dir().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        let mut text = format!(
            "\n# lifeboat-testkit\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 10\n\
             max_replication_slots = 10\nfsync = on\nlogging_collector = off\n",
            self.port,
            self.socket_dir().display()
        );
        for line in conf {
            text.push_str(line);
            text.push('\n');
        }
        f.write_all(text.as_bytes())
            .map_err(Error::io(format!("write {}", path.display())))
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl start -w`).
    ///
    /// # Errors
    /// [`Error::Command`] with the server log when it does not start.
    pub fn start_server(&self) -> Result<()> {
        let r = run(
            "pg_ctl start",
            as_owner(self.bin.join("pg_ctl"))
                .args(["start", "-w", "-t", &DEADLINE.as_secs().to_string(), "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path()),
        );
        r.map(|_| ()).map_err(|e| Error::Command {
            what: "pg_ctl start".into(),
            detail: format!("{e}\nserver log:\n{}", self.log_tail()),
        })
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn stop(&self) -> Result<()> {
        run(
            "pg_ctl stop",
            as_owner(self.bin.join("pg_ctl"))
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(self.data_dir()),
        )
        .map(|_| ())
    }

    /// Kills the postmaster with SIGKILL (a crash: nothing is flushed or archived after
    /// this) and waits until it and its children are gone.
    ///
    /// # Errors
    /// When the server was not running or does not die before the deadline.
    pub fn kill(&self) -> Result<()> {
        let pid = self.pid().ok_or_else(|| Error::Command {
            what: "kill postgres".into(),
            detail: "no postmaster.pid: the server is not running".into(),
        })?;
        run(
            "kill -9",
            Command::new("kill").args(["-9", &pid.to_string()]),
        )?;
        let deadline = Instant::now() + DEADLINE;
        // The children exit when they notice the postmaster is gone; the port frees then.
        while Path::new(&format!("/proc/{pid}")).exists()
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("postgres {pid} to die"),
                    secs: DEADLINE.as_secs(),
                    detail: "still running".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A crashed cluster keeps its postmaster.pid; pg_ctl start copes with that.
        Ok(())
    }

    /// Promotes a standby and waits until it accepts writes.
    ///
    /// # Errors
    /// When `pg_ctl promote` fails.
    pub fn promote(&self) -> Result<()> {
        run(
            "pg_ctl promote",
            as_owner(self.bin.join("pg_ctl"))
                .args(["promote", "-w", "-D"])
                .arg(self.data_dir()),
        )
        .map(|_| ())
    }

    /// Runs SQL with `psql -Atq` as the `postgres` database user and returns its output
    /// (one line per row, columns separated by `|`), trimmed.
    ///
    /// # Errors
    /// [`Error::Command`] with psql's message when the SQL fails.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in("postgres", sql)
    }

    /// Like [`PgServer::sql`] in database `db`.
    ///
    /// # Errors
    /// As [`PgServer::sql`].
    pub fn sql_in(&self, db: &str, sql: &str) -> Result<String> {
        let out = run(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(["-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                ])
                .arg(sql),
        )?;
        Ok(out.trim().to_string())
    }

    /// Waits until `sql` returns `want` (or the deadline passes).
    ///
    /// # Errors
    /// [`Error::NotReady`] with the last answer.
    pub fn wait_for(&self, sql: &str, want: &str) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.sql(sql);
            if matches!(&got, Ok(v) if v == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("`{sql}` = {want}"),
                    secs: DEADLINE.as_secs(),
                    detail: format!("last answer: {got:?}; log:\n{}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A libpq connection string for this server over TCP.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The directory of the server binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The postmaster's PID while it runs (first line of postmaster.pid).
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // An immediate shutdown by PID (SIGQUIT), then wait briefly so the temp dir can go.
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
