//! Leases: how backups, reads and prune share a repository without locks that go stale.
//!
//! Lives here: [`Lease`] (acquire, refresh in the background, check before commit, release
//! on drop), [`LeaseInfo`] and [`list_leases`]. Never here: deciding what prune may delete
//! (see `prune`); the protocol is in docs/design/0001-concurrency.md.
//!
//! A lease is a small JSON file `locks/<random id>` naming its holder (host, pid), what it
//! does, when it started and when it was last refreshed. It is refreshed every TTL/3 by a
//! background thread, so a lease whose holder died simply expires after the TTL; on the
//! holder's own host a lease whose process is gone is dead at once. Nobody ever has to
//! remove a lease by hand.

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
}

/// Wall-clock seconds since the epoch.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

impl LeaseInfo {
    /// Whether the lease still holds at `now`: refreshed within its TTL and, when held on
    /// this host, its process still runs.
    pub fn is_live(&self, now: f64) -> bool {
        if self.hostname == local_hostname() && !pid_alive(self.pid) {
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
    last_ok: Arc<Mutex<Instant>>,
    stop: Arc<AtomicBool>,
    wake: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    ttl: Duration,
}

/// Default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

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
        };
        write_lease(repo, &path, &info)?;
        let info = Arc::new(Mutex::new(info));
        let last_ok = Arc::new(Mutex::new(Instant::now()));
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = {
            let (repo, path, info, last_ok, stop) = (
                repo.clone(),
                path.clone(),
                info.clone(),
                last_ok.clone(),
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
                    let snapshot = {
                        let mut i = info.lock();
                        i.refreshed = now_s();
                        i.clone()
                    };
                    match write_lease(&repo, &path, &snapshot) {
                        Ok(()) => *last_ok.lock() = Instant::now(),
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
            stop,
            wake: Some(wake_tx),
            thread: Some(thread),
            ttl,
        })
    }

    /// The lease file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// When the lease was taken (seconds since the epoch).
    pub fn created(&self) -> f64 {
        self.info.lock().created
    }

    /// Fencing: fails when the lease may have expired (its last successful refresh is older
    /// than the TTL minus a safety margin). Call right before committing.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn check_valid(&self) -> Result<()> {
        let margin = self.ttl / 10;
        if self.last_ok.lock().elapsed() + margin >= self.ttl {
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
