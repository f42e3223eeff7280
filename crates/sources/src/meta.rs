//! File metadata: reading a [`Node`] from the file system and applying one back.
//!
//! Lives here: [`node_from_metadata`], [`read_xattrs`], [`apply_metadata_fd`],
//! [`apply_metadata_path_fd`]. Never here: file contents, or any lookup by path when
//! applying metadata (a restore finds the entry, opens it without following symlinks, and
//! hands the descriptor here). Reading is `lstat`-based: symlinks are recorded, never
//! followed.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use lifeboat_repo::format::{Node, NodeKind, Xattr};
use rustix::fs::{AtFlags, Timestamps, CWD};

/// Builds a node (without content) from `lstat` metadata.
pub fn node_from_metadata(name: &[u8], md: &Metadata, symlink_target: Option<Vec<u8>>) -> Node {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink {
            target: symlink_target.unwrap_or_default(),
        }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDev { rdev: md.rdev() }
    } else if ft.is_block_device() {
        NodeKind::BlockDev { rdev: md.rdev() }
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    let is_file = matches!(kind, NodeKind::File);
    Node {
        name: name.to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime: md.ctime(),
        ctime_ns: md.ctime_nsec().clamp(0, 999_999_999) as u32,
        inode: md.ino(),
        dev: md.dev(),
        nlink: md.nlink(),
        size: if is_file { md.size() } else { 0 },
        sparse: is_file && md.blocks().saturating_mul(512) < md.size(),
        content: Vec::new(),
        delta: None,
        subtree: None,
        xattrs: Vec::new(),
        error: None,
    }
}

/// Reads the `user.*` extended attributes of `path` (not following symlinks). File systems
/// without xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        if !bytes.starts_with(b"user.") {
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: bytes.to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What applying a node's metadata changed from what the node says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The node has setuid/setgid bits, but its owner (or group) could not be restored, so
    /// the bits were left off: a set-id file must not run as whoever restored it.
    pub setid_dropped: bool,
}

/// The mode to set on an entry whose current owner is `st`: the node's mode, without the
/// setuid (setgid) bit when the entry is not owned by the node's user (group). Directories
/// keep theirs (setgid there only chooses the group of new entries, and grants nothing).
fn safe_mode(
    node: &Node,
    stat: impl FnOnce() -> std::io::Result<rustix::fs::Stat>,
) -> std::io::Result<(u32, Applied)> {
    let mut mode = node.mode & 0o7777;
    let mut applied = Applied::default();
    if mode & 0o6000 != 0 && !matches!(node.kind, NodeKind::Dir) {
        let st = stat()?;
        if mode & 0o4000 != 0 && st.st_uid != node.uid {
            mode &= !0o4000;
            applied.setid_dropped = true;
        }
        if mode & 0o2000 != 0 && st.st_gid != node.gid {
            mode &= !0o2000;
            applied.setid_dropped = true;
        }
    }
    Ok((mode, applied))
}

fn timestamps(node: &Node) -> Timestamps {
    let ts = rustix::fs::Timespec {
        tv_sec: node.mtime,
        tv_nsec: i64::from(node.mtime_ns) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// Applies owner, mode, xattrs and times of `node` through `f`, an open regular file,
/// directory or FIFO (no path lookups, so nothing can be swapped in between). Owner changes
/// are tried only with `owners` and skipped when not permitted; setuid/setgid bits are set
/// only when the owner they belong to is the entry's (see [`Applied`]). Other failures are
/// returned.
pub fn apply_metadata_fd(f: &std::fs::File, node: &Node, owners: bool) -> std::io::Result<Applied> {
    if owners {
        match rustix::fs::fchown(
            f,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // After chown: chown clears setuid/setgid bits.
    let (mode, applied) = safe_mode(node, || Ok(rustix::fs::fstat(f)?))?;
    rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(mode))?;
    for x in &node.xattrs {
        xattr::FileExt::set_xattr(f, OsStr::from_bytes(&x.name), &x.value)?;
    }
    rustix::fs::futimens(f, &timestamps(node))?;
    Ok(applied)
}

/// Applies owner, mode and times of a symlink or device `node` through `fd`, an `O_PATH`
/// descriptor of the entry itself (opened with `O_NOFOLLOW`): nothing is followed. Symlinks
/// get no mode; the mode of a device is set through `/proc/self/fd`, which names the
/// descriptor's own inode. `at` (the entry's directory and name) serves kernels older than
/// 5.8, whose `utimensat` takes no `AT_EMPTY_PATH`: times are then set by name with
/// `AT_SYMLINK_NOFOLLOW`.
pub fn apply_metadata_path_fd(
    fd: BorrowedFd<'_>,
    at: (BorrowedFd<'_>, &OsStr),
    node: &Node,
    owners: bool,
) -> std::io::Result<Applied> {
    if owners {
        match rustix::fs::chownat(
            fd,
            "",
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut applied = Applied::default();
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        let (mode, a) = safe_mode(node, || Ok(rustix::fs::fstat(fd)?))?;
        applied = a;
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmodat(
            CWD,
            proc.as_str(),
            rustix::fs::Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )?;
    }
    match rustix::fs::utimensat(fd, "", &timestamps(node), AtFlags::EMPTY_PATH) {
        Err(rustix::io::Errno::INVAL) => {
            rustix::fs::utimensat(at.0, at.1, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW)?
        }
        other => other?,
    }
    Ok(applied)
}
