//! Asynchronous archiving and WAL prefetch through a local spool directory — what
//! pgBackRest calls `archive-async` and `archive-get` queueing.
//!
//! Lives here: [`push_async`] (the `archive_command` side: answer from the spool, start the
//! pusher when needed), [`pusher`] (the background process: pushes every `.ready` segment
//! of `pg_wal` on several threads and leaves `.ok`/`.error` in the spool), [`fetch_spooled`]
//! and [`prefetcher`] (the `restore_command` side: segments fetched ahead of PostgreSQL's
//! single-threaded replay). Never here: how one WAL file is stored or read (`archive`).
//!
//! # Why it is safe
//! * A push is acknowledged to PostgreSQL (exit 0) only when `<name>.ok` exists, and the
//!   pusher writes it only after the segment is durable in the repository.
//! * A prefetched segment is renamed into the spool only after it was read and verified
//!   whole; `fetch_spooled` moves it into place with a rename, so PostgreSQL never sees half
//!   of one. A damaged segment is never spooled: the foreground fetch then reads it itself
//!   and fails loudly.
//! * One pusher and one prefetcher per spool (an exclusive `flock` on a lock file); a
//!   second one started by a race exits at once. Both exit after being idle a while.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_repo::Repository;

use crate::archive::{wal_fetch, wal_push_with, FetchOutcome};
use crate::error::{Error, Result};
use crate::walname::{Segment, SegmentSize, WalFile};
use lifeboat_repo::wal::WalSpeed;

/// How long the foreground waits for the pusher before giving up (PostgreSQL retries).
pub const PUSH_WAIT: Duration = Duration::from_secs(120);
/// How long the background processes stay without work before they exit.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The archive part of a spool: `<spool>/<source>/archive`.
pub fn archive_dir(spool: &Path, source: &str) -> PathBuf {
    spool.join(source).join("archive")
}

/// The fetch part of a spool: `<spool>/<source>/fetch`.
pub fn fetch_dir(spool: &Path, source: &str) -> PathBuf {
    spool.join(source).join("fetch")
}

/// Takes the exclusive lock `path` without waiting; `None` when someone holds it.
fn try_lock(path: &Path) -> Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(Error::Io {
            path: path.display().to_string(),
            source: e.into(),
        }),
    }
}

/// Whether a background process holds the lock `path`.
fn running(path: &Path) -> Result<bool> {
    Ok(try_lock(path)?.is_none())
}

/// What the foreground of an asynchronous push found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncPush {
    /// The pusher stored it (and the status file was consumed).
    Done,
    /// The pusher failed on it: the message it left.
    Failed(String),
    /// Nothing yet; the caller must start a pusher (if none runs) and wait.
    Pending,
}

/// Looks for the status of `name` in the spool and consumes it.
///
/// # Errors
/// I/O errors on the spool.
pub fn push_status(spool: &Path, source: &str, name: &str) -> Result<AsyncPush> {
    let dir = archive_dir(spool, source);
    let ok = dir.join(format!("{name}.ok"));
    if ok.exists() {
        std::fs::remove_file(&ok).map_err(Error::io(&ok))?;
        return Ok(AsyncPush::Done);
    }
    let err = dir.join(format!("{name}.error"));
    if let Ok(text) = std::fs::read_to_string(&err) {
        let _ = std::fs::remove_file(&err);
        return Ok(AsyncPush::Failed(text.trim().to_string()));
    }
    Ok(AsyncPush::Pending)
}

/// The `archive_command` side of asynchronous archiving: answers from the spool, calling
/// `start_pusher` when no pusher runs, and waits (up to [`PUSH_WAIT`]) for the answer.
///
/// # Errors
/// [`Error::Command`] with the pusher's message when it failed on this segment, or when no
/// answer came in time (PostgreSQL retries the segment later).
pub fn push_async(
    spool: &Path,
    source: &str,
    path: &Path,
    start_pusher: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?
        .to_string();
    let dir = archive_dir(spool, source);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let lock = dir.join("pusher.lock");
    let deadline = Instant::now() + PUSH_WAIT;
    let mut started = false;
    let mut pause = Duration::from_millis(1);
    loop {
        match push_status(spool, source, &name)? {
            AsyncPush::Done => return Ok(()),
            AsyncPush::Failed(msg) => {
                return Err(Error::Command {
                    what: format!("asynchronous push of {name}"),
                    detail: msg,
                })
            }
            AsyncPush::Pending => {}
        }
        if !running(&lock)? {
            // None runs (or it just exited after finding nothing): start one. After a
            // start, give it a moment to take its lock before starting another.
            if !started || pause >= Duration::from_millis(200) {
                let wal_dir = std::path::absolute(path)
                    .map_err(Error::io(path))?
                    .parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| {
                        Error::Invalid(format!("{} has no directory", path.display()))
                    })?;
                start_pusher(&wal_dir)?;
                started = true;
                pause = Duration::from_millis(1);
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Command {
                what: format!("asynchronous push of {name}"),
                detail: format!(
                    "no answer from the background pusher within {} s; see {}",
                    PUSH_WAIT.as_secs(),
                    dir.join("pusher.log").display()
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Segments PostgreSQL marked ready to archive (`pg_wal/archive_status/*.ready`), oldest
/// first (history files first: PostgreSQL archives them before the segments that need
/// them).
fn ready(pg_wal: &Path) -> Vec<String> {
    let dir = pg_wal.join("archive_status");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".ready"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

/// The background pusher: pushes every segment PostgreSQL marked ready, `workers` at a
/// time, leaving `<name>.ok` or `<name>.error` in the spool; exits after [`IDLE_EXIT`]
/// without work, or at once when another pusher holds the lock.
///
/// # Errors
/// Spool I/O errors (push failures are reported per segment in `.error` files).
pub fn pusher(
    repo: &Repository,
    source: &str,
    pg_wal: &Path,
    spool: &Path,
    workers: usize,
) -> Result<()> {
    let dir = archive_dir(spool, source);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let Some(_lock) = try_lock(&dir.join("pusher.lock"))? else {
        return Ok(());
    };
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < IDLE_EXIT {
        // Ready segments without an answer yet (PostgreSQL renames .ready to .done once the
        // foreground returned 0, so answered ones drop out of this list by themselves).
        let todo: Vec<String> = ready(pg_wal)
            .into_iter()
            .filter(|n| {
                !dir.join(format!("{n}.ok")).exists() && !dir.join(format!("{n}.error")).exists()
            })
            .collect();
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        idle_since = Instant::now();
        // Each push already uses both cores for compression; two at a time keeps the disk
        // and the network busy while one compresses. With more segments waiting than
        // that, compress faster until the backlog is gone: falling behind costs the primary
        // disk space (and the RPO), a larger repository only costs storage.
        let speed = if todo.len() > workers.max(1).max(crate::archive::CATCH_UP_BACKLOG) {
            WalSpeed::CatchUp
        } else {
            WalSpeed::Normal
        };
        let results = lifeboat_repo::repository::par_map(&todo, workers.max(1), |name| {
            (
                name.clone(),
                wal_push_with(repo, source, &pg_wal.join(name), speed),
            )
        });
        for (name, r) in results {
            let (file, text) = match r {
                Ok(_) => (dir.join(format!("{name}.ok")), String::new()),
                Err(e) => (dir.join(format!("{name}.error")), format!("{e}\n")),
            };
            crate::archive::write_atomically(&file, text.as_bytes())?;
        }
    }
    // Status files nobody consumed (PostgreSQL stopped, or archived by another route).
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let pending: BTreeSet<String> = ready(pg_wal).into_iter().collect();
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let base = n.trim_end_matches(".ok").trim_end_matches(".error");
            if (n.ends_with(".ok") || n.ends_with(".error")) && !pending.contains(base) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Moves a prefetched `name` from the spool to `dest`; `false` when it is not there.
///
/// # Errors
/// I/O errors moving it.
pub fn fetch_spooled(spool: &Path, source: &str, name: &str, dest: &Path) -> Result<bool> {
    let dir = fetch_dir(spool, source);
    let file = dir.join(name);
    if !file.exists() {
        return Ok(false);
    }
    // Tell the prefetcher how far recovery got (it keeps its window ahead of this).
    crate::archive::write_atomically(&dir.join("wanted"), name.as_bytes())?;
    match std::fs::rename(&file, dest) {
        Ok(()) => Ok(true),
        // Another file system: copy, then drop the spooled one.
        Err(_) => {
            std::fs::copy(&file, dest).map_err(Error::io(dest))?;
            let _ = std::fs::remove_file(&file);
            Ok(true)
        }
    }
}

/// Records that recovery asked for `name`, for the prefetcher.
///
/// # Errors
/// I/O errors on the spool.
pub fn note_wanted(spool: &Path, source: &str, name: &str) -> Result<()> {
    let dir = fetch_dir(spool, source);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    crate::archive::write_atomically(&dir.join("wanted"), name.as_bytes())
}

/// Whether a prefetcher runs for this spool.
///
/// # Errors
/// I/O errors on the spool.
pub fn prefetcher_running(spool: &Path, source: &str) -> Result<bool> {
    let dir = fetch_dir(spool, source);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    running(&dir.join("prefetcher.lock"))
}

/// The background prefetcher: keeps the `ahead` segments after the one recovery last asked
/// for (`wanted`) in the spool, fetching `workers` at a time; stops at the first segment the
/// repository does not have (the end of the archive), and after [`IDLE_EXIT`] without
/// progress.
///
/// # Errors
/// Spool I/O errors; fetch errors are left for the foreground to meet and report.
pub fn prefetcher(
    repo: &Repository,
    source: &str,
    spool: &Path,
    size: SegmentSize,
    ahead: usize,
    workers: usize,
) -> Result<()> {
    let dir = fetch_dir(spool, source);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let Some(_lock) = try_lock(&dir.join("prefetcher.lock"))? else {
        return Ok(());
    };
    let mut idle_since = Instant::now();
    let mut last_wanted = String::new();
    let mut end_of_archive: Option<Segment> = None;
    while idle_since.elapsed() < IDLE_EXIT {
        let wanted = std::fs::read_to_string(dir.join("wanted")).unwrap_or_default();
        let Some(WalFile::Segment(current)) = WalFile::parse(wanted.trim(), size) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if wanted != last_wanted {
            idle_since = Instant::now();
            last_wanted = wanted.clone();
            // Spooled segments recovery has passed are of no more use.
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if let Some(WalFile::Segment(s)) = WalFile::parse(&n, size) {
                        if s.timeline != current.timeline || s.number <= current.number {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
        let mut todo = Vec::new();
        let mut s = current.next();
        for _ in 0..ahead {
            if end_of_archive.is_some_and(|e| s.number >= e.number && s.timeline == e.timeline) {
                break;
            }
            let name = s.name(size);
            if !dir.join(&name).exists() {
                todo.push(name);
            }
            s = s.next();
        }
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let results = lifeboat_repo::repository::par_map(&todo, workers.max(1), |name| {
            let tmp = dir.join(format!(".{name}.part"));
            let r = wal_fetch(repo, source, name, &tmp);
            (name.clone(), tmp, r)
        });
        for (name, tmp, r) in results {
            match r {
                Ok(FetchOutcome::Fetched { .. }) => {
                    let _ = std::fs::rename(&tmp, dir.join(&name));
                }
                Ok(FetchOutcome::NotFound) => {
                    let _ = std::fs::remove_file(&tmp);
                    if let Some(WalFile::Segment(s)) = WalFile::parse(&name, size) {
                        end_of_archive =
                            Some(end_of_archive.map_or(
                                s,
                                |e: Segment| {
                                    if s.number < e.number {
                                        s
                                    } else {
                                        e
                                    }
                                },
                            ));
                    }
                }
                Err(e) => {
                    // Damaged or unreadable: not spooled; the foreground fetch meets the
                    // same error and stops recovery with it.
                    tracing::warn!("prefetch of {name}: {e}");
                    let _ = std::fs::remove_file(&tmp);
                    end_of_archive = WalFile::parse(&name, size).and_then(|f| match f {
                        WalFile::Segment(s) => Some(s),
                        _ => None,
                    });
                }
            }
        }
    }
    // Leave nothing behind: recovery went past, or stopped wanting more.
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if WalFile::parse(&n, size).is_some() || n.ends_with(".part") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lists_history_files_first_then_segments_in_order() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("archive_status");
        std::fs::create_dir_all(&st).unwrap();
        for n in [
            "000000010000000000000003.ready",
            "000000010000000000000002.ready",
            "00000002.history.ready",
            "000000010000000000000001.done",
        ] {
            std::fs::write(st.join(n), b"").unwrap();
        }
        assert_eq!(
            ready(d.path()),
            vec![
                "00000002.history".to_string(),
                "000000010000000000000002".to_string(),
                "000000010000000000000003".to_string()
            ]
        );
    }

    #[test]
    fn status_files_are_consumed_once() {
        let d = tempfile::tempdir().unwrap();
        let dir = archive_dir(d.path(), "orders");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A.ok"), b"").unwrap();
        std::fs::write(dir.join("B.error"), b"disk full\n").unwrap();
        assert_eq!(
            push_status(d.path(), "orders", "A").unwrap(),
            AsyncPush::Done
        );
        assert_eq!(
            push_status(d.path(), "orders", "A").unwrap(),
            AsyncPush::Pending
        );
        assert_eq!(
            push_status(d.path(), "orders", "B").unwrap(),
            AsyncPush::Failed("disk full".into())
        );
        // Only one lock holder.
        let a = try_lock(&dir.join("l")).unwrap();
        assert!(a.is_some());
        assert!(try_lock(&dir.join("l")).unwrap().is_none());
        drop(a);
        assert!(try_lock(&dir.join("l")).unwrap().is_some());
    }
}
