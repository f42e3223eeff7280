//! Leases: how backups, reads and prune share a repository without locks that go stale.
//!
//! Lives here: [`Lease`] (acquire, refresh in the background, check before commit, release
//! on drop), [`LeaseInfo`] and [`list_leases`]. Never here: deciding what prune may delete
//! (see `prune`); the protocol is in docs/design/0001-concurrency.md.
//!
//! A lease is a small JSON file `locks/<random id>` naming its holder (host, pid), what it
//! does, when it started and when it was last refreshed. It is refreshed every TTL/3 by a
//! background thread, so a lease whose holder died simply expires after the TTL; on the
//! holder's own host a lease whose process is certainly gone is dead at once ("cannot
//! tell", e.g. under `hidepid`, is not "gone": such a lease lives until it expires). Nobody
//! ever has to remove a lease by hand. A reader that cannot write a lease at all (read-only
//! or full storage) reads without one ([`Lease::acquire_read`]).
//!
//! "The holder's own host" means the same kernel boot and the same pid namespace, not just
//! the same host name: two containers may share a name but not their process tables. A pid
//! that was reused by another process is recognised by its start time.
//!
//! # Fencing
//! Others treat a lease as dead once it has not been refreshed for a TTL. A holder that
//! stalled (SIGSTOP, swapping, a hung disk) for that long must therefore never commit, even
//! if it refreshes the file again afterwards: the refresher marks the lease *lost* when it
//! finds that its previous refresh is older than the TTL minus a margin, and
//! [`Lease::check_valid`] fails from then on. Elapsed time is measured on both the
//! monotonic clock (immune to clock steps) and the wall clock (which, unlike the monotonic
//! clock, keeps running while the machine is suspended); the larger wins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::paths;
use crate::repository::{local_hostname, Repository};

/// What a lease holder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// Writes new data (backup, copy into this repository).
    Write,
    /// Reads packs (restore, check, copy out of this repository).
    Read,
    /// Prune: at most one at a time.
    Prune,
}

/// The contents of a lease file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// What the holder does.
    pub kind: LeaseKind,
    /// The command, for people ("backup", "prune", …).
    pub operation: String,
    /// Holder's host.
    pub hostname: String,
    /// Holder's process id.
    pub pid: u32,
    /// When the lease was taken, seconds since the epoch (holder's clock).
    pub created: f64,
    /// When it was last refreshed, seconds since the epoch (holder's clock).
    pub refreshed: f64,
    /// Seconds after `refreshed` at which it expires.
    pub ttl_s: f64,
    /// Identifies the process table `pid` belongs to (kernel boot id and pid namespace);
    /// the pid is only checked by readers that share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Start time of the process (clock ticks since boot), to recognise a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// Wall-clock seconds since the epoch.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This process table's identity: kernel boot id and pid namespace (`None` off Linux).
fn local_host_id() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// State and start time (field 3 and 22 of `/proc/<pid>/stat`), or `None` when the file
/// cannot be read or parsed. `None` does **not** mean the process is gone: `/proc` mounted
/// with `hidepid`, or another user's process, hide it too (see [`process_state`]).
fn proc_stat(pid: u32) -> Option<(char, Option<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18).and_then(|f| f.parse().ok());
    Some((state, start))
}

/// What this host can tell about a lease holder's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessState {
    /// It runs (and, where its start time could be read, is the same process).
    Running,
    /// It certainly does not run: no such pid, a zombie, or the pid was reused.
    Gone,
    /// It cannot be examined; only the lease's expiry can tell.
    Unknown,
}

/// Whether the process `pid` that started at `start` (when known) still runs here.
///
/// "Cannot tell" is never "gone": `/proc/<pid>/stat` is unreadable when `/proc` is mounted
/// with `hidepid=1|2` or belongs to another user under some security modules, so when it
/// cannot be read the kernel is asked with `kill(pid, 0)`, where only `ESRCH` means that no
/// such process exists (`EPERM` means it exists and belongs to someone else).
fn process_state(pid: u32, start: Option<u64>) -> ProcessState {
    match proc_stat(pid) {
        Some(('Z' | 'X', _)) => ProcessState::Gone,
        Some((_, now_start)) => match (start, now_start) {
            (Some(a), Some(b)) if a != b => ProcessState::Gone,
            _ => ProcessState::Running,
        },
        None => {
            // Pid 0 and anything above i32::MAX are no process (and kill() would read them
            // as "my process group" or a negative group): nothing can hold them.
            let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                return ProcessState::Gone;
            };
            match rustix::process::test_kill_process(p) {
                // It exists, but its start time is hidden: it may be a reused pid; let the
                // lease expire rather than guess.
                Ok(()) | Err(rustix::io::Errno::PERM) => ProcessState::Unknown,
                Err(rustix::io::Errno::SRCH) => ProcessState::Gone,
                Err(_) => ProcessState::Unknown,
            }
        }
    }
}

impl LeaseInfo {
    /// Whether the lease still holds at `now`: refreshed within its TTL and, when held in
    /// this process table (same boot, same pid namespace), its process still runs.
    pub fn is_live(&self, now: f64) -> bool {
        // Same boot id and pid namespace *and* the same host name: a virtual machine cloned
        // while running keeps its boot id, and usually gets a new name.
        let same_table = self.hostname == local_hostname()
            && match &self.host_id {
                Some(h) => Some(h) == local_host_id().as_ref(),
                // Written without a host id: trust the host name alone.
                None => true,
            };
        if same_table && process_state(self.pid, self.pid_start) == ProcessState::Gone {
            return false;
        }
        self.refreshed + self.ttl_s > now
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} by pid {} on {} (started {})",
            self.operation,
            self.pid,
            self.hostname,
            jiff::Timestamp::from_second(self.created as i64)
                .map(|t| t.to_string())
                .unwrap_or_default()
        )
    }
}

/// Lists every lease file (dead ones included), with its path.
///
/// # Errors
/// Storage errors listing or reading; unreadable lease files are skipped.
pub fn list_leases(repo: &Repository) -> Result<Vec<(String, LeaseInfo)>> {
    let mut out = Vec::new();
    for e in repo.storage().list(paths::LOCKS)? {
        let bytes = match repo.storage().get(&e.path) {
            Ok(b) => b,
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err.into()),
        };
        if let Ok(info) = serde_json::from_slice::<LeaseInfo>(&bytes) {
            out.push((e.path, info));
        }
    }
    Ok(out)
}

/// A held lease. Refreshed in the background; released (its file deleted) on drop.
pub struct Lease {
    repo: Repository,
    path: String,
    info: Arc<Mutex<LeaseInfo>>,
    last_ok: Arc<Mutex<Stamp>>,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    wake: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    ttl: Duration,
}

/// Default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// When the lease file was last written successfully, on both clocks.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    mono: Instant,
    wall: f64,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            wall: now_s(),
        }
    }

    /// Time since the stamp: the larger of the monotonic and the wall-clock reading.
    fn age(&self) -> Duration {
        let wall = Duration::try_from_secs_f64(now_s() - self.wall).unwrap_or_default();
        self.mono.elapsed().max(wall)
    }
}

/// How long before the TTL a holder stops trusting its lease.
fn margin(ttl: Duration) -> Duration {
    ttl / 10
}

impl Lease {
    /// Takes a lease of `kind` for `operation`.
    ///
    /// # Errors
    /// Storage errors writing the lease file.
    pub fn acquire(
        repo: &Repository,
        kind: LeaseKind,
        operation: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let mut rnd = [0u8; 16];
        {
            use rand::RngCore;
            rand::rng().fill_bytes(&mut rnd);
        }
        let path = format!("{}/{}", paths::LOCKS, hex::encode(rnd));
        let now = now_s();
        let info = LeaseInfo {
            kind,
            operation: operation.into(),
            hostname: local_hostname(),
            pid: std::process::id(),
            created: now,
            refreshed: now,
            ttl_s: ttl.as_secs_f64(),
            host_id: local_host_id(),
            pid_start: proc_stat(std::process::id()).and_then(|(_, start)| start),
        };
        let written = Stamp::now();
        write_lease(repo, &path, &info)?;
        let info = Arc::new(Mutex::new(info));
        // The file became visible at some point after `written`: the conservative stamp.
        let last_ok = Arc::new(Mutex::new(written));
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = {
            let (repo, path, info, last_ok, lost, stop) = (
                repo.clone(),
                path.clone(),
                info.clone(),
                last_ok.clone(),
                lost.clone(),
                stop.clone(),
            );
            let period = ttl / 3;
            std::thread::Builder::new()
                .name("lease-refresh".into())
                .spawn(move || loop {
                    // Wakes early when the lease is dropped (the channel disconnects).
                    if !matches!(
                        wake_rx.recv_timeout(period),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    ) || stop.load(Ordering::SeqCst)
                    {
                        return;
                    }
                    // Too late: others may already have treated the lease as dead and acted
                    // on it. Refreshing now would hide that; the holder must not commit.
                    if last_ok.lock().age() + margin(ttl) >= ttl {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!("lease {path} lapsed (not refreshed for a TTL); the operation will not commit");
                        return;
                    }
                    let stamp = Stamp::now();
                    let snapshot = {
                        let mut i = info.lock();
                        i.refreshed = stamp.wall;
                        i.clone()
                    };
                    match write_lease(&repo, &path, &snapshot) {
                        Ok(()) => *last_ok.lock() = stamp,
                        Err(e) => tracing::warn!("could not refresh lease {path}: {e}"),
                    }
                })
                .map_err(|e| Error::Io {
                    path: "lease thread".into(),
                    source: e,
                })?
        };
        Ok(Lease {
            repo: repo.clone(),
            path,
            info,
            last_ok,
            lost,
            stop,
            wake: Some(wake_tx),
            thread: Some(thread),
            ttl,
        })
    }

    /// Takes a [`LeaseKind::Read`] lease for `operation` with the default TTL, or goes on
    /// without one where the repository refuses writes for good (a read-only mount or
    /// bucket, read-only credentials, a full disk): reading must work where writing cannot.
    /// Says so once (a warning naming the risk) and returns `None` then.
    ///
    /// Without a lease a reader is protected only as far as `load_index` avoids condemned
    /// packs: a prune sweeping from another host that can write (or one that found
    /// condemned records written before the disk filled) may delete a pack this reader
    /// then reads, which fails the read — blobs are authenticated, so never with wrong
    /// data. docs/design/0001-concurrency.md, "Readers that cannot write".
    ///
    /// # Errors
    /// Other storage errors writing the lease file.
    pub fn acquire_read(repo: &Repository, operation: &str) -> Result<Option<Lease>> {
        match Lease::acquire(repo, LeaseKind::Read, operation, DEFAULT_TTL) {
            Ok(lease) => Ok(Some(lease)),
            Err(Error::Storage(e)) if e.refuses_writes() => {
                tracing::warn!(
                    "cannot record a read lease in {} ({e}); {operation} goes on without one. \
                     Risk: a prune running at the same time from a host that can write there \
                     may delete data this {operation} reads; it then fails (never with wrong \
                     data) and must be run again",
                    repo.storage().describe()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The lease file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// When the lease was taken (seconds since the epoch).
    pub fn created(&self) -> f64 {
        self.info.lock().created
    }

    /// The lease file's contents as last written.
    pub fn info(&self) -> LeaseInfo {
        self.info.lock().clone()
    }

    /// Fencing: fails when the lease may have expired (its last successful refresh is older
    /// than the TTL minus a safety margin), or lapsed at any time before, even if it was
    /// refreshed since. Call right before committing.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn check_valid(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst)
            || self.last_ok.lock().age() + margin(self.ttl) >= self.ttl
        {
            self.lost.store(true, Ordering::SeqCst);
            return Err(Error::LeaseExpired {
                operation: self.info.lock().operation.clone(),
            });
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = self.repo.storage().delete(&self.path) {
            tracing::warn!("could not release lease {}: {e}", self.path);
        }
    }
}

fn write_lease(repo: &Repository, path: &str, info: &LeaseInfo) -> Result<()> {
    let bytes = serde_json::to_vec(info).map_err(|e| Error::Invalid(e.to_string()))?;
    repo.storage().put(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KdfParams;
    use crate::repository::InitOptions;

    fn repo() -> Repository {
        let storage = lifeboat_storage::Storage::memory().unwrap();
        let opts = InitOptions {
            kdf: KdfParams {
                m_cost: 1024,
                t_cost: 1,
                p_cost: 1,
            },
            ..InitOptions::default()
        };
        Repository::init(storage, b"pw", &opts).unwrap()
    }

    #[test]
    fn a_lease_of_this_process_is_live_and_released_on_drop() {
        let repo = repo();
        let lease = Lease::acquire(&repo, LeaseKind::Write, "backup", DEFAULT_TTL).unwrap();
        let leases = list_leases(&repo).unwrap();
        assert_eq!(leases.len(), 1);
        assert!(leases[0].1.is_live(now_s()));
        assert!(lease.check_valid().is_ok());
        drop(lease);
        assert!(list_leases(&repo).unwrap().is_empty());
    }

    #[test]
    fn a_lease_of_a_dead_or_reused_pid_is_dead_at_once() {
        let repo = repo();
        let lease = Lease::acquire(&repo, LeaseKind::Write, "backup", DEFAULT_TTL).unwrap();
        let mut info = lease.info();
        assert!(info.is_live(now_s()));
        // Same pid, another start time: the pid was reused.
        info.pid_start = info.pid_start.map(|s| s + 1);
        assert!(!info.is_live(now_s()));
        // A pid that does not exist (above any pid_max).
        let mut gone = lease.info();
        gone.pid = u32::MAX - 1;
        assert!(!gone.is_live(now_s()));
        // Another process table (another container or machine): only the TTL counts.
        gone.host_id = Some("elsewhere".into());
        assert!(gone.is_live(now_s()));
        assert!(!gone.is_live(now_s() + DEFAULT_TTL.as_secs_f64() + 1.0));
    }

    #[test]
    fn a_lapsed_lease_never_validates_again_even_after_a_refresh() {
        let repo = repo();
        let ttl = Duration::from_millis(300);
        let lease = Lease::acquire(&repo, LeaseKind::Write, "backup", ttl).unwrap();
        assert!(lease.check_valid().is_ok());
        // Pretend the process stalled for a whole TTL since the last refresh.
        *lease.last_ok.lock() = Stamp {
            mono: Instant::now() - ttl,
            wall: now_s() - ttl.as_secs_f64(),
        };
        // The refresher (every TTL/3) notices and gives the lease up instead of reviving it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lease.lost.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the refresher never noticed the lapse"
            );
            std::thread::yield_now();
        }
        *lease.last_ok.lock() = Stamp::now();
        assert!(matches!(
            lease.check_valid(),
            Err(Error::LeaseExpired { .. })
        ));
    }

    #[test]
    fn a_process_that_cannot_be_examined_is_not_gone() {
        // Pid 1 always exists; whether its /proc entry is readable or not, it is not gone.
        assert_ne!(process_state(1, None), ProcessState::Gone);
        assert_eq!(
            process_state(std::process::id(), None),
            ProcessState::Running
        );
        // Pids that cannot exist, and one above pid_max that kill() reports as ESRCH.
        assert_eq!(process_state(0, None), ProcessState::Gone);
        assert_eq!(process_state(u32::MAX, None), ProcessState::Gone);
        assert_eq!(process_state(i32::MAX as u32, None), ProcessState::Gone);
    }

    #[test]
    fn a_clone_with_another_host_name_counts_only_the_ttl() {
        let repo = repo();
        let lease = Lease::acquire(&repo, LeaseKind::Write, "backup", DEFAULT_TTL).unwrap();
        let mut clone = lease.info();
        clone.pid = u32::MAX - 1;
        clone.hostname = format!("{}-clone", clone.hostname);
        assert!(clone.is_live(now_s()));
    }

    #[test]
    fn proc_stat_parses_this_process() {
        let (state, start) = proc_stat(std::process::id()).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(start.is_some());
    }
}
