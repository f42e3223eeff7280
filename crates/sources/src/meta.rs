//! File metadata: reading a [`Node`] from the file system and applying one back.
//!
//! Lives here: [`node_from_metadata`], [`read_xattrs`], [`apply_metadata`]. Never here:
//! file contents. Everything is `lstat`-based: symlinks are recorded, never followed.

use std::ffi::OsStr;
use std::fs::Metadata;
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

/// Applies owner, mode, xattrs and times of `node` to `path` (which already exists and has
/// the node's type). Owner changes that are not permitted (not root) are skipped silently;
/// other failures are returned.
pub fn apply_metadata(path: &Path, node: &Node, numeric_owner_ok: bool) -> std::io::Result<()> {
    let is_link = matches!(node.kind, NodeKind::Symlink { .. });
    if numeric_owner_ok {
        match rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !is_link {
        // After chown: chown clears setuid/setgid bits.
        rustix::fs::chmodat(
            CWD,
            path,
            rustix::fs::Mode::from_raw_mode(node.mode & 0o7777),
            AtFlags::empty(),
        )?;
        for x in &node.xattrs {
            xattr::set(path, OsStr::from_bytes(&x.name), &x.value)?;
        }
    }
    let ts = rustix::fs::Timespec {
        tv_sec: node.mtime,
        tv_nsec: i64::from(node.mtime_ns) as _,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Applies owner, mode, xattrs and times of a regular-file `node` through its open file
/// (no path lookups). Owner changes that are not permitted are skipped silently.
pub fn apply_metadata_fd(
    f: &std::fs::File,
    node: &Node,
    numeric_owner_ok: bool,
) -> std::io::Result<()> {
    if numeric_owner_ok {
        match rustix::fs::fchown(
            f,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(node.mode & 0o7777))?;
    for x in &node.xattrs {
        xattr::FileExt::set_xattr(f, OsStr::from_bytes(&x.name), &x.value)?;
    }
    let ts = rustix::fs::Timespec {
        tv_sec: node.mtime,
        tv_nsec: i64::from(node.mtime_ns) as _,
    };
    rustix::fs::futimens(
        f,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )?;
    Ok(())
}
