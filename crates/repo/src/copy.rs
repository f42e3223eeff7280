//! `copy`: replicate snapshots into a second repository (the DR region), incrementally.
//!
//! Lives here: [`copy`], [`CopyOptions`], [`CopyReport`]. Never here: choosing which
//! snapshots to copy (the caller passes them) or creating the target (the CLI does).
//!
//! The two repositories share the blob-id key and chunker parameters (`init --copy-params-from`)
//! but not the encryption key: every blob is opened with the source key, verified against its
//! id, and sealed again with the target key, without recompressing.
//!
//! # Crash safety
//! For each snapshot, its blobs are uploaded and indexed first; the snapshot file is written
//! last. A copy interrupted anywhere never shows a snapshot whose data is missing; a rerun
//! skips snapshots already copied and blobs already present.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use lifeboat_types::{BlobId, SnapshotId};

use crate::error::{Error, Result};
use crate::format::{paths, BlobKind, NodeKind, Snapshot};
use crate::index::Index;
use crate::lease::{Lease, LeaseKind, DEFAULT_TTL};
use crate::repository::{content_id, Repository};
use crate::writer::{BlobWriter, WriterOptions};

/// Options of copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Read each new pack back from the target and check its hash before committing.
    pub verify_upload: bool,
    /// Write pipeline knobs.
    pub writer: WriterOptions,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            verify_upload: true,
            writer: WriterOptions::default(),
        }
    }
}

/// One snapshot copied.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// Id in the source.
    pub source: SnapshotId,
    /// Id in the target.
    pub target: SnapshotId,
    /// Blobs sent.
    pub blobs: u64,
    /// Bytes of packs written to the target.
    pub stored_bytes: u64,
}

/// What copy did (`--json` schema: docs/json.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots copied now.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots the target already had.
    pub already_present: Vec<SnapshotId>,
    /// Snapshots asked for that the source no longer has (forgotten since they were listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<SnapshotId>,
    /// WAL objects copied now (database sources).
    pub wal_copied: u64,
    /// WAL objects the target already had.
    pub wal_present: u64,
}

/// Copies the WAL objects of every database source that the target lacks. Each one is
/// read and verified with the source key and sealed again with the target key; a WAL
/// object already in the target with different content is an error (nothing is
/// overwritten). Returns (copied, already present).
///
/// # Errors
/// [`Error::Damaged`] naming a source WAL object that fails verification;
/// [`Error::WalConflict`]; storage errors.
pub fn copy_wal(src: &Repository, dst: &Repository, progress: &dyn Fn(&str)) -> Result<(u64, u64)> {
    let (mut copied, mut present) = (0u64, 0u64);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for source in src.wal_sources()? {
        let have: HashSet<String> = dst.wal_list(&source)?.into_iter().map(|e| e.name).collect();
        let mut todo: Vec<String> = src
            .wal_list(&source)?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| {
                let there = have.contains(n);
                if there {
                    present += 1;
                }
                !there
            })
            .collect();
        todo.sort();
        if !todo.is_empty() {
            progress(&format!("copying {} WAL files of {source}", todo.len()));
        }
        for name in todo {
            let data = match src.wal_get(&source, &name, threads) {
                Ok(d) => d,
                // Retention may delete WAL while we copy.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            dst.wal_put(&source, &name, &data, threads)?;
            copied += 1;
        }
    }
    Ok((copied, present))
}

/// Whether two repositories can copy between each other.
pub fn compatible(a: &Repository, b: &Repository) -> bool {
    a.key().material().id == b.key().material().id && a.config().chunker == b.config().chunker
}

/// Copies `snapshots` from `src` into `dst`.
///
/// # Errors
/// [`Error::Invalid`] when the repositories are not compatible; [`Error::Damaged`] when a
/// source blob fails verification (nothing of that snapshot is committed); storage errors.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    opts: &CopyOptions,
    progress: &dyn Fn(&str),
) -> Result<CopyReport> {
    if !compatible(src, dst) {
        return Err(Error::Invalid(format!(
            "{} does not share blob ids with {}: create the target with `lifeboat init --repo {} --copy-params-from {}`",
            dst.storage().describe(),
            src.storage().describe(),
            dst.storage().describe(),
            src.storage().describe()
        )));
    }
    if src.supports_deltas() && !dst.supports_deltas() {
        return Err(Error::Invalid(format!(
            "{} has format version {}, {} version {}: snapshots may hold delta files that \
             version {} cannot describe; run `lifeboat migrate --repo {}` first",
            src.storage().describe(),
            src.config().version,
            dst.storage().describe(),
            dst.config().version,
            dst.config().version,
            dst.storage().describe()
        )));
    }
    // A read-only source (a mounted snapshot of the backup disk, read-only credentials) is
    // what a copy to a DR repository often reads: it goes on without a lease there.
    let _read = Lease::acquire_read(src, "copy (source)")?;
    let write = Lease::acquire(dst, LeaseKind::Write, "copy (target)", DEFAULT_TTL)?;
    // The caller listed `snapshots` before the read lease existed: one forgotten since may
    // already have lost its packs to a prune. Those still listed now are protected.
    let still_there: HashSet<SnapshotId> = src.snapshot_ids()?.into_iter().collect();
    let src_index = src.load_index()?;
    let (existing, _) = dst.snapshots()?;
    let present: HashSet<SnapshotId> = existing
        .iter()
        .flat_map(|(id, s)| [Some(*id), s.original])
        .flatten()
        .collect();
    let mut report = CopyReport::default();
    for (sid, snap) in snapshots {
        if !still_there.contains(sid) {
            tracing::warn!(
                "snapshot {} was forgotten in the source; not copied",
                sid.short()
            );
            report.gone.push(*sid);
            continue;
        }
        if present.contains(sid) {
            report.already_present.push(*sid);
            continue;
        }
        progress(&format!("copying snapshot {}", sid.short()));
        let dst_index = Arc::new(dst.load_index_for_write()?);
        let known_packs = dst_index.packs().count();
        let writer = BlobWriter::new(dst, dst_index, &opts.writer)?;
        let mut blobs = 0u64;
        let mut stack = vec![snap.tree];
        let mut seen: HashSet<BlobId> = HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            let tree = src.read_tree(&src_index, &t)?;
            for n in &tree.nodes {
                if let (NodeKind::Dir, Some(sub)) = (&n.kind, n.subtree) {
                    stack.push(sub);
                }
                for b in &n.content {
                    if seen.insert(*b) && writer.claim(b) {
                        send_blob(src, dst, &src_index, &writer, BlobKind::Data, b)?;
                        blobs += 1;
                    }
                }
            }
            if writer.claim(&t) {
                send_blob(src, dst, &src_index, &writer, BlobKind::Tree, &t)?;
                blobs += 1;
            }
        }
        let wr = writer.finish()?;
        if opts.verify_upload {
            verify_index_files(dst, &wr.index_files)?;
        }
        let mut copied = snap.clone();
        copied.original = Some(snap.original.unwrap_or(*sid));
        let tid = dst.commit_snapshot(&write, &wr.packs_used, known_packs, &copied)?;
        report.copied.push(CopiedSnapshot {
            source: *sid,
            target: tid,
            blobs,
            stored_bytes: wr.stored_bytes,
        });
    }
    Ok(report)
}

fn send_blob(
    src: &Repository,
    dst: &Repository,
    src_index: &Index,
    writer: &BlobWriter,
    kind: BlobKind,
    id: &BlobId,
) -> Result<()> {
    let loc = src_index.get(id).ok_or(Error::BlobMissing { id: *id })?;
    // read_blob authenticates, decompresses and checks the id.
    let plain = src.read_blob(src_index, id)?;
    let _ = dst;
    if loc.kind != kind {
        return Err(Error::damaged(
            paths::pack(&loc.pack),
            format!("blob {} has the wrong kind", id.short()),
        ));
    }
    writer.save(kind, *id, plain)
}

/// Reads back every pack named by `index_files` and checks it against its name.
fn verify_index_files(dst: &Repository, index_files: &[lifeboat_types::IndexId]) -> Result<()> {
    for id in index_files {
        let f: crate::format::IndexFile =
            dst.read_file(&paths::index(id), crate::format::aad::INDEX, "index")?;
        for p in &f.packs {
            let path = paths::pack(&p.id);
            let bytes = dst.storage().get(&path)?;
            if content_id(&bytes) != p.id.0 {
                return Err(Error::damaged(
                    path,
                    "the copy in the target does not match what was sent",
                ));
            }
        }
    }
    Ok(())
}
