//! Local file system specifics that OpenDAL's fs service does not give us: create-only
//! writes that are atomic against concurrent writers, and directory fsyncs.
//! Lives here: the temp directory name, `put_new` by hard link, parent-directory syncing
//! after writes and deletions.
//! Never here: reads, listing or anything the OpenDAL fs service already does well.
//!
//! Why (docs/decisions/0010-local-fsync.md): OpenDAL writes into `<root>/.tmp`, fsyncs the
//! file and renames it into place, but does not fsync the directory, so after a power loss
//! the new name may be gone although `put` returned `Ok`. Its `if_not_exists` on fs is a
//! check followed by a rename, so two concurrent creators can both "win".

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

/// Fsyncs the directory that holds the object `path` after OpenDAL renamed it into place.
pub(crate) fn sync_parent(root: &Path, path: &str) -> Result<(), Error> {
    let target = object_path(root, path)?;
    // OpenDAL may have created intermediate directories; syncing up to the root is cheap
    // next to an object upload and covers that case.
    sync_dirs(root, &target, true, path)
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
    let tmp = root.join(TMP_DIR).join(format!(
        "new-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(path, e))?;
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
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = root.join(TMP_DIR).join(format!(
            "stage-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(".tmp", e))?;
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
