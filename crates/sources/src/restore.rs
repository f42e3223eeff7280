//! Restoring snapshots to a directory, and dumping one file to a writer.
//!
//! Lives here: [`restore`], [`dump`], their options and report. Never here: the repository
//! format. Restore reads each pack once (whole, or by ranges when few of its blobs are
//! needed) on several threads, writes blobs at their offsets, then applies metadata
//! bottom-up so directory times survive, and makes the tree durable (`syncfs`) before it
//! reports success. Damaged data never stops the rest: the files it affects are listed in
//! the report, everything else is restored.
//!
//! Nothing below the target is looked up by a path that could follow a symlink: every
//! entry is reached through [`Beneath`] (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), created exclusively (`O_EXCL`, `mkdirat`, `symlinkat`, `mknodat`)
//! after removing whatever is in the way (the symlink itself, never what it points to),
//! reopened only when it is still the inode the restore created, and given its metadata
//! through a descriptor (ADR 0025-restore-beneath).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use parking_lot::Mutex;
use serde::Serialize;

use lifeboat_repo::format::{paths, Node, NodeKind};
use lifeboat_repo::index::BlobLoc;
use lifeboat_repo::repository::par_map;
use lifeboat_repo::tree::{find_path, walk};
use lifeboat_repo::{Error, Index, Repository, Result};
use lifeboat_types::{BlobId, PackId};

use crate::beneath::{remove_tree_at, Beneath};
use crate::meta::{apply_metadata_fd, apply_metadata_path_fd, Applied};
use crate::progress::Progress;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Threads reading packs.
    pub threads: usize,
    /// Restore owners (needs root; ignored otherwise).
    pub owners: bool,
    /// When the selection is a directory, restore its contents into the target (the target
    /// becomes that directory) instead of creating it inside the target.
    pub into_target: bool,
    /// What may happen to what the target already holds (default: nothing; a target that
    /// is not empty is refused before anything is written).
    pub existing: Existing,
    /// Make everything restored durable (`syncfs` of the target's file system) before
    /// returning. Off only for scratch restores that are thrown away after use.
    pub sync: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            owners: rustix::process::geteuid().is_root(),
            into_target: false,
            existing: Existing::Refuse,
            sync: true,
        }
    }
}

/// What a restore may do to a target that already holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// The target must be missing or empty: anything in it is refused before anything is
    /// written, so files someone edited there are never overwritten by surprise.
    #[default]
    Refuse,
    /// Replace what the snapshot has: files whose contents already match it (read and
    /// hashed, never trusted by size or time) are kept, the others rewritten; entries the
    /// snapshot does not have are left alone.
    Overwrite,
    /// [`Existing::Overwrite`], and delete what the snapshot does not have: the target
    /// becomes the snapshot (a delta restore).
    Mirror,
}

/// Refuses a target that exists and is not empty, before anything is written: the error
/// says how many entries it holds, names a few, and ends with `fix` (the caller's way out,
/// e.g. its flag for overwriting). A missing target is fine (the restore creates it).
///
/// # Errors
/// [`Error::Invalid`] for a non-empty target; [`Error::Io`] when the target cannot be read.
pub fn ensure_empty(target: &Path, fix: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: target.display().to_string(),
        source: e,
    };
    let rd = match std::fs::read_dir(target) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut names: Vec<String> = Vec::new();
    let mut count = 0usize;
    for entry in rd {
        let entry = entry.map_err(io)?;
        count += 1;
        if names.len() < 3 {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if count == 0 {
        return Ok(());
    }
    names.sort();
    let more = if count > names.len() { ", …" } else { "" };
    Err(Error::Invalid(format!(
        "{} is not empty ({count} entr{}: {}{more}); nothing was restored (fix: {fix})",
        target.display(),
        if count == 1 { "y" } else { "ies" },
        names.join(", ")
    )))
}

/// One path that could not be restored (fully).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreError {
    /// Path relative to the target.
    pub path: String,
    /// What went wrong (names the damaged repository file where there is one).
    pub message: String,
}

/// What a restore did (`--json` schema: docs/json.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// Regular files written (not counting those kept).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries restored (links, pipes, devices).
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Files already in the target that were kept because they matched the snapshot
    /// ([`Existing::Overwrite`], [`Existing::Mirror`]).
    pub files_kept: u64,
    /// Entries deleted because the snapshot does not have them ([`Existing::Mirror`]).
    pub removed: u64,
    /// Files restored without their setuid/setgid bits because their owner (or group) could
    /// not be restored (a restore as another user than root): relative to the target.
    pub setid_dropped: Vec<String>,
    /// Paths that could not be restored fully.
    pub errors: Vec<RestoreError>,
}

struct Entry {
    /// Where it goes, relative to the target (empty: the target itself).
    dest: PathBuf,
    /// Its path in the snapshot, for messages.
    rel: String,
    node: Node,
}

/// An inode's identity (device, inode number): what the restore created at a name, checked
/// again whenever it reopens that name.
type Ident = (u64, u64);

fn ident(st: &rustix::fs::Stat) -> Ident {
    (st.st_dev, st.st_ino)
}

/// Mode of files and directories while the restore fills them: only the restoring user can
/// open them until their metadata is applied.
const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

fn replaced() -> std::io::Error {
    std::io::Error::other("it was replaced by something else during the restore; left alone")
}

/// What to restore: a snapshot's root tree, optionally only the entry at `subpath`.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// The snapshot's root tree.
    pub tree: &'a BlobId,
    /// Path inside the snapshot (`""` for everything).
    pub subpath: &'a [u8],
    /// The snapshot's name for messages (short id).
    pub snapshot: &'a str,
}

/// Type of the restore plan: for each pack, the blobs to write (id, location, entry, offset).
type Plan = Vec<(PackId, Vec<(BlobId, BlobLoc, usize, u64)>)>;

/// Restores the selection into `target`.
///
/// # Errors
/// Errors that prevent any restore (unreadable root, target not creatable). Damage to
/// individual files is reported in [`RestoreReport::errors`].
pub fn restore(
    repo: &Repository,
    index: &Index,
    what: Selection<'_>,
    target: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let (snapshot_tree, subpath, snapshot_name) = (what.tree, what.subpath, what.snapshot);
    let io = |p: &Path, e: std::io::Error| Error::Io {
        path: p.display().to_string(),
        source: e,
    };
    if opts.existing == Existing::Refuse {
        ensure_empty(
            target,
            "restore into an empty or new directory, or allow overwriting",
        )?;
    }
    std::fs::create_dir_all(target).map_err(|e| io(target, e))?;
    let t = Beneath::open(target).map_err(|e| io(target, e))?;
    let mut report = RestoreReport::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut tree_errors: Vec<RestoreError> = Vec::new();

    // 1. Collect entries.
    let start = find_path(repo, index, snapshot_tree, subpath, snapshot_name)?;
    // `base`: the selection's path in the snapshot (for messages); `dest`: where its
    // entries go below the target.
    let (root_tree, base, dest): (Option<BlobId>, Vec<u8>, Vec<u8>) = match start {
        None => (Some(*snapshot_tree), Vec::new(), Vec::new()),
        Some(node) => {
            let name = node.name.clone();
            let is_dir = matches!(node.kind, NodeKind::Dir);
            let sub = if is_dir { node.subtree } else { None };
            let as_target = opts.into_target && is_dir;
            entries.push(Entry {
                dest: if as_target {
                    PathBuf::new()
                } else {
                    PathBuf::from(OsStr::from_bytes(&name))
                },
                rel: String::from_utf8_lossy(&name).into_owned(),
                node,
            });
            let dest = if as_target { Vec::new() } else { name.clone() };
            (sub, name, dest)
        }
    };
    if let Some(root) = root_tree {
        let mut visit = |rel: &[u8], node: &Node| -> Result<bool> {
            let join = |prefix: &[u8]| {
                let mut full = prefix.to_vec();
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(rel);
                full
            };
            entries.push(Entry {
                dest: PathBuf::from(OsStr::from_bytes(&join(&dest))),
                rel: String::from_utf8_lossy(&join(&base)).into_owned(),
                node: node.clone(),
            });
            Ok(true)
        };
        walk_tolerant(repo, index, &root, &mut visit, &mut tree_errors, &base);
    }
    report.errors.extend(tree_errors);
    for e in &entries {
        if matches!(e.node.kind, NodeKind::File) {
            Progress::add(&progress.files_total, 1);
            Progress::add(&progress.bytes_total, e.node.size);
        }
    }

    // Delta: what may stay, and what must go. `idents`: what the restore created (or kept)
    // at each entry, checked whenever it reopens one.
    let mut idents: Vec<Option<Ident>> = if opts.existing != Existing::Refuse {
        if opts.existing == Existing::Mirror {
            report.removed = remove_extras(&t, &entries, &mut report.errors);
        }
        let chunker = lifeboat_repo::Chunker::new(repo.config().chunker);
        let idx: Vec<usize> = (0..entries.len()).collect();
        par_map(&idx, opts.threads, |&i| {
            let e = &entries[i];
            let candidate = matches!(e.node.kind, NodeKind::File)
                && e.node.nlink <= 1
                && e.node.error.is_none()
                && !e.node.sparse
                && e.node.delta.is_none();
            if candidate {
                same_content(repo, &chunker, &t, &e.dest, &e.node)
            } else {
                None
            }
        })
    } else {
        vec![None; entries.len()]
    };
    let keep: Vec<bool> = idents.iter().map(Option::is_some).collect();

    // 2. Directories, special files, empty and pre-sized files; hard links wait.
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut first_of_inode: HashMap<(u64, u64), usize> = HashMap::new();
    let mut failed: Vec<bool> = vec![false; entries.len()];
    let mut plan: HashMap<PackId, Vec<(BlobId, BlobLoc, usize, u64)>> = HashMap::new();
    let mut layered: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let n = &e.node;
        let res: std::io::Result<()> = match &n.kind {
            NodeKind::Dir => make_dir(&t, &e.dest),
            NodeKind::Symlink { target: link } => t.parent(&e.dest).and_then(|(dir, name)| {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
                Ok(rustix::fs::symlinkat(OsStr::from_bytes(link), &dir, name)?)
            }),
            NodeKind::Fifo | NodeKind::CharDev { .. } | NodeKind::BlockDev { .. } => {
                let (ft, rdev) = match n.kind {
                    NodeKind::CharDev { rdev } => (FileType::CharacterDevice, rdev),
                    NodeKind::BlockDev { rdev } => (FileType::BlockDevice, rdev),
                    _ => (FileType::Fifo, 0),
                };
                t.parent(&e.dest).and_then(|(dir, name)| {
                    let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
                    // Set-id bits wait for the owner (step 5).
                    let mode = Mode::from_raw_mode(n.mode & 0o1777);
                    Ok(rustix::fs::mknodat(&dir, name, ft, mode, rdev)?)
                })
            }
            NodeKind::Socket => {
                failed[i] = true; // sockets are recorded, not restored
                continue;
            }
            NodeKind::File if keep[i] => {
                report.files_kept += 1;
                Progress::add(&progress.files_done, 1);
                Progress::add(&progress.bytes_done, n.size);
                continue; // metadata is applied in step 5 like everywhere else
            }
            NodeKind::File => {
                if n.nlink > 1 && n.inode != 0 {
                    if let Some(&first) = first_of_inode.get(&(n.dev, n.inode)) {
                        links.push((i, first));
                        continue;
                    }
                    first_of_inode.insert((n.dev, n.inode), i);
                }
                if let Some(err) = &n.error {
                    report.errors.push(RestoreError {
                        path: e.rel.clone(),
                        message: format!("was not backed up completely: {err}"),
                    });
                }
                // Files with several blobs, sparse or empty files are created here; a
                // single-blob file is created by its only write. A delta file is rebuilt
                // from its base and layers after the packs (step 3b).
                let created = if n.delta.is_some() {
                    layered.push(i);
                    create_file(&t, &e.dest, n.size, false).map(Some)
                } else if n.content.len() != 1 || n.sparse {
                    create_file(&t, &e.dest, n.size, n.sparse).map(Some)
                } else {
                    Ok(None)
                };
                let res = created.map(|id| idents[i] = id.map(|(_, id)| id));
                let mut offset = 0u64;
                let mut missing = None;
                let planned: &[BlobId] = if n.delta.is_some() { &[] } else { &n.content };
                for b in planned {
                    match index.get(b) {
                        Some(loc) => {
                            plan.entry(loc.pack).or_default().push((*b, loc, i, offset));
                            offset += u64::from(loc.raw_len);
                        }
                        None => missing = Some(*b),
                    }
                }
                if let Some(b) = missing {
                    report.errors.push(RestoreError {
                        path: e.rel.clone(),
                        message: format!(
                            "data blob {} is in no index: the file is incomplete",
                            b.short()
                        ),
                    });
                }
                res
            }
        };
        if let Err(err) = res {
            failed[i] = true;
            report.errors.push(RestoreError {
                path: e.rel.clone(),
                message: format!("cannot create: {err}"),
            });
        }
    }

    // 3. Contents, pack by pack.
    let mut packs: Plan = plan.into_iter().collect();
    packs.sort_by_key(|a| a.0);
    let errors: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    let written = WriteBack::default();
    let meta_done: Vec<std::sync::atomic::AtomicBool> = (0..entries.len())
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let meta_results: Mutex<Vec<(usize, Ident, std::io::Result<Applied>)>> = Mutex::new(Vec::new());
    let ctx = PackCtx {
        repo,
        target: &t,
        entries: &entries,
        idents: &idents,
        errors: &errors,
        written: &written,
        progress,
        meta_done: &meta_done,
        meta_results: &meta_results,
        owners: opts.owners,
    };
    std::thread::scope(|s| {
        // Write-back starts while the packs are still being decoded (see [`WriteBack`]).
        let _stop = opts.sync.then(|| {
            s.spawn(|| written.run(&t));
            StopWriteBack(&written)
        });
        par_map(&packs, opts.threads, |(pack, blobs)| {
            restore_pack(&ctx, pack, blobs);
        });
        // 3b. Files stored as layers over an earlier version: rebuilt as streams.
        par_map(&layered, opts.threads, |&i| {
            if let Err(e) =
                rebuild_file(repo, index, &t, &entries[i], idents[i], progress, &written)
            {
                errors
                    .lock()
                    .insert(i, format!("cannot restore the file's content: {e}"));
            }
        });
    });
    report.bytes = written.total();
    let mut applied: Vec<(usize, std::io::Result<Applied>)> = Vec::new();
    for (i, id, res) in meta_results.into_inner() {
        idents[i] = Some(id);
        applied.push((i, res));
    }
    for (i, msg) in errors.into_inner() {
        failed[i] = true;
        report.errors.push(RestoreError {
            path: entries[i].rel.clone(),
            message: msg,
        });
    }

    // 4. Hard links, to the inode the restore wrote (its metadata is the link's).
    for (i, first) in links {
        let res = link_to(&t, &entries[first].dest, &entries[i].dest, idents[first]);
        if let Err(err) = res {
            failed[i] = true;
            report.errors.push(RestoreError {
                path: entries[i].rel.clone(),
                message: format!("cannot link to {}: {err}", entries[first].rel),
            });
        }
        meta_done[i].store(true, std::sync::atomic::Ordering::Relaxed);
    }

    // 5. Metadata: files first, then directories deepest first, each through a descriptor
    // of the entry the restore made.
    let order: Vec<usize> = (0..entries.len())
        .filter(|i| !matches!(entries[*i].node.kind, NodeKind::Dir))
        .filter(|i| !failed[*i] && !meta_done[*i].load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    applied.extend(par_map(&order, 2, |&i| {
        (
            i,
            apply_metadata_at(&t, &entries[i], idents[i], opts.owners),
        )
    }));
    let mut dirs: Vec<usize> = (0..entries.len())
        .filter(|i| matches!(entries[*i].node.kind, NodeKind::Dir) && !failed[*i])
        .collect();
    dirs.sort_by_key(|i| std::cmp::Reverse(entries[*i].dest.components().count()));
    for i in dirs {
        applied.push((i, apply_metadata_at(&t, &entries[i], None, opts.owners)));
    }
    for (i, res) in applied {
        match res {
            Ok(a) if a.setid_dropped => report.setid_dropped.push(entries[i].rel.clone()),
            Ok(_) => {}
            Err(err) => report.errors.push(RestoreError {
                path: entries[i].rel.clone(),
                message: format!("cannot set metadata: {err}"),
            }),
        }
    }
    report.setid_dropped.sort();
    for (i, e) in entries.iter().enumerate() {
        if failed[i] || keep[i] {
            continue; // kept files are counted in `files_kept`
        }
        match e.node.kind {
            NodeKind::File => report.files += 1,
            NodeKind::Dir => report.dirs += 1,
            _ => report.others += 1,
        }
    }
    report.errors.sort_by(|a, b| a.path.cmp(&b.path));
    report.errors.dedup();
    // 6. Durable before "restored": one syncfs flushes every file and directory entry
    // written (ADR 0025-restore-beneath measures it against fsyncing each).
    if opts.sync {
        t.sync().map_err(|e| Error::Io {
            path: format!(
                "{} (syncfs: making the restored files durable)",
                target.display()
            ),
            source: e,
        })?;
    }
    Ok(report)
}

/// Creates the directory `dest` (mode 0700 until its metadata is applied). A directory
/// already there is used; anything else there (a symlink, a file) is removed first.
fn make_dir(t: &Beneath, dest: &Path) -> std::io::Result<()> {
    if dest.as_os_str().is_empty() {
        return Ok(()); // the target itself
    }
    let (dir, name) = t.parent(dest)?;
    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(PRIVATE_DIR)) {
        Err(rustix::io::Errno::EXIST) => {}
        other => return other.map_err(Into::into),
    }
    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        return Ok(());
    }
    rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
    Ok(rustix::fs::mkdirat(
        &dir,
        name,
        Mode::from_raw_mode(PRIVATE_DIR),
    )?)
}

/// Links `dest` to the file the restore wrote at `first` (checked to be that inode still).
fn link_to(t: &Beneath, first: &Path, dest: &Path, id: Option<Ident>) -> std::io::Result<()> {
    let (fdir, fname) = t.parent(first)?;
    let (dir, name) = t.parent(dest)?;
    let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
    rustix::fs::linkat(&fdir, fname, &dir, name, AtFlags::empty())?;
    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if id != Some(ident(&st)) {
        let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        return Err(replaced());
    }
    Ok(())
}

/// Applies the metadata of entry `e` through a descriptor opened beneath the target without
/// following symlinks; a file must still be the inode `id` the restore wrote or kept, any
/// other entry must still have its kind (and, not being a directory, one link).
fn apply_metadata_at(
    t: &Beneath,
    e: &Entry,
    id: Option<Ident>,
    owners: bool,
) -> std::io::Result<Applied> {
    let n = &e.node;
    let (flags, want) = match n.kind {
        NodeKind::Dir => (OFlags::RDONLY | OFlags::DIRECTORY, FileType::Directory),
        NodeKind::File => (OFlags::RDONLY | OFlags::NONBLOCK, FileType::RegularFile),
        NodeKind::Fifo => (OFlags::RDONLY | OFlags::NONBLOCK, FileType::Fifo),
        NodeKind::Symlink { .. } => (OFlags::PATH, FileType::Symlink),
        NodeKind::CharDev { .. } => (OFlags::PATH, FileType::CharacterDevice),
        NodeKind::BlockDev { .. } => (OFlags::PATH, FileType::BlockDevice),
        NodeKind::Socket => return Ok(Applied::default()),
    };
    let fd = t.open_at(&e.dest, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    let same = FileType::from_raw_mode(st.st_mode) == want
        && match n.kind {
            NodeKind::File => id == Some(ident(&st)),
            NodeKind::Dir => true,
            _ => st.st_nlink == 1,
        };
    if !same {
        return Err(replaced());
    }
    if flags.contains(OFlags::PATH) {
        let (dir, name) = t.parent(&e.dest)?;
        apply_metadata_path_fd(fd.as_fd(), (dir.as_fd(), name), n, owners)
    } else {
        apply_metadata_fd(&File::from(fd), n, owners)
    }
}

/// Writes a delta file (ADR 0016) from its base and layers, front to back, into the file the
/// restore created for it (`id`).
fn rebuild_file(
    repo: &Repository,
    index: &Index,
    t: &Beneath,
    e: &Entry,
    id: Option<Ident>,
    progress: &Progress,
    written: &WriteBack,
) -> Result<()> {
    use std::io::{Read, Write};
    let io = |err: std::io::Error| Error::Io {
        path: e.dest.display().to_string(),
        source: err,
    };
    let mut rebuild = crate::delta::Rebuild::new(repo, index, &e.node)?;
    let mut f = reopen(t, &e.dest, id).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rebuild
            .read(&mut buf)
            .map_err(|err| match err.into_inner() {
                Some(inner) => Error::Invalid(inner.to_string()),
                None => Error::Invalid("rebuilding failed".into()),
            })?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n]).map_err(io)?;
        written.wrote(n as u64);
        Progress::add(&progress.bytes_done, n as u64);
    }
    f.set_len(e.node.size).map_err(io)?;
    Progress::add(&progress.files_done, 1);
    Ok(())
}

fn walk_tolerant(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
    errors: &mut Vec<RestoreError>,
    base: &[u8],
) {
    // Walk with error tolerance: an unreadable subtree is reported, its siblings restored.
    let mut wrapped = |rel: &[u8], node: &Node| -> Result<bool> {
        if let (NodeKind::Dir, Some(sub)) = (&node.kind, node.subtree) {
            if let Err(e) = repo.read_tree(index, &sub) {
                let mut full = base.to_vec();
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(rel);
                errors.push(RestoreError {
                    path: String::from_utf8_lossy(&full).into_owned(),
                    message: format!("directory contents lost: {e}"),
                });
                visit(rel, node)?;
                return Ok(false);
            }
        }
        visit(rel, node)
    };
    if let Err(e) = walk(repo, index, root, &mut wrapped) {
        errors.push(RestoreError {
            path: String::from_utf8_lossy(base).into_owned(),
            message: format!("cannot read: {e}"),
        });
    }
}

/// Whether the regular file at `dest` holds exactly the content of `node` (same size, then
/// the same blob ids when chunked with the repository's chunker); if so, its identity. A
/// symlink there is not followed, and a file with other hard links is never kept (its
/// metadata would change a file elsewhere).
fn same_content(
    repo: &Repository,
    chunker: &lifeboat_repo::Chunker,
    t: &Beneath,
    dest: &Path,
    node: &Node,
) -> Option<Ident> {
    let fd = t
        .open_at(dest, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_nlink != 1
        || st.st_size as u64 != node.size
    {
        return None;
    }
    let f = File::from(fd);
    let mut buf = Vec::new();
    let mut ids = node.content.iter();
    let mut same = true;
    let res = chunker.chunk_sized::<_, std::io::Error>(f, Some(node.size), &mut buf, |chunk| {
        if ids.next() != Some(&repo.key().blob_id(chunk)) {
            same = false;
            // Stop reading: the answer is known.
            return Err(std::io::Error::other("differs"));
        }
        Ok(())
    });
    (res.is_ok() && same && ids.next().is_none()).then_some(ident(&st))
}

/// [`Existing::Mirror`]: deletes everything below the target that is not one of `entries` (or has
/// another kind there); returns how many entries went. Nothing is followed: directories
/// are read and emptied through descriptors, symlinks removed as links.
fn remove_extras(t: &Beneath, entries: &[Entry], errors: &mut Vec<RestoreError>) -> u64 {
    let wanted: HashMap<&Path, bool> = entries
        .iter()
        .map(|e| (e.dest.as_path(), matches!(e.node.kind, NodeKind::Dir)))
        .collect();
    let mut removed = 0u64;
    fn walk_dir(
        t: &Beneath,
        dir: &Path,
        wanted: &HashMap<&Path, bool>,
        removed: &mut u64,
        errors: &mut Vec<RestoreError>,
    ) {
        let Ok(fd) = t.open_at(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) else {
            return;
        };
        let mut children: Vec<(PathBuf, Vec<u8>, bool)> = Vec::new();
        if let Ok(mut rd) = rustix::fs::Dir::read_from(&fd) {
            while let Some(Ok(entry)) = rd.read() {
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let is_dir = match entry.file_type() {
                    FileType::Unknown => {
                        rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| {
                                FileType::from_raw_mode(st.st_mode) == FileType::Directory
                            })
                    }
                    ft => ft == FileType::Directory,
                };
                children.push((dir.join(OsStr::from_bytes(name)), name.to_vec(), is_dir));
            }
        }
        for (p, name, is_dir) in children {
            match wanted.get(p.as_path()) {
                Some(true) if is_dir => walk_dir(t, &p, wanted, removed, errors),
                Some(false) if !is_dir => {}
                _ => match remove_tree_at(fd.as_fd(), OsStr::from_bytes(&name)) {
                    Ok(()) => *removed += 1,
                    Err(err) => errors.push(RestoreError {
                        path: p.display().to_string(),
                        message: format!("delta: cannot remove: {err}"),
                    }),
                },
            }
        }
    }
    walk_dir(t, Path::new(""), &wanted, &mut removed, errors);
    removed
}

/// Creates the file `dest` afresh (whatever was there is removed first, a symlink as a
/// link), private until its metadata is applied; returns it and its identity.
fn create_file(
    t: &Beneath,
    dest: &Path,
    size: u64,
    sparse: bool,
) -> std::io::Result<(File, Ident)> {
    let open = || {
        t.open_at(
            dest,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(PRIVATE_FILE),
        )
    };
    let fd = match open() {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
            t.remove_file(dest);
            open()?
        }
        other => other?,
    };
    let f = File::from(fd);
    if sparse {
        f.set_len(size)?;
    }
    let st = rustix::fs::fstat(&f)?;
    Ok((f, ident(&st)))
}

/// Opens for writing the file the restore created at `dest`, if it still is that inode.
fn reopen(t: &Beneath, dest: &Path, id: Option<Ident>) -> std::io::Result<File> {
    let f = File::from(t.open_at(dest, OFlags::WRONLY, Mode::empty())?);
    if id != Some(ident(&rustix::fs::fstat(&f)?)) {
        return Err(replaced());
    }
    Ok(f)
}

/// What the pack workers share.
struct PackCtx<'a> {
    repo: &'a Repository,
    target: &'a Beneath,
    entries: &'a [Entry],
    /// What step 2 created at each entry.
    idents: &'a [Option<Ident>],
    errors: &'a Mutex<BTreeMap<usize, String>>,
    written: &'a WriteBack,
    progress: &'a Progress,
    /// Entries whose metadata was applied through their open file already.
    meta_done: &'a [std::sync::atomic::AtomicBool],
    /// Metadata applied in step 3 (through the file just written).
    /// (and the identity of the file created there).
    meta_results: &'a Mutex<Vec<(usize, Ident, std::io::Result<Applied>)>>,
    owners: bool,
}

fn restore_pack(ctx: &PackCtx<'_>, pack: &PackId, blobs: &[(BlobId, BlobLoc, usize, u64)]) {
    let errors = ctx.errors;
    let path = paths::pack(pack);
    let fail_all = |msg: String| {
        let mut g = errors.lock();
        for (_, _, i, _) in blobs {
            g.entry(*i).or_insert_with(|| msg.clone());
        }
    };
    thread_local! {
        static PACK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        static PLAIN_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // Buffers reused across packs and blobs: no allocation (and no page faults) per blob.
    let mut whole = PACK_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let mut plain = PLAIN_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    restore_pack_with(ctx, blobs, &path, &fail_all, &mut whole, &mut plain);
    PACK_BUF.with(|b| *b.borrow_mut() = whole);
    PLAIN_BUF.with(|b| *b.borrow_mut() = plain);
}

fn restore_pack_with(
    ctx: &PackCtx<'_>,
    blobs: &[(BlobId, BlobLoc, usize, u64)],
    path: &str,
    fail_all: &dyn Fn(String),
    whole: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) {
    let PackCtx {
        repo,
        entries,
        errors,
        written,
        progress,
        ..
    } = *ctx;
    // Read the whole pack when most of it is needed, else blob by blob.
    let needed: u64 = blobs.iter().map(|b| u64::from(b.1.length)).sum();
    let have_whole = match repo.storage().stat(path) {
        Ok(Some(size)) if needed * 2 >= size => match repo.storage().get_into(path, whole) {
            Ok(()) => true,
            Err(e) => {
                fail_all(format!("cannot read {path}: {e}"));
                return;
            }
        },
        Ok(Some(_)) => false,
        Ok(None) => {
            fail_all(format!("{path} is missing"));
            return;
        }
        Err(e) => {
            fail_all(format!("cannot read {path}: {e}"));
            return;
        }
    };
    // In file order; a blob used by several files is opened once (decryption is in place).
    let mut order: Vec<&(BlobId, BlobLoc, usize, u64)> = blobs.iter().collect();
    order.sort_by_key(|b| b.1.offset);
    let mut opened: Option<BlobId> = None;
    let mut open_files: HashMap<usize, File> = HashMap::new();
    for (id, loc, i, offset) in order {
        let e = &entries[*i];
        if errors.lock().contains_key(i) {
            continue;
        }
        if opened != Some(*id) {
            opened = None;
            let res = if have_whole {
                match whole.get_mut(loc.offset as usize..(loc.offset + loc.length) as usize) {
                    Some(sealed) => {
                        repo.open_blob_to(path, loc.kind, id, loc.raw_len, sealed, plain)
                    }
                    None => Err(Error::damaged(path, "truncated")),
                }
            } else {
                repo.storage()
                    .get_range(path, u64::from(loc.offset), u64::from(loc.length))
                    .map_err(Error::from)
                    .and_then(|mut s| {
                        repo.open_blob_to(path, loc.kind, id, loc.raw_len, &mut s, plain)
                    })
            };
            if let Err(err) = res {
                errors
                    .lock()
                    .insert(*i, format!("damaged data, file incomplete: {err}"));
                continue;
            }
            opened = Some(*id);
        }
        let plain: &[u8] = plain;
        let single = e.node.content.len() == 1 && !e.node.sparse;
        let res = (|| -> std::io::Result<()> {
            if single {
                let (mut f, id) = create_file(ctx.target, &e.dest, 0, false)?;
                f.write_all(plain)?;
                // Metadata through the open file: no lookups, and it is surely this file.
                let applied = apply_metadata_fd(&f, &e.node, ctx.owners);
                ctx.meta_results.lock().push((*i, id, applied));
                ctx.meta_done[*i].store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            if e.node.sparse && plain.iter().all(|b| *b == 0) {
                return Ok(()); // leave a hole
            }
            let f = match open_files.entry(*i) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(reopen(ctx.target, &e.dest, ctx.idents[*i])?)
                }
            };
            if e.node.sparse {
                write_sparse(f, plain, *offset)
            } else {
                f.write_all_at(plain, *offset)
            }
        })();
        match res {
            Ok(()) => {
                written.wrote(plain.len() as u64);
                Progress::add(&progress.bytes_done, plain.len() as u64);
            }
            Err(err) => {
                errors.lock().insert(*i, format!("cannot write: {err}"));
            }
        }
    }
}

/// Bytes of content written, and the write-back that starts flushing them while the restore
/// goes on.
///
/// Linux keeps written data dirty in memory until it exceeds a share of RAM (on a 24 GiB
/// machine, gigabytes) or ages 30 s, so without help a restore's whole content would be
/// flushed by the final `syncfs`, after all decoding is done. A write-back thread calls
/// `syncfs` each time [`WriteBack::STEP`] more bytes were written, so the disk works while
/// the workers decode, and the final `syncfs` waits only for the tail. The workers never
/// wait for the disk here; an intermediate `syncfs` that fails changes nothing (the final
/// one reports).
#[derive(Default)]
struct WriteBack {
    /// Bytes written in all (for the report).
    total: std::sync::atomic::AtomicU64,
    /// Bytes written since the last flush started, and whether the restore's writing is done.
    state: Mutex<(u64, bool)>,
    wake: parking_lot::Condvar,
}

impl WriteBack {
    /// Bytes written between two intermediate flushes.
    const STEP: u64 = 64 << 20;

    /// Records `n` bytes written.
    fn wrote(&self, n: u64) {
        self.total
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let mut g = self.state.lock();
        g.0 += n;
        if g.0 >= Self::STEP {
            self.wake.notify_one();
        }
    }

    fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The write-back thread: flushes every [`WriteBack::STEP`] bytes until told to stop.
    fn run(&self, t: &Beneath) {
        loop {
            let mut g = self.state.lock();
            while g.0 < Self::STEP && !g.1 {
                self.wake.wait(&mut g);
            }
            if g.1 {
                return;
            }
            g.0 = 0;
            drop(g);
            let _ = t.sync();
        }
    }
}

/// Stops the write-back thread when dropped (also when a worker panics, so the scope that
/// waits for the thread never hangs).
struct StopWriteBack<'a>(&'a WriteBack);

impl Drop for StopWriteBack<'_> {
    fn drop(&mut self) {
        self.0.state.lock().1 = true;
        self.0.wake.notify_one();
    }
}

/// Writes `data` at `offset`, skipping 4 KiB blocks that are all zeros so they stay holes.
fn write_sparse(f: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut start = 0usize;
    while start < data.len() {
        // Skip zero blocks.
        while start < data.len()
            && data[start..(start + BLOCK).min(data.len())]
                .iter()
                .all(|b| *b == 0)
        {
            start += BLOCK;
        }
        if start >= data.len() {
            break;
        }
        let mut end = start;
        while end < data.len()
            && !data[end..(end + BLOCK).min(data.len())]
                .iter()
                .all(|b| *b == 0)
        {
            end += BLOCK;
        }
        let end = end.min(data.len());
        f.write_all_at(&data[start..end], offset + start as u64)?;
        start = end;
    }
    Ok(())
}

/// Writes the contents of the file at `path` in the snapshot to `out`.
///
/// # Errors
/// [`Error::PathNotFound`], [`Error::Invalid`] when the path is not a file,
/// [`Error::NotBackedUp`] (before writing anything) when the backup could not read it,
/// damage errors naming the pack, and write errors.
pub fn dump(
    repo: &Repository,
    index: &Index,
    snapshot_tree: &BlobId,
    path: &[u8],
    snapshot_name: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let node = find_path(repo, index, snapshot_tree, path, snapshot_name)?
        .ok_or_else(|| Error::Invalid("dump needs a file path: SNAPSHOT:PATH".into()))?;
    if !matches!(node.kind, NodeKind::File) {
        return Err(Error::Invalid(format!(
            "{} is not a regular file; use `lifeboat restore` for directories",
            String::from_utf8_lossy(path)
        )));
    }
    if let Some(reason) = &node.error {
        return Err(Error::NotBackedUp {
            path: String::from_utf8_lossy(path).into_owned(),
            snapshot: snapshot_name.to_string(),
            reason: reason.clone(),
        });
    }
    if node.delta.is_some() {
        let mut rebuild = crate::delta::Rebuild::new(repo, index, &node)?;
        return std::io::copy(&mut rebuild, out).map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        });
    }
    let mut n = 0u64;
    for b in &node.content {
        let data = repo.read_blob(index, b)?;
        out.write_all(&data).map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })?;
        n += data.len() as u64;
    }
    Ok(n)
}
