//! The executor: carries one action of the state machine out against the coordinator and
//! PostgreSQL, and says how it went as an [`Outcome`].
//!
//! Every action but `Claim` first checks that the coordinator still holds the action's
//! generation: an action decided under a generation that has moved on is refused
//! (`Outcome::Stale`), so a controller that was overtaken cannot fence or promote.
//! It must never decide anything: which member, in which order, is the machine's call.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_coord::Coordinator;
use lifeboat_failover::{Action, ActionKind, Outcome};
use lifeboat_postgres::cluster::{
    process_alive, ClusterError, Member, Pg, RejoinPath, StopMode, SyncMode,
};

/// How long a promotion may take before it counts as failed.
const PROMOTE_WAIT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed postmaster may take to be gone before the fence counts as failed.
const FENCE_WAIT: Duration = Duration::from_secs(5);
/// How long a probe of a fenced member's address may take.
const LISTEN_PROBE: Duration = Duration::from_secs(1);
/// How long a switchover's target may take to receive the stopped primary's last WAL.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// Carries actions out (cheap to clone: shared handles).
#[derive(Clone)]
pub struct Executor {
    pg: Pg,
    members: Arc<Vec<Member>>,
    coord: Arc<Coordinator>,
}

impl Executor {
    /// An executor over `members` (the config's, in order).
    #[must_use]
    pub fn new(pg: Pg, members: Vec<Member>, coord: Arc<Coordinator>) -> Self {
        Self {
            pg,
            members: Arc::new(members),
            coord,
        }
    }

    /// The member called `name`.
    #[must_use]
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Every member, in config order.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The PostgreSQL handle.
    #[must_use]
    pub fn pg(&self) -> &Pg {
        &self.pg
    }

    /// Carries `action` out. Notices (routes, alerts) are the daemon's; they return `None`.
    pub async fn run(&self, action: &Action) -> Option<Outcome> {
        if let ActionKind::Claim { expected, member } = &action.kind {
            return Some(match self.coord.promote(*expected, member).await {
                Ok(g) => Outcome::Claimed(g),
                Err(lifeboat_coord::Error::Stale { found, .. }) => Outcome::Stale(found),
                Err(e) => Outcome::Failed(e.to_string()),
            });
        }
        if matches!(
            action.kind,
            ActionKind::Route { .. } | ActionKind::Alert { .. }
        ) {
            return None;
        }
        match self.coord.state().await {
            Ok(s) if s.generation > action.generation => return Some(Outcome::Stale(s.generation)),
            Ok(_) => {}
            Err(e) => return Some(Outcome::Failed(format!("coordinator: {e}"))),
        }
        let this = self.clone();
        let action = action.clone();
        let started = Instant::now();
        let kind = format!("{:?}", action.kind);
        let outcome = tokio::task::spawn_blocking(move || this.blocking(&action))
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("the executor panicked: {e}")));
        tracing::info!(took = ?started.elapsed(), ?outcome, "{kind}");
        Some(outcome)
    }

    fn find(&self, name: &str) -> Result<&Member, Outcome> {
        self.member(name)
            .ok_or_else(|| Outcome::Failed(format!("no member {name} in the config")))
    }

    fn blocking(&self, action: &Action) -> Outcome {
        let r = match &action.kind {
            ActionKind::Fence { member } => self.find(member).map(|m| self.fence(m)),
            ActionKind::StopClean { member } => self.find(member).map(|m| self.stop_clean(m)),
            ActionKind::Promote {
                member,
                wait_for_lsn,
                sync_names,
            } => self
                .find(member)
                .map(|m| self.promote(m, *wait_for_lsn, sync_names, action.generation)),
            ActionKind::Repoint { member, primary } => self
                .find(member)
                .and_then(|m| Ok((m, self.find(primary)?)))
                .map(|(m, p)| self.repoint(m, p)),
            ActionKind::Rejoin { member, primary } => self
                .find(member)
                .and_then(|m| Ok((m, self.find(primary)?)))
                .map(|(m, p)| self.rejoin(m, p)),
            ActionKind::Recover { member, primary } => self
                .find(member)
                .and_then(|m| Ok((m, self.find(primary)?)))
                .map(|(m, p)| self.recover(m, p)),
            ActionKind::SetSync { primary, names } => self.find(primary).map(|p| {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let r = if names.is_empty() {
                    self.pg.set_synchronous_standbys(p, &[], SyncMode::Any(1))
                } else {
                    self.pg
                        .set_synchronous_standbys(p, &names, SyncMode::Any(1))
                };
                done(r.map(|_| ()))
            }),
            ActionKind::Claim { .. } | ActionKind::Route { .. } | ActionKind::Alert { .. } => {
                Ok(Outcome::Ok)
            }
        };
        r.unwrap_or_else(|o| o)
    }

    /// Makes `m` unable to take writes, at once: `standby.signal` first (any restart comes
    /// up in recovery), then SIGKILL to the postmaster and every child of it. A stopped
    /// (SIGSTOP) server dies too: SIGKILL needs no cooperation, and nothing of it resumes.
    ///
    /// `Ok` means the fence is **confirmed**: `standby.signal` is durable in the data
    /// directory, no postmaster of it runs, and nothing listens on its address. Anything
    /// less is `Failed` with what is unknown and how to fix it, and the caller must not
    /// promote another member on it (the machine waits for an operator's approval). The
    /// postmaster is killed even when the signal file cannot be written. A member whose data
    /// directory is not on this host (or a wrong `data_dir`) counts as fenced only when
    /// nothing accepts connections at its address.
    pub(crate) fn fence(&self, m: &Member) -> Outcome {
        if !m.data_dir.join("PG_VERSION").exists() {
            return match listening(m) {
                Ok(false) => {
                    tracing::info!(member = %m.name, "{} not found: not on this host; nothing listens at {}:{}, so it takes no writes", m.data_dir.display(), m.host, m.port);
                    Outcome::Ok
                }
                Ok(true) => Outcome::Failed(format!(
                    "could not fence {}: {} has no PG_VERSION (not on this host, or a wrong data_dir in lifeboat.toml) and {}:{} still accepts connections; stop that server or correct the data_dir, then `lifeboat failover approve`",
                    m.name,
                    m.data_dir.display(),
                    m.host,
                    m.port
                )),
                Err(e) => Outcome::Failed(format!(
                    "could not fence {}: {} has no PG_VERSION (not on this host, or a wrong data_dir in lifeboat.toml) and whether {}:{} still runs is unknown ({e}); make sure it is stopped, then `lifeboat failover approve`",
                    m.name,
                    m.data_dir.display(),
                    m.host,
                    m.port
                )),
            };
        }
        // The signal file first, but a failure to write it does not spare the postmaster.
        let signal = write_signal(&m.data_dir)
            .err()
            .map(|e| format!("writing standby.signal into {}: {e}", m.data_dir.display()));
        let mut problems: Vec<String> = signal.into_iter().collect();
        match self.pg.postmaster_pid(m) {
            Ok(Some(pid)) => {
                kill_tree(pid);
                let deadline = Instant::now() + FENCE_WAIT;
                while process_alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if process_alive(pid) {
                    problems.push(format!(
                        "its postmaster {pid} still runs {FENCE_WAIT:?} after SIGKILL"
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("finding its postmaster: {e}")),
        }
        match listening(m) {
            Ok(false) => {}
            Ok(true) => problems.push(format!(
                "{}:{} still accepts connections (another server there, or a wrong data_dir in lifeboat.toml)",
                m.host, m.port
            )),
            Err(e) => problems.push(format!("probing {}:{}: {e}", m.host, m.port)),
        }
        if problems.is_empty() {
            return Outcome::Ok;
        }
        let killed = problems.len() == 1 && problems[0].starts_with("writing standby.signal");
        Outcome::Failed(format!(
            "could not fence {}: {}; {}check the data_dir in lifeboat.toml and that it cannot take writes, then `lifeboat failover approve`",
            m.name,
            problems.join("; "),
            if killed {
                "it was killed, but a restart (systemd) would bring it up as a primary: "
            } else {
                ""
            }
        ))
    }

    /// A switchover's first step: stop the primary with a fast shutdown (its WAL reaches
    /// the connected standbys first), leave `standby.signal` so it restarts read-only, and
    /// report its last checkpoint position.
    fn stop_clean(&self, m: &Member) -> Outcome {
        if let Err(e) = write_signal(&m.data_dir) {
            return Outcome::Failed(format!("writing standby.signal: {e}"));
        }
        if let Err(e) = self.pg.stop(m, StopMode::Fast) {
            return Outcome::Failed(e.to_string());
        }
        match checkpoint_location(self.pg.bin_dir(), &m.data_dir) {
            Ok(lsn) => Outcome::Stopped(lsn),
            Err(e) => Outcome::Failed(e),
        }
    }

    fn promote(
        &self,
        m: &Member,
        wait_for_lsn: Option<u64>,
        sync: &[String],
        generation: u64,
    ) -> Outcome {
        if let Some(target) = wait_for_lsn {
            let deadline = Instant::now() + CATCH_UP_WAIT;
            loop {
                let got = self
                    .pg
                    .status(m)
                    .ok()
                    .and_then(|s| s.receive_lsn.or(s.replay_lsn))
                    .map(|l| l.0);
                if got.is_some_and(|l| l > target) {
                    break;
                }
                if Instant::now() > deadline {
                    return Outcome::Failed(format!(
                        "{} did not receive the old primary's WAL up to {target:X} within {CATCH_UP_WAIT:?}",
                        m.name
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Before it takes a single write: which standbys its commits must wait for.
        let names: Vec<&str> = sync.iter().map(String::as_str).collect();
        if let Err(e) = self
            .pg
            .set_synchronous_standbys(m, &names, SyncMode::Any(1))
        {
            return Outcome::Failed(format!("setting synchronous_standby_names: {e}"));
        }
        match self.pg.promote(m, PROMOTE_WAIT) {
            Ok(_) | Err(ClusterError::AlreadyPrimary { .. }) => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        done(self.pg.set_generation(m, generation))
    }

    fn repoint(&self, m: &Member, primary: &Member) -> Outcome {
        match self.pg.repoint(m, primary) {
            Ok(_) => Outcome::Ok,
            // It cannot follow (it received WAL past the fork, or never streams from the
            // new primary): rewind it.
            Err(e @ (ClusterError::Diverged { .. } | ClusterError::Timeout { .. })) => {
                tracing::warn!(member = %m.name, "repoint failed ({e}); rejoining instead");
                self.rejoin(m, primary)
            }
            // Anything else (the new primary does not answer, SQL on the standby failed)
            // says nothing against the standby: never kill it for that; retry later.
            Err(e) => Outcome::Failed(format!("repointing {} to {}: {e}", m.name, primary.name)),
        }
    }

    fn rejoin(&self, m: &Member, primary: &Member) -> Outcome {
        if let Ok(Some(pid)) = self.pg.postmaster_pid(m) {
            if let Err(e) = write_signal(&m.data_dir) {
                return Outcome::Failed(format!("writing standby.signal: {e}"));
            }
            kill_tree(pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        clear_stale_locks(&m.data_dir);
        match self.pg.rejoin(m, primary) {
            Ok(r) => {
                tracing::info!(member = %m.name, path = ?r.path, took = ?r.took, "rejoined");
                match r.path {
                    RejoinPath::Recloned {
                        set_aside,
                        rewind_error,
                    } => Outcome::Repaired(format!(
                        "could not be rewound ({rewind_error}); cloned anew from {}, its old data directory kept at {}",
                        primary.name,
                        set_aside.display()
                    )),
                    _ => Outcome::Ok,
                }
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    fn recover(&self, m: &Member, primary: &Member) -> Outcome {
        match self.pg.is_running(m) {
            Ok(false) => {
                clear_stale_locks(&m.data_dir);
                if let Err(e) = self.pg.start(m) {
                    tracing::warn!(member = %m.name, "start failed ({e}); rejoining");
                    return match self.rejoin(m, primary) {
                        Outcome::Failed(why) => Outcome::Failed(format!(
                            "it does not start ({e}); rejoining failed too: {why}"
                        )),
                        Outcome::Repaired(how) => {
                            Outcome::Repaired(format!("it did not start ({e}); it {how}"))
                        }
                        o => o,
                    };
                }
            }
            Ok(true) => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        match self.pg.wait_streaming(m, primary, None) {
            Ok(_) => Outcome::Ok,
            Err(_) => self.repoint(m, primary),
        }
    }
}

fn done<T>(r: Result<T, ClusterError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Writes an empty `standby.signal` into `data_dir` and syncs it.
fn write_signal(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join("standby.signal");
    let f = std::fs::File::create(&path)?;
    f.sync_all()?;
    // Owned like the data directory, so the server's own tools can remove it later.
    if let Ok(meta) = std::fs::metadata(data_dir) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()));
    }
    std::fs::File::open(data_dir)?.sync_all()
}

/// Whether something accepts connections at `m`'s address (a socket directory, or host and
/// port): `Ok(false)` only when every address refused (or the socket is absent).
///
/// # Errors
/// The reason when an address neither accepted nor refused (a timeout, no route).
fn listening(m: &Member) -> Result<bool, String> {
    if m.host.starts_with('/') {
        let path = Path::new(&m.host).join(format!(".s.PGSQL.{}", m.port));
        return match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
    }
    use std::net::ToSocketAddrs;
    let addrs = (m.host.as_str(), m.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", m.host))?;
    let mut unknown = None;
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, LISTEN_PROBE) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => unknown = Some(format!("{a}: {e}")),
        }
    }
    unknown.map_or(Ok(false), Err)
}

/// SIGKILL to `pid` and every process whose parent it is (PostgreSQL's backends).
fn kill_tree(pid: u32) {
    let children = children_of(pid);
    for p in std::iter::once(pid).chain(children) {
        if let Some(p) = i32::try_from(p)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// Removes the lock files of a dead postmaster (`postmaster.pid` and its socket's
/// `.s.PGSQL.PORT.lock`) when the process they name is gone or a zombie, so a start or a
/// pg_rewind is not refused for a server that no longer exists.
fn clear_stale_locks(data_dir: &Path) {
    let pidfile = data_dir.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pidfile) else {
        return;
    };
    let Some(lock_file) = lifeboat_postgres::server_files::PostmasterPid::parse(&text) else {
        return;
    };
    let pid = lock_file.pid;
    if process_alive(pid) {
        return;
    }
    if let (Some(dir), Some(port)) = (&lock_file.socket_dir, lock_file.port) {
        let lock = dir.join(format!(".s.PGSQL.{port}.lock"));
        let same = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim() == pid.to_string()))
            .unwrap_or(false);
        if same {
            let _ = std::fs::remove_file(dir.join(format!(".s.PGSQL.{port}")));
            let _ = std::fs::remove_file(&lock);
        }
    }
    let _ = std::fs::remove_file(&pidfile);
    tracing::info!(pid, dir = %data_dir.display(), "removed the lock files of a dead postmaster");
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The "Latest checkpoint location" of a stopped cluster, from `pg_controldata`.
fn checkpoint_location(bin_dir: &Path, data_dir: &Path) -> Result<u64, String> {
    let out = std::process::Command::new(bin_dir.join("pg_controldata"))
        .arg(data_dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("pg_controldata: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .and_then(|v| lifeboat_health::parse_lsn(v.trim()))
        .ok_or_else(|| {
            format!(
                "pg_controldata {} printed no checkpoint location: {}",
                data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_counts_as_free_only_when_it_refuses() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let m = Member::new("db1", "127.0.0.1", port, "/nonexistent");
        assert_eq!(listening(&m), Ok(true));
        drop(l);
        assert_eq!(listening(&m), Ok(false));
        // A socket directory without the socket: nothing listens.
        let dir = tempfile::tempdir().unwrap();
        let m = Member::new("db1", dir.path().to_str().unwrap(), 5432, "/nonexistent");
        assert_eq!(listening(&m), Ok(false));
    }

    #[test]
    fn a_wrong_data_dir_with_the_server_still_answering_is_no_fence() {
        // The data directory is not here, but its address answers: not confirmed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let m = Member::new("db1", "127.0.0.1", port, "/nonexistent/data");
        let dir = tempfile::tempdir().unwrap();
        let coord = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Coordinator::open_embedded(
                lifeboat_coord::EmbeddedOptions::new(dir.path().join("state.sqlite"), "orders"),
            ))
            .unwrap();
        let ex = Executor::new(Pg::new("postgres"), vec![m.clone()], Arc::new(coord));
        match ex.fence(&m) {
            Outcome::Failed(why) => assert!(
                why.contains("db1") && why.contains("data_dir") && why.contains("failover approve"),
                "{why}"
            ),
            o => panic!("a fence of a member still answering was confirmed: {o:?}"),
        }
        drop(l);
        assert_eq!(ex.fence(&m), Outcome::Ok, "nothing answers: fenced");
    }

    /// The lock files of a dead postmaster go (through the shared `postmaster.pid` decoder);
    /// a lock file whose PID could address a process group is left alone.
    #[test]
    fn stale_lock_files_of_a_dead_postmaster_are_removed() {
        let data = tempfile::tempdir().unwrap();
        let sockets = tempfile::tempdir().unwrap();
        // No process has the largest PID Linux allows (and /proc has no entry for it).
        let pid = i32::MAX;
        std::fs::write(
            data.path().join("postmaster.pid"),
            format!(
                "{pid}\n{}\n1764500000\n5999\n{}\n127.0.0.1\n",
                data.path().display(),
                sockets.path().display()
            ),
        )
        .unwrap();
        std::fs::write(
            sockets.path().join(".s.PGSQL.5999.lock"),
            format!("{pid}\n"),
        )
        .unwrap();
        std::fs::write(sockets.path().join(".s.PGSQL.5999"), "").unwrap();
        clear_stale_locks(data.path());
        assert!(!data.path().join("postmaster.pid").exists());
        assert!(!sockets.path().join(".s.PGSQL.5999.lock").exists());
        assert!(!sockets.path().join(".s.PGSQL.5999").exists());

        std::fs::write(data.path().join("postmaster.pid"), "-1\n").unwrap();
        clear_stale_locks(data.path());
        assert!(data.path().join("postmaster.pid").exists());
    }
}
