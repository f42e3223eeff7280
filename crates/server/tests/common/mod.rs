//! What the daemon's acceptance tests share: an estate (config, ports, data directories)
//! whose PostgreSQL servers are killed when it is dropped, a writer that inserts through
//! the proxy every ~10 ms and logs each acknowledged id, and small probes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    missing_docs,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_server::bootstrap::bootstrap;
use lifeboat_server::{Daemon, DaemonOptions, Status};
use lifeboat_testkit::free_port;

pub const TOKEN: &str = "test-token-0123456789";

pub struct Estate {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ports: Vec<u16>,
    pub config_text: String,
}

impl Estate {
    /// `members` members on free ports; `extra` goes into `[cluster]`.
    pub fn new(members: usize, extra: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        // The daemon's log on stderr with RUST_LOG=info (etc.).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::Builder::new().prefix("lb-ha-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().to_path_buf();
        let ports: Vec<u16> = (0..members).map(|_| free_port().unwrap()).collect();
        let mut text = format!(
            "[cluster]\nname = \"orders\"\nreplication = \"sync\"\n{extra}\n\
             [coordinator]\nurl = \"embedded\"\nstate = \"{}/state.sqlite\"\n\
             [proxy]\nlisten = \"127.0.0.1:{}\"\nread_listen = \"127.0.0.1:{}\"\n\
             [api]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n",
            root.display(),
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        for (i, port) in ports.iter().enumerate() {
            text.push_str(&format!(
                "[[cluster.member]]\nname = \"m{}\"\nhost = \"127.0.0.1\"\nport = {port}\ndata_dir = \"{}/pg/m{}\"\n",
                i + 1,
                root.display(),
                i + 1
            ));
        }
        std::fs::write(root.join("lifeboat.toml"), &text).unwrap();
        Estate {
            _dir: dir,
            root,
            ports,
            config_text: text,
        }
    }

    pub fn config(&self) -> lifeboat_config::Config {
        lifeboat_config::parse("lifeboat.toml", &self.config_text, &self.root, &|_| None)
            .unwrap_or_else(|p| panic!("{p}"))
    }

    /// The config file (for the CLI).
    pub fn config_path(&self) -> PathBuf {
        self.root.join("lifeboat.toml")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("pg/m{i}"))
    }

    pub fn dsn(&self, i: usize) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.ports[i - 1]
        )
    }

    /// Bootstraps the cluster (m1 primary), starts the daemon, waits until it is healthy
    /// with m2 as the synchronous failover target, and creates the `orders` table.
    pub async fn start(&self) -> Daemon {
        self.bootstrap().await;
        self.daemon().await
    }

    /// Bootstraps the cluster: m1 primary, the others its standbys.
    pub async fn bootstrap(&self) {
        let boot = bootstrap(&self.config(), None).await.unwrap();
        println!("bootstrap: {boot:?}");
        assert_eq!(boot.primary, "m1");
    }

    /// Starts the daemon on a bootstrapped cluster (see [`Estate::start`]).
    pub async fn daemon(&self) -> Daemon {
        let daemon = Daemon::start(self.config(), DaemonOptions::default())
            .await
            .unwrap();
        wait_status(&daemon, "a healthy cluster", 30, |s| {
            healthy_with(s, "m1", "m2")
        })
        .await;
        let dsn = self.dsn(1);
        tokio::task::block_in_place(|| {
            let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
            c.batch_execute(
                "create table orders(id bigint primary key, at timestamptz default now())",
            )
            .unwrap();
        });
        daemon
    }
}

impl Drop for Estate {
    fn drop(&mut self) {
        for i in 1..=self.ports.len() {
            let d = self.data_dir(i);
            if let Some(pid) = postmaster_pid(&d) {
                // A stopped server would not die of SIGKILL alone until resumed.
                for p in tree(pid) {
                    signal(p, "KILL");
                    signal(p, "CONT");
                }
            }
        }
    }
}

pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `pid` and every process whose parent it is (a postmaster's children), from /proc.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `pid` runs (exists and is no zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X")
    })
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

pub async fn wait_status(d: &Daemon, what: &str, secs: u64, f: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rx = d.watch_status();
    loop {
        let s = rx.borrow_and_update().clone();
        if f(&s) {
            return s;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}: {s:#?}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

pub fn healthy_with(s: &Status, primary: &str, standby: &str) -> bool {
    s.phase == "healthy"
        && s.primary.as_deref() == Some(primary)
        && s.proxy.routed_to.is_some()
        && s.members
            .iter()
            .any(|m| m.name == standby && m.role == "standby" && m.streaming && !m.needs_rejoin)
        && s.sync_set.iter().any(|n| n == standby)
        && s.failover_target.as_deref() == Some(standby)
}

/// The writer: one insert per ~10 ms through the proxy, reconnecting after errors; logs
/// each acknowledged id with its time.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    pub errors: Arc<Mutex<Vec<Instant>>>,
    /// When each write was acknowledged, and by which server (its port).
    pub acked_by: Arc<Mutex<Vec<(Instant, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the writer did.
pub struct Written {
    /// Acknowledged ids, in order.
    pub ids: Vec<i64>,
    /// Failed statements or connection attempts.
    pub errors: usize,
    /// The longest interval between two consecutive acknowledgements.
    pub max_gap: Duration,
}

impl Writer {
    pub fn start(proxy: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let acked_by = Arc::new(Mutex::new(Vec::new()));
        let (s, a, e, b) = (
            stop.clone(),
            acked.clone(),
            errors.clone(),
            acked_by.clone(),
        );
        let dsn = format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=2",
            proxy.ip(),
            proxy.port()
        );
        let thread = std::thread::spawn(move || {
            let mut id = 0i64;
            let mut client: Option<postgres::Client> = None;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = postgres::Client::connect(&dsn, postgres::NoTls).ok();
                    if client.is_none() {
                        e.lock().unwrap().push(Instant::now());
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
                id += 1;
                let r = client.as_mut().map(|c| {
                    c.query_one(
                        "insert into orders(id) values ($1) returning inet_server_port()",
                        &[&id],
                    )
                });
                match r {
                    Some(Ok(row)) => {
                        let at = Instant::now();
                        a.lock().unwrap().push((id, at));
                        let port = row.get::<_, Option<i32>>(0).unwrap_or(0);
                        b.lock()
                            .unwrap()
                            .push((at, u16::try_from(port).unwrap_or(0)));
                    }
                    _ => {
                        e.lock().unwrap().push(Instant::now());
                        client = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            stop,
            acked,
            errors,
            acked_by,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more writes than now were acknowledged.
    pub async fn wait_acked(&self, n: usize, secs: u64) {
        let want = self.acked.lock().unwrap().len() + n;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.acked.lock().unwrap().len() < want {
            assert!(
                Instant::now() < deadline,
                "the writer made no progress ({} acknowledged, want {want})",
                self.acked.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn acked_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > t)
            .map(|(_, at)| *at)
    }

    /// When the first write after `t` was acknowledged by the server on `port`.
    pub fn acked_by_after(&self, port: u16, t: Instant) -> Option<Instant> {
        self.acked_by
            .lock()
            .unwrap()
            .iter()
            .find(|(at, p)| *at > t && *p == port)
            .map(|(at, _)| *at)
    }

    /// Waits for the first write acknowledged after `t`.
    pub async fn wait_acked_after(
        &self,
        t: Instant,
        secs: u64,
        what: &dyn Fn() -> String,
    ) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(at) = self.acked_after(t) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no write acknowledged within {secs} s: {}",
                what()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn finish(mut self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap();
        let max_gap = acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        Written {
            ids: acked.iter().map(|(i, _)| *i).collect(),
            errors: self.errors.lock().unwrap().len(),
            max_gap,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn ids_on(dsn: &str) -> Vec<i64> {
    let mut c = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
    c.query("select id from orders order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The acknowledged ids that `dsn`'s `orders` lacks.
pub fn missing_on(dsn: &str, acked: &[i64]) -> Vec<i64> {
    let on = tokio::task::block_in_place(|| ids_on(dsn));
    acked
        .iter()
        .filter(|i| on.binary_search(i).is_err())
        .copied()
        .collect()
}

/// Asserts that `dsn` is a standby in recovery that refuses an insert.
pub fn assert_read_only(dsn: &str, what: &str) {
    tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
        let r: bool = c
            .query_one("select pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(r, "{what} must be read-only");
        assert!(
            c.execute("insert into orders(id) values (-1)", &[])
                .is_err(),
            "{what} took a write"
        );
    });
}

/// Tries one insert directly on `dsn` (short timeouts): `Ok` means it took a write.
pub fn try_write(dsn: &str, id: i64) -> Result<(), String> {
    let dsn = format!("{dsn} connect_timeout=1 options='-c statement_timeout=1000'");
    let mut c = postgres::Client::connect(&dsn, postgres::NoTls).map_err(|e| why(&e))?;
    c.execute("insert into orders(id) values ($1)", &[&id])
        .map(|_| ())
        .map_err(|e| why(&e))
}

/// The server's message, or the error with its cause.
pub fn why(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// A request to the daemon's API with the bearer token: (HTTP status, body).
pub async fn api(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Nothing changes for `d`: for `how_long`, `f` holds on every status snapshot.
pub async fn holds_for(d: &Daemon, how_long: Duration, what: &str, f: impl Fn(&Status) -> bool) {
    let until = Instant::now() + how_long;
    let mut rx = d.watch_status();
    loop {
        let s = rx.borrow_and_update().clone();
        assert!(f(&s), "{what} did not hold: {s:#?}");
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}
