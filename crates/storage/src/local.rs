//! Local file system specifics that OpenDAL's fs service does not give us: every write
//! (atomic and durable), create-only writes that are atomic against concurrent writers,
//! and directory fsyncs after writes and deletions.
//! Lives here: the temp directory name (created by the first write, never by opening),
//! `put`, `put_new` by hard link, staged files, directory syncing after writes and
//! deletions, stale-temp cleanup.
//! Never here: reads, listing or anything the OpenDAL fs service already does well.
//!
//! Why (docs/decisions/0010-local-fsync.md): OpenDAL's fs writer does not fsync the
//! directory, so after a power loss the new name may be gone although `put` returned `Ok`;
//! it needs its temp directory to exist when the storage is opened (so a mistyped or
//! read-only location gained or needed one), and its retry layer retried `EROFS`/`ENOSPC`
//! for ~21 s. Its `if_not_exists` on fs is a check followed by a rename, so two concurrent
//! creators can both "win".

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Directory below the root where objects are written before they appear.
pub(crate) const TMP_DIR: &str = ".tmp";

/// Whether a listed path is an in-flight temporary file rather than an object.
pub(crate) fn is_temporary(path: &str) -> bool {
    path == TMP_DIR || path.starts_with(".tmp/")
}

/// Resolves an object path below `root`, refusing anything that could escape it.
pub(crate) fn object_path(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let rel = Path::new(path.trim_start_matches('/'));
    let ok = !path.is_empty()
        && !path.ends_with('/')
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok || is_temporary(path.trim_start_matches('/')) {
        return Err(Error::config(
            path,
            "not a valid object path: use a relative path of plain names such as data/ab/ab12",
        ));
    }
    Ok(root.join(rel))
}

/// Fsyncs the directory holding `path`, and, if `created_dirs`, every directory between
/// it and `root` (new directory entries live in their parents).
fn sync_dirs(root: &Path, target: &Path, created_dirs: bool, path: &str) -> Result<(), Error> {
    let mut dir = target.parent();
    while let Some(d) = dir {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        if !created_dirs || d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Creates a new temp file `<root>/.tmp/<name>`, creating `.tmp` first when it is missing
/// (never the root: a root that does not exist is no repository).
fn create_temp(root: &Path, name: &str, object: &str) -> Result<(File, PathBuf), Error> {
    let dir = root.join(TMP_DIR);
    let tmp = dir.join(name);
    let open = || OpenOptions::new().write(true).create_new(true).open(&tmp);
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(object, e)),
            }
            open()
        }
        other => other,
    }
    .map_err(|e| Error::io(object, e))?;
    Ok((file, tmp))
}

/// Writes `data` as the object `path` atomically and durably: a temp file under `.tmp`,
/// fsynced, renamed into place, the directories that changed fsynced. Replaces an existing
/// object. Failures are reported at once: a read-only or full file system does not pass.
pub(crate) fn put(root: &Path, path: &str, data: &[u8]) -> Result<(), Error> {
    let mut staged = StagedFile::create_for(root, path)?;
    staged
        .file
        .write_all(data)
        .map_err(|e| Error::io(path, e))?;
    staged.publish(root, path)
}

/// Fsyncs each directory that held one of the deleted objects `paths`, once: until then a
/// deleted name may come back after a power loss (a pack deleted by prune reappearing is
/// garbage; an index or lease reappearing is worse). A directory that is gone (nothing was
/// there to delete) needs nothing.
pub(crate) fn sync_deleted(root: &Path, paths: &[&str]) -> Result<(), Error> {
    let mut dirs: std::collections::BTreeMap<PathBuf, &str> = std::collections::BTreeMap::new();
    for path in paths {
        // A path OpenDAL deleted but that is no object path (none is) holds nothing to sync.
        let Ok(target) = object_path(root, path) else {
            continue;
        };
        dirs.entry(target.parent().unwrap_or(root).to_path_buf())
            .or_insert(path);
    }
    for (dir, path) in dirs {
        match File::open(&dir).and_then(|f| f.sync_all()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|e| Error::io(path, e))?,
        }
    }
    Ok(())
}

/// Writes `parts` (one after the other) as `path` only if no object of that name exists,
/// atomically: the data is written and fsynced under `<root>/.tmp`, then hard-linked to
/// its name, which fails if the name exists, even when another process links at the same
/// instant.
pub(crate) fn put_new(root: &Path, path: &str, parts: &[&[u8]]) -> Result<(), Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = object_path(root, path)?;
    let parent = target.parent().unwrap_or(root);
    let created_dirs = !parent.exists();
    fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
    let name = format!(
        "new-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let (mut f, tmp) = create_temp(root, &name, path)?;
    let result = (|| {
        for data in parts {
            f.write_all(data).map_err(|e| Error::io(path, e))?;
        }
        f.sync_all().map_err(|e| Error::io(path, e))?;
        match fs::hard_link(&tmp, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::already_exists(path))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    })();
    // The temp name is ours alone; failing to remove it leaves garbage, not damage.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dirs(root, &target, created_dirs, path)
}

/// A temp file under `<root>/.tmp` that becomes an object when published.
pub(crate) struct StagedFile {
    file: File,
    tmp: PathBuf,
}

impl StagedFile {
    pub(crate) fn create(root: &Path) -> Result<Self, Error> {
        Self::create_for(root, ".tmp")
    }

    /// A temp file for the object `object` (named in errors).
    fn create_for(root: &Path, object: &str) -> Result<Self, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "stage-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (file, tmp) = create_temp(root, &name, object)?;
        Ok(StagedFile { file, tmp })
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.file.write_all(data).map_err(|e| Error::io(".tmp", e))
    }

    /// Fsyncs the file, renames it to `path` and fsyncs the directories that changed.
    pub(crate) fn publish(self, root: &Path, path: &str) -> Result<(), Error> {
        let target = object_path(root, path)?;
        let parent = target.parent().unwrap_or(root);
        let created_dirs = !parent.exists();
        let result = (|| {
            fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
            self.file.sync_all().map_err(|e| Error::io(path, e))?;
            fs::rename(&self.tmp, &target).map_err(|e| Error::io(path, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result?;
        sync_dirs(root, &target, created_dirs, path)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // After publish the temp name no longer exists; otherwise it is ours to remove.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Removes temp files under `<root>/.tmp` last modified more than `max_age` ago: what
/// processes killed mid-write left behind. Younger ones may belong to running writers.
/// Returns how many were removed.
pub(crate) fn remove_stale_temp(root: &Path, max_age: std::time::Duration) -> usize {
    let Ok(dir) = fs::read_dir(root.join(TMP_DIR)) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in dir.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
