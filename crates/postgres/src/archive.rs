//! `archive_command` and `restore_command`: one WAL file into the repository, or out of it.
//!
//! Lives here: [`wal_push`] and [`wal_fetch`]. Never here: deciding which WAL a backup needs
//! (`catalog`) or anything slow per call — PostgreSQL runs these once per 16 MiB segment,
//! and a slow archiver makes WAL pile up on the primary.
//!
//! # Crash safety
//! A push is atomic (the repository holds the whole object or nothing; see
//! `lifeboat_repo::wal`) and idempotent: pushing a segment again after a crash, or after
//! PostgreSQL retried a push whose answer was lost, succeeds when the content is the same,
//! and fails without overwriting anything when it differs. A fetch writes a temp file beside
//! the destination and renames it into place, so PostgreSQL never sees half a segment.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use lifeboat_repo::wal::{PutOutcome, WalInput, WalSpeed};
use lifeboat_repo::Repository;

use crate::error::{Error, Result};
use crate::walname::{SegmentSize, WalFile};

/// Threads used to compress or open one WAL file (its 4 MiB pieces).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// The file name of `path` when it is a PostgreSQL WAL archive file name.
fn wal_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?;
    // The smallest segment size has the most segments per log, so it accepts every name
    // any segment size can produce.
    let smallest = SegmentSize::new(1 << 20).unwrap_or_default();
    if WalFile::parse(name, smallest).is_none() {
        return Err(Error::Invalid(format!(
            "{name:?} is not a WAL file name (a segment, .partial, .history or .backup file); \
             archive_command must pass %p"
        )));
    }
    Ok(name.to_string())
}

/// What [`wal_push`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The WAL file name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Stored, or already there with the same content.
    pub outcome: PutOutcome,
    /// Wall time of the push (read, compress, seal, write, fsync), in seconds.
    pub duration_seconds: f64,
}

/// Stores the WAL file at `path` (`%p` of `archive_command`) under `source`.
///
/// # Errors
/// [`Error::Invalid`] for a file whose name is not a WAL file name; an I/O error reading
/// it; `lifeboat_repo::Error::WalConflict` when the repository holds different content
/// under that name (nothing is overwritten); storage errors.
pub fn wal_push(repo: &Repository, source: &str, path: &Path) -> Result<PushReport> {
    // A backlog of segments waiting (PostgreSQL writes faster than it archives): compress
    // faster until it is gone.
    let speed = match path.parent().map(|d| ready_count(d, CATCH_UP_BACKLOG + 1)) {
        Some(n) if n > CATCH_UP_BACKLOG => WalSpeed::CatchUp,
        _ => WalSpeed::Normal,
    };
    wal_push_with(repo, source, path, speed)
}

/// More segments than this waiting in `pg_wal/archive_status` switch pushes to
/// [`WalSpeed::CatchUp`].
pub const CATCH_UP_BACKLOG: usize = 4;

/// How many `.ready` files `pg_wal/archive_status` holds (counting stops at `limit`).
pub fn ready_count(pg_wal: &Path, limit: usize) -> usize {
    std::fs::read_dir(pg_wal.join("archive_status")).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
            .take(limit)
            .count()
    })
}

/// Like [`wal_push`], compressing at `speed` (the asynchronous pusher catches up on a
/// backlog with [`WalSpeed::CatchUp`]).
///
/// # Errors
/// As [`wal_push`].
pub fn wal_push_with(
    repo: &Repository,
    source: &str,
    path: &Path,
    speed: WalSpeed,
) -> Result<PushReport> {
    let started = Instant::now();
    let name = wal_name(path)?;
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let len = file.metadata().map_err(Error::io(path))?.len();
    let outcome = repo
        .wal_put_from(source, &name, WalInput::File(&file, len), threads(), speed)
        .map_err(|e| match e {
            lifeboat_repo::Error::Io { source, .. } => Error::Io {
                path: path.display().to_string(),
                source,
            },
            other => other.into(),
        })?;
    Ok(PushReport {
        name,
        bytes: len,
        outcome,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// What [`wal_fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchOutcome {
    /// Written to the destination.
    Fetched {
        /// Bytes written.
        bytes: u64,
    },
    /// The repository does not hold that file (PostgreSQL then takes the archive to end
    /// here, or tries another timeline).
    NotFound,
}

/// Writes WAL file `name` of `source` to `dest` (`%f` and `%p` of `restore_command`).
///
/// # Errors
/// `lifeboat_repo::Error::Damaged` naming the repository file when it fails verification
/// (recovery must stop then, never skip it); I/O errors writing `dest`; storage errors.
pub fn wal_fetch(repo: &Repository, source: &str, name: &str, dest: &Path) -> Result<FetchOutcome> {
    let smallest = SegmentSize::new(1 << 20).unwrap_or_default();
    if WalFile::parse(name, smallest).is_none() {
        return Err(Error::Invalid(format!(
            "{name:?} is not a WAL file name; restore_command must pass %f and %p"
        )));
    }
    let data = match repo.wal_get(source, name, threads()) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => match streamed_segment(repo, source, name)? {
            Some(d) => d,
            None => return Ok(FetchOutcome::NotFound),
        },
        Err(e) => return Err(e.into()),
    };
    write_atomically(dest, &data)?;
    Ok(FetchOutcome::Fetched {
        bytes: data.len() as u64,
    })
}

/// A segment that `pg stream` holds only in pieces (the newest WAL, received before the
/// primary was lost): its bytes from offset 0 as far as the pieces reach without a hole,
/// zero-filled to the segment size — what `pg_receivewal`'s `.partial` files are. Recovery
/// replays up to the end of the valid records and stops there.
fn streamed_segment(repo: &Repository, source: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let prefix = format!("{name}.stream.");
    let entries: Vec<String> = repo
        .wal_list(source)?
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if entries.is_empty() {
        return Ok(None);
    }
    let (snaps, _) = repo.snapshots()?;
    let size = crate::catalog::base_backups(&snaps, source)
        .last()
        .and_then(|b| SegmentSize::new(b.info.segment_size))
        .unwrap_or_default();
    let mut pieces: Vec<crate::catalog::StreamPiece> = entries
        .iter()
        .filter_map(|n| crate::catalog::StreamPiece::parse(n, size))
        .collect();
    pieces.sort();
    let mut out: Vec<u8> = Vec::with_capacity(size.bytes() as usize);
    for p in pieces {
        let (start, end) = (p.start as usize, p.end as usize);
        if start > out.len() {
            break; // a hole: what follows cannot be replayed
        }
        if end <= out.len() {
            continue;
        }
        let bytes = repo.wal_get(source, &p.name(size), 1)?;
        if bytes.len() != end - start {
            return Err(Error::Repo(lifeboat_repo::Error::damaged(
                lifeboat_repo::wal::wal_path(source, &p.name(size)),
                format!("holds {} bytes, its name says {}", bytes.len(), end - start),
            )));
        }
        out.extend_from_slice(&bytes[out.len() - start..]);
    }
    if out.is_empty() {
        return Ok(None);
    }
    out.resize(size.bytes() as usize, 0);
    Ok(Some(out))
}

/// Writes `data` to a temp file beside `dest` and renames it over `dest`.
pub(crate) fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let file_name = dest
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", dest.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".lifeboat-{}", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => Path::new(&tmp_name).to_path_buf(),
    };
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.flush()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wal_names_are_pushed_or_fetched() {
        assert!(wal_name(Path::new("/x/pg_wal/000000010000000000000003")).is_ok());
        assert!(wal_name(Path::new("pg_wal/00000002.history")).is_ok());
        assert!(wal_name(Path::new("/etc/passwd")).is_err());
        assert!(wal_name(Path::new("/")).is_err());
    }
}
