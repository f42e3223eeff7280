//! Paths beneath a restore target, resolved without following symlinks, and making a
//! restored tree durable.
//!
//! Lives here: [`Beneath`] (a directory descriptor for the target and every lookup below it),
//! [`remove_tree_at`], [`sync_filesystem`]. Never here: what to restore or in which order.
//!
//! Every path below the target is resolved from the target's descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux ≥ 5.6), or, where the kernel lacks
//! `openat2`, one component at a time with `O_NOFOLLOW`. Either way a symlink that exists in
//! the target, or appears in it during the restore, is never followed: the lookup fails
//! (`ELOOP`/`ENOTDIR`) instead (ADR 0025-restore-beneath).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// `openat2` support: not probed yet, available, missing (fall back to walking).
const PROBE: u8 = 0;
const HAVE_OPENAT2: u8 = 1;
const NO_OPENAT2: u8 = 2;

/// A restore target: its directory descriptor, opened once, and lookups beneath it that
/// never follow a symlink and never leave it.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    openat2: AtomicU8,
}

/// A directory descriptor: the target's own, or one opened below it.
#[derive(Debug)]
pub enum DirFd<'a> {
    /// The target directory itself.
    Root(BorrowedFd<'a>),
    /// A directory below the target (an `O_PATH` descriptor).
    Owned(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Owned(fd) => fd.as_fd(),
        }
    }
}

impl Beneath {
    /// Opens the target directory. The target path itself is resolved as given (a symlink
    /// the user named on purpose is followed, once); nothing below it ever is.
    ///
    /// # Errors
    /// The target cannot be opened as a directory.
    pub fn open(target: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath {
            root,
            openat2: AtomicU8::new(PROBE),
        })
    }

    /// The target directory's descriptor.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `rel` (relative to the target; empty for the target itself) with `flags`,
    /// following no symlink in any component, the last one included.
    ///
    /// # Errors
    /// `ELOOP`/`ENOTDIR` when a component is a symlink, `EXDEV`/`EINVAL` for a path that is
    /// not a plain relative path, and whatever `openat` reports.
    pub fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if rel.as_os_str().is_empty() {
            return Ok(rustix::fs::openat(&self.root, c".", flags, mode)?);
        }
        if self.openat2.load(Ordering::Relaxed) != NO_OPENAT2 {
            match rustix::fs::openat2(
                &self.root,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) {
                // No openat2 (Linux < 5.6), or a seccomp filter that refuses it with EPERM
                // (told apart from a real EPERM by opening the target itself once).
                Err(e)
                    if e == rustix::io::Errno::NOSYS
                        || (e == rustix::io::Errno::PERM
                            && self.openat2.load(Ordering::Relaxed) == PROBE
                            && !self.openat2_works()) =>
                {
                    self.openat2.store(NO_OPENAT2, Ordering::Relaxed);
                }
                other => {
                    self.openat2.store(HAVE_OPENAT2, Ordering::Relaxed);
                    return Ok(other?);
                }
            }
        }
        let (parent, name) = self.parent(rel)?;
        Ok(rustix::fs::openat(parent, name, flags, mode)?)
    }

    /// Whether `openat2` works at all (opening the target itself through it).
    fn openat2_works(&self) -> bool {
        rustix::fs::openat2(
            &self.root,
            c".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .is_ok()
    }

    /// The directory holding `rel` and `rel`'s last component, for the `*at` calls that
    /// create, link, remove or inspect that name without following it.
    ///
    /// # Errors
    /// As [`Beneath::open_at`]; `EINVAL` when `rel` has no last component.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(DirFd<'_>, &'p OsStr)> {
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::INVAL.raw_os_error(),
                ))
            }
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            return Ok((DirFd::Root(self.root.as_fd()), name));
        }
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        if self.openat2.load(Ordering::Relaxed) != NO_OPENAT2 {
            return Ok((
                DirFd::Owned(self.open_at(parent, dir_flags, Mode::empty())?),
                name,
            ));
        }
        // Component by component, refusing symlinks and anything but plain names.
        let mut fd: Option<OwnedFd> = None;
        for comp in parent.components() {
            let Component::Normal(c) = comp else {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::XDEV.raw_os_error(),
                ));
            };
            let next = {
                let at = fd.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
                rustix::fs::openat(
                    at,
                    c,
                    dir_flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            };
            fd = Some(next);
        }
        Ok((
            fd.map_or(DirFd::Root(self.root.as_fd()), DirFd::Owned),
            name,
        ))
    }

    /// Removes the non-directory `rel` if there is one (a symlink is removed, not followed).
    /// Errors are ignored: whatever stays in the way makes the following create fail, and
    /// that error is reported.
    pub fn remove_file(&self, rel: &Path) {
        if let Ok((parent, name)) = self.parent(rel) {
            let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
        }
    }

    /// Makes everything written below the target durable: `syncfs` of its file system
    /// (one call flushes every file and directory entry, see [`sync_filesystem`]).
    ///
    /// # Errors
    /// Write-back errors the kernel reports (Linux ≥ 5.8 reports them to `syncfs`).
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.root)?)
    }
}

/// Makes every file and directory entry written to the file system holding `path` durable
/// (`syncfs(2)`): the batch form of fsyncing each restored file and directory. It also
/// flushes unrelated dirty data of that file system, which costs time, never safety.
///
/// # Errors
/// `path` cannot be opened, or write-back failed.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    Ok(rustix::fs::syncfs(&fd)?)
}

/// Removes `name` in `dir` without following symlinks: a directory with everything below
/// it (depth first, one descriptor per level), anything else by `unlinkat`.
///
/// # Errors
/// The first entry that cannot be removed.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(e) if e == rustix::io::Errno::ISDIR || e == rustix::io::Errno::PERM => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let mut rd = rustix::fs::Dir::read_from(&sub)?;
    while let Some(entry) = rd.read() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    drop(rd);
    for n in names {
        remove_tree_at(sub.as_fd(), OsStr::from_bytes(&n))?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lookups_refuse_symlinks_in_every_component() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/link")).unwrap();
        std::fs::write(outside.path().join("f"), b"x").unwrap();
        let b = Beneath::open(dir.path()).unwrap();
        let w = OFlags::WRONLY | OFlags::CREATE;
        for rel in ["a/link/f", "a/link", "a/link/new"] {
            assert!(
                b.open_at(Path::new(rel), w, Mode::from_raw_mode(0o600))
                    .is_err(),
                "{rel}"
            );
        }
        assert!(b.parent(Path::new("a/link/new")).is_err());
        assert!(b.open_at(Path::new("../x"), w, Mode::empty()).is_err());
        assert!(b
            .open_at(Path::new("a/new"), w, Mode::from_raw_mode(0o600))
            .is_ok());
        // The fallback walk refuses the same.
        b.openat2.store(NO_OPENAT2, Ordering::Relaxed);
        assert!(b.open_at(Path::new("a/link/f"), w, Mode::empty()).is_err());
        assert!(b.open_at(Path::new("a/link"), w, Mode::empty()).is_err());
        assert!(b
            .open_at(Path::new("a/new2"), w, Mode::from_raw_mode(0o600))
            .is_ok());
        assert_eq!(std::fs::read(outside.path().join("f")).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn remove_tree_removes_links_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("t/d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/d/link")).unwrap();
        let b = Beneath::open(dir.path()).unwrap();
        remove_tree_at(b.root(), OsStr::new("t")).unwrap();
        assert!(!dir.path().join("t").exists());
        assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"x");
    }
}
