//! [`EtcdServer`] and [`EtcdCluster`]: real etcd (3.4, Debian's `etcd-server`) members on
//! free 127.0.0.1 ports, each with its data in a temp dir, stopped by PID when dropped; a
//! cluster member can be killed and restarted to test quorum loss.
//!
//! Members run with fast Raft timing for tests: `--heartbeat-interval 50` (ms) and
//! `--election-timeout 500` (ms), so a new Raft leader is elected ~0.5–1 s after the old
//! one dies. etcd then grants leases of at least 1 s (its minimum is 1.5 election timeouts).
//! Readiness is `GET /health` answering `{"health":"true"}` on every running member.
//! Never here: installing etcd (that is `cargo xtask setup`) or skipping when it is absent,
//! and never a listener beyond 127.0.0.1.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Error, Result};

/// Environment variable naming the `etcd` binary.
pub const ETCD_BIN_ENV: &str = "LIFEBOAT_ETCD_BIN";

/// Where Debian's `etcd-server` installs it.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// Raft heartbeat of test members, in ms.
pub const HEARTBEAT_MS: u64 = 50;

/// Raft election timeout of test members, in ms.
pub const ELECTION_TIMEOUT_MS: u64 = 500;

/// How long members may take to become healthy.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The `etcd` binary: [`ETCD_BIN_ENV`] or [`DEFAULT_ETCD_BIN`].
///
/// # Errors
/// [`Error::MissingBinary`] naming `cargo xtask setup` when no file is there.
pub fn etcd_bin() -> Result<PathBuf> {
    let path = std::env::var_os(ETCD_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            what: "etcd (package etcd-server)",
            path: path.display().to_string(),
            env: ETCD_BIN_ENV,
        })
    }
}

/// One member: its ports, data dir and (while running) its process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL to this PID only, then reap it so the ports are free again.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running etcd cluster of one or more members on 127.0.0.1.
///
/// Dropping it kills every member (by PID) and removes their data.
pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| match &m.child {
                Some(c) => format!("{} {} pid {}", m.name, m.client_url(), c.id()),
                None => format!("{} {} (stopped)", m.name, m.client_url()),
            })
            .collect();
        f.debug_struct("EtcdCluster")
            .field("dir", &self.dir.path())
            .field("members", &members)
            .finish()
    }
}

impl EtcdCluster {
    /// Starts `n` members that form one cluster and waits until each answers `/health`.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without etcd; [`Error::NotReady`] with a member's log tail
    /// when the cluster is not healthy within 30 s; [`Error::Io`] for temp dirs and spawning.
    pub fn start(n: usize) -> Result<Self> {
        let bin = etcd_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-etcd-")
            .tempdir()
            .map_err(Error::io("create etcd temp dir"))?;
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lifeboat-test".into());
        let mut members = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            bin,
            dir,
            token,
            members,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for i in 0..cluster.members.len() {
            cluster.wait_healthy(i, deadline)?;
        }
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let initial = self.initial_cluster();
        let member_dir = self.dir.path().join(&self.members[i].name);
        std::fs::create_dir_all(&member_dir).map_err(Error::io("create etcd member dir"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(member_dir.join("etcd.log"))
            .map_err(Error::io("create etcd log"))?;
        let log2 = log
            .try_clone()
            .map_err(Error::io("clone etcd log handle"))?;
        let m = &self.members[i];
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(member_dir.join("data"))
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(Error::io(format!("start {}", self.bin.display())))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Polls member `i`'s `/health` until it says true, the member exits, or `deadline`.
    fn wait_healthy(&mut self, i: usize, deadline: Instant) -> Result<()> {
        let what = || format!("etcd member {i}");
        loop {
            let last = match health(self.members[i].client_port) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let exited = match self.members[i].child.as_mut() {
                Some(c) => c.try_wait().ok().flatten(),
                None => {
                    return Err(Error::NotReady {
                        what: what(),
                        secs: READY_DEADLINE.as_secs(),
                        detail: "it is stopped: call restart_member first".into(),
                    })
                }
            };
            if let Some(status) = exited {
                return Err(Error::NotReady {
                    what: what(),
                    secs: READY_DEADLINE.as_secs(),
                    detail: format!("it exited with {status}; log:\n{}", self.log_tail(i)),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: what(),
                    secs: READY_DEADLINE.as_secs(),
                    detail: format!("last answer: {last}; log:\n{}", self.log_tail(i)),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `etcd://`-less endpoint list, `127.0.0.1:P1,127.0.0.1:P2,…`, of every member
    /// (running or not), as `[coordinator] url = "etcd://…"` lists them.
    pub fn endpoints(&self) -> String {
        self.endpoint_list().join(",")
    }

    /// `127.0.0.1:PORT` of each member's client listener, in member order.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: [`EtcdCluster::start`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members.get(i)?.child.as_ref().map(Child::id)
    }

    /// Kills member `i` with SIGKILL and waits for it to exit; its data stays.
    /// Killing a stopped member does nothing.
    ///
    /// # Errors
    /// [`Error::Command`] when there is no member `i`.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.kill();
        Ok(())
    }

    /// Starts member `i` again on its old ports and data and waits until it is healthy
    /// (which needs a quorum of members running). Restarting a running member does nothing.
    ///
    /// # Errors
    /// [`Error::Command`] when there is no member `i`; [`Error::NotReady`] when it is not
    /// healthy within 30 s.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        if self.member_mut(i)?.child.is_some() {
            return Ok(());
        }
        self.spawn(i)?;
        self.wait_healthy(i, Instant::now() + READY_DEADLINE)
    }

    /// Starts every stopped member at once (a quorum must come back together, so one at a
    /// time would never get healthy) and waits until each is healthy.
    ///
    /// # Errors
    /// [`Error::NotReady`] when a member is not healthy within 30 s; [`Error::Io`] spawning.
    pub fn restart_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for i in 0..self.members.len() {
            self.wait_healthy(i, deadline)?;
        }
        Ok(())
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members.get_mut(i).ok_or_else(|| Error::Command {
            what: format!("select etcd member {i}"),
            detail: format!("the cluster has {n} members (0..{n})"),
        })
    }

    /// The cluster's working directory (one subdirectory per member: data and `etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 20 lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let Some(m) = self.members.get(i) else {
            return String::new();
        };
        let path = self.dir.path().join(&m.name).join("etcd.log");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// A running single-member etcd on 127.0.0.1 (an [`EtcdCluster`] of one).
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Starts one member and waits until it answers `/health`.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn start() -> Result<Self> {
        Ok(EtcdServer {
            cluster: EtcdCluster::start(1)?,
        })
    }

    /// `127.0.0.1:PORT` of its client listener.
    pub fn endpoints(&self) -> String {
        self.cluster.endpoints()
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }

    /// Kills the server with SIGKILL and waits for it to exit; its data stays.
    pub fn kill(&mut self) {
        self.cluster.members[0].kill();
    }

    /// Starts it again on its old port and data and waits until it is healthy.
    ///
    /// # Errors
    /// As [`EtcdCluster::restart_member`].
    pub fn restart(&mut self) -> Result<()> {
        self.cluster.restart_member(0)
    }

    /// The last 20 lines of its log.
    pub fn log_tail(&self) -> String {
        self.cluster.log_tail(0)
    }
}

/// `GET /health` on 127.0.0.1:`port`: `Ok` when etcd says `"health":"true"`.
fn health(port: u16) -> std::result::Result<(), String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    c.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let compact: String = answer.chars().filter(|c| !c.is_whitespace()).collect();
    if answer.starts_with("HTTP/1.1 200") && compact.contains(r#""health":"true""#) {
        Ok(())
    } else {
        let last = answer.lines().last().unwrap_or("");
        Err(format!("not healthy yet: {last}"))
    }
}
