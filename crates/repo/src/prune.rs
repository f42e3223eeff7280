//! `prune`: reclaim space from packs no snapshot needs, safely beside running backups.
//!
//! Lives here: [`prune`], its options and report, and condemned-pack records. Never here:
//! choosing snapshots to forget (`retention`). The protocol (docs/design/0001-concurrency.md)
//! is two-phase and lock-free for backups:
//!
//! 1. **Mark.** Packs that hold nothing any snapshot uses (including packs no index names)
//!    are *condemned*: their ids go into a record `condemned/<hash>` with its creation time.
//!    Nothing is deleted. Writers that start after the record exists do not build on
//!    condemned packs (they store fresh copies).
//! 2. **Sweep** (the same run or a later one). A record is swept only when no live write
//!    lease started before it (plus a clock-skew margin) and no read lease is live at all
//!    (readers do not avoid condemned packs, so one that started late may still read them).
//!    Then the snapshots are read *again*, and a condemned pack still needed by any of them (a
//!    backup that started before the mark and used it) is kept. The rest: a new index
//!    without them is written, the old index files are removed, then the packs, then the
//!    record.
//!
//! Why this is safe: a writer writes its lease and *then* lists the records; prune writes
//! the record and *then* lists the leases. Whichever comes second sees the other's file:
//! either the writer avoids the condemned packs, or prune waits for the writer. A record's
//! `created` time must therefore not be much earlier than the moment it became visible; a
//! record whose write took longer than half the skew margin is written again with a fresh
//! time (see `write_record`).
//!
//! Only one prune runs at a time: prune writes its own lease, then lists the others. Of two
//! that see each other, the younger (later `created`, then larger name) gives up at once;
//! the older waits briefly for the younger to go and gives up if it does not.
//!
//! # Crash safety
//! Each step leaves a usable repository: a crash after the new index leaves duplicate index
//! entries; after the old index files are gone, packs nobody names (garbage for next time).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use lifeboat_types::{BlobId, PackId, SnapshotId};

use crate::error::{Error, Result};
use crate::format::{paths, IndexFile, IndexPack, NodeKind, Snapshot};
use crate::index::Index;
use crate::lease::{list_leases, now_s, Lease, LeaseKind};
use crate::repository::{content_id, Repository};
use crate::writer::{BlobWriter, WriterOptions};

/// Options of prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Only report what would be done.
    pub dry_run: bool,
    /// Repack packs in which more than this fraction of the blob bytes is unused (0..1);
    /// a pack's header and trailer do not count.
    pub repack_unused_fraction: f64,
    /// Clock-skew margin between hosts when comparing lease and record times.
    pub skew: Duration,
    /// TTL of prune's own lease.
    pub lease_ttl: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_unused_fraction: 0.3,
            skew: Duration::from_secs(300),
            lease_ttl: crate::lease::DEFAULT_TTL,
        }
    }
}

/// What prune did (`--json` schema: docs/json.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Packs in the repository before.
    pub packs_before: usize,
    /// Packs condemned by this run.
    pub packs_condemned: usize,
    /// Packs repacked (their used blobs copied into new packs) by this run.
    pub packs_repacked: usize,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Bytes freed by deleting packs (with `dry_run`: that a run would free).
    pub freed_bytes: u64,
    /// Condemned packs kept because a snapshot turned out to need them.
    pub packs_resurrected: usize,
    /// Records that cannot be swept yet, and the leases they wait for.
    pub waiting_on: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Stale temp files (left by killed writers) removed from a local repository.
    pub temp_files_removed: usize,
}

/// A condemned-pack record (JSON, named by the BLAKE3 of its bytes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Condemned {
    /// When it was written (seconds since the epoch, pruning host's clock).
    pub created: f64,
    /// The packs condemned.
    pub packs: Vec<PackId>,
}

/// Reads every condemned record.
///
/// # Errors
/// Storage errors.
pub fn condemned_records(repo: &Repository) -> Result<Vec<(String, Condemned)>> {
    let mut out = Vec::new();
    for e in repo.storage().list(paths::CONDEMNED)? {
        match repo.storage().get(&e.path) {
            Ok(b) => match serde_json::from_slice::<Condemned>(&b) {
                Ok(c) => out.push((e.path, c)),
                Err(err) => tracing::warn!("ignoring unreadable record {}: {err}", e.path),
            },
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(out)
}

/// The packs that writers must not build on: damaged ones and condemned ones.
///
/// # Errors
/// Storage errors.
pub fn packs_to_avoid(repo: &Repository) -> Result<HashSet<PackId>> {
    let mut avoid = repo.damaged_packs()?;
    for (_, c) in condemned_records(repo)? {
        avoid.extend(c.packs);
    }
    Ok(avoid)
}

/// Blobs used by snapshots, with the set of trees already walked.
#[derive(Default)]
struct Usage {
    trees: HashSet<BlobId>,
    used: HashSet<BlobId>,
    snapshots: HashSet<SnapshotId>,
}

impl Usage {
    fn add(
        &mut self,
        repo: &Repository,
        index: &Index,
        snaps: &[(SnapshotId, Snapshot)],
    ) -> Result<()> {
        for (sid, s) in snaps {
            if !self.snapshots.insert(*sid) {
                continue;
            }
            let mut stack = vec![s.tree];
            while let Some(t) = stack.pop() {
                if !self.trees.insert(t) {
                    continue;
                }
                self.used.insert(t);
                let tree = repo.read_tree(index, &t).map_err(|e| {
                    Error::damaged(
                        format!("snapshots/{sid}"),
                        format!("prune needs every tree of every snapshot and this one has an unreadable one ({e}); nothing was deleted. Run `lifeboat check`"),
                    )
                })?;
                for n in &tree.nodes {
                    if let (NodeKind::Dir, Some(sub)) = (&n.kind, n.subtree) {
                        stack.push(sub);
                    }
                    self.used.extend(n.content.iter().copied());
                }
            }
        }
        Ok(())
    }
}

fn load_snapshots_strict(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (snaps, bad) = repo.snapshots()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(Error::damaged(
            "snapshots/",
            format!("prune needs every snapshot and one is unreadable ({e}); nothing was deleted. Run `lifeboat check`"),
        ));
    }
    Ok(snaps)
}

/// Prunes the repository.
///
/// # Errors
/// [`Error::Leased`] when another prune runs; [`Error::Invalid`] when a snapshot or tree is
/// unreadable (prune then deletes nothing); storage errors.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let lease = Lease::acquire(repo, LeaseKind::Prune, "prune", opts.lease_ttl)?;
    exclude_other_prunes(repo, &lease)?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !opts.dry_run {
        // Temp files of writers killed mid-pack; a day is far beyond any live writer's pack.
        report.temp_files_removed = repo
            .storage()
            .remove_stale_temp(Duration::from_secs(24 * 3600));
    }

    // ---- mark ----------------------------------------------------------------------
    let damaged = repo.damaged_packs()?;
    let records = condemned_records(repo)?;
    let already: HashSet<PackId> = records
        .iter()
        .flat_map(|(_, c)| c.packs.iter().copied())
        .collect();
    let mut avoid = damaged.clone();
    avoid.extend(already.iter().copied());
    // Snapshots before the index: a snapshot is written after the index files it needs, so
    // every snapshot listed here has its blobs in the index loaded next (a backup committing
    // in between would otherwise look like a snapshot with missing trees).
    let snaps = load_snapshots_strict(repo)?;
    let (index, bad) = repo.load_index_with(&avoid)?;
    if let Some(e) = bad.into_iter().next() {
        return Err(Error::damaged(
            "index/",
            format!("an index file is unreadable ({e}); nothing was deleted. Run `lifeboat check`"),
        ));
    }
    let mut usage = Usage::default();
    usage.add(repo, &index, &snaps)?;

    let listed: HashMap<PackId, u64> = repo.list_packs()?;
    report.packs_before = listed.len();

    // Bytes each pack holds for used blobs (counting a blob only at its chosen location).
    let mut used_bytes: HashMap<PackId, u64> = HashMap::new();
    let mut pack_blobs: HashMap<PackId, Vec<(BlobId, crate::index::BlobLoc)>> = HashMap::new();
    for (id, loc) in index.blobs() {
        pack_blobs.entry(loc.pack).or_default().push((id, loc));
        if usage.used.contains(&id) {
            *used_bytes.entry(loc.pack).or_default() += u64::from(loc.length);
        }
    }
    let mut condemn: Vec<PackId> = Vec::new();
    let mut repack: Vec<PackId> = Vec::new();
    for (p, size) in &listed {
        if already.contains(p) {
            continue;
        }
        let used = used_bytes.get(p).copied().unwrap_or(0);
        if used == 0 {
            condemn.push(*p);
        } else if damaged.contains(p) || worth_repacking(*size, index.pack_data_len(p), used, opts)
        {
            repack.push(*p);
        }
    }
    if !opts.dry_run && !repack.is_empty() {
        repack_packs(repo, &index, &usage.used, &repack, &pack_blobs, &damaged)?;
        condemn.extend(repack.iter().copied());
    }
    report.packs_repacked = repack.len();
    report.packs_condemned = condemn.len();
    if opts.dry_run {
        report.freed_bytes = condemn.iter().filter_map(|p| listed.get(p)).sum();
        return Ok(report);
    }
    let mut records = records;
    if !condemn.is_empty() {
        condemn.sort();
        records.push(write_record(repo, condemn, opts.skew)?);
    }

    // ---- sweep ---------------------------------------------------------------------
    let leases = list_leases(repo)?;
    let now = now_s();
    let mut sweepable = Vec::new();
    for (path, rec) in records {
        let blockers: Vec<String> = leases
            .iter()
            .filter(|(_, l)| {
                l.is_live(now)
                    && match l.kind {
                        LeaseKind::Prune => false,
                        LeaseKind::Read => true,
                        LeaseKind::Write => l.created < rec.created + opts.skew.as_secs_f64(),
                    }
            })
            .map(|(_, l)| l.describe())
            .collect();
        if blockers.is_empty() {
            sweepable.push((path, rec));
        } else {
            report.waiting_on.push(format!(
                "{} condemned pack(s) wait for: {}",
                rec.packs.len(),
                blockers.join("; ")
            ));
        }
    }
    if sweepable.is_empty() {
        lease.check_valid()?;
        return Ok(report);
    }
    // Read snapshots again: a writer that finished since the mark may use condemned packs.
    let condemned_now: HashSet<PackId> = sweepable
        .iter()
        .flat_map(|(_, c)| c.packs.iter().copied())
        .collect();
    let mut avoid2 = damaged.clone();
    avoid2.extend(condemned_now.iter().copied());
    let snaps2 = load_snapshots_strict(repo)?; // before the index, as above
    let (index2, bad) = repo.load_index_with(&avoid2)?;
    if let Some(e) = bad.into_iter().next() {
        return Err(Error::damaged(
            "index/",
            format!("an index file is unreadable ({e}); nothing was deleted. Run `lifeboat check`"),
        ));
    }
    usage.add(repo, &index2, &snaps2)?;
    // Every copy of every blob, from the index files just loaded.
    let mut by_pack: HashMap<PackId, IndexPack> = HashMap::new();
    let mut old_files = Vec::new();
    for id in index2.files() {
        let f: IndexFile =
            match repo.read_file(&paths::index(id), crate::format::aad::INDEX, "index") {
                Ok(f) => f,
                Err(Error::Storage(e)) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
        old_files.push(*id);
        for ip in f.packs {
            by_pack.entry(ip.id).or_insert(ip);
        }
    }
    // A condemned pack is still needed when it holds a used blob that has no copy in a
    // pack that is neither condemned nor damaged.
    let mut copies: HashMap<BlobId, (bool, Vec<PackId>)> = HashMap::new();
    for ip in by_pack.values() {
        for e in &ip.blobs {
            if !usage.used.contains(&e.id) {
                continue;
            }
            let c = copies.entry(e.id).or_default();
            if condemned_now.contains(&ip.id) {
                c.1.push(ip.id);
            } else if !damaged.contains(&ip.id) {
                c.0 = true;
            }
        }
    }
    let needed: HashSet<PackId> = copies
        .into_values()
        .filter(|(healthy, _)| !healthy)
        .flat_map(|(_, packs)| packs)
        .collect();
    let delete: HashSet<PackId> = condemned_now.difference(&needed).copied().collect();
    report.packs_resurrected = needed.len();

    lease.check_valid()?;
    // New index without the deleted packs, then drop the old index files.
    let mut file = IndexFile {
        packs: by_pack
            .into_values()
            .filter(|ip| !delete.contains(&ip.id))
            .collect(),
        supersedes: old_files.clone(),
    };
    file.packs.sort_by_key(|a| a.id);
    let new_id = if file.packs.is_empty() {
        None
    } else {
        Some(repo.save_index(&file)?)
    };
    lease.check_valid()?;
    // Deletions in batches: each directory is fsynced once after its batch (local storage).
    let old_indexes: Vec<String> = old_files
        .into_iter()
        .filter(|id| Some(*id) != new_id)
        .map(|id| paths::index(&id))
        .collect();
    repo.storage().delete_all(&old_indexes)?;
    lease.check_valid()?;
    let mut doomed: Vec<String> = Vec::with_capacity(delete.len() * 2);
    for p in &delete {
        let path = paths::pack(p);
        if let Some(size) = repo.storage().stat(&path)? {
            report.freed_bytes += size;
            report.packs_deleted += 1;
        }
        doomed.push(path);
        doomed.push(paths::damaged(p));
    }
    repo.storage().delete_all(&doomed)?;
    // The condemned records go only once the packs' deletion is durable.
    let records: Vec<&str> = sweepable.iter().map(|(path, _)| path.as_str()).collect();
    repo.storage().delete_all(&records)?;
    drop(lease);
    Ok(report)
}

/// How long the older of two prunes that see each other waits for the younger to go.
const PRUNE_STANDOFF: Duration = Duration::from_secs(10);

/// Makes sure no other prune runs (called with this prune's lease already written).
///
/// Two prunes that start together may each see the other's lease. The younger (later
/// `created`, then larger name) refuses at once; the older waits up to [`PRUNE_STANDOFF`]
/// for the younger to release its lease, re-listing, and refuses if it is still there (the
/// younger did not see it and is running). Either way at most one prune goes on: the one
/// that goes on saw no other live prune lease after writing its own.
fn exclude_other_prunes(repo: &Repository, lease: &Lease) -> Result<()> {
    let me = lease.info();
    let deadline = std::time::Instant::now() + PRUNE_STANDOFF;
    loop {
        let now = now_s();
        let listed = list_leases(repo)?;
        // Both sides compare the `created` times as stored (read back from the files), so
        // they agree on the order even when two prunes start within the clock's resolution
        // (equal times: the path decides). In-memory values once differed from their JSON
        // round trip by one ulp, and two prunes each took the other for the older.
        let mine = listed
            .iter()
            .find(|(path, _)| path == lease.path())
            .map_or(me.created, |(_, info)| info.created);
        let my_key = (mine, lease.path().to_string());
        let others: Vec<(String, crate::lease::LeaseInfo)> = listed
            .into_iter()
            .filter(|(path, info)| {
                info.kind == LeaseKind::Prune && path != lease.path() && info.is_live(now)
            })
            .collect();
        let Some((path, oldest)) = others
            .iter()
            .min_by(|a, b| a.1.created.total_cmp(&b.1.created).then(a.0.cmp(&b.0)))
        else {
            return Ok(());
        };
        if (oldest.created, path.clone()) < my_key || std::time::Instant::now() >= deadline {
            return Err(Error::Leased {
                what: format!("another prune is running ({})", oldest.describe()),
                hint:
                    "run prune again when it has finished; its lease expires by itself if it died"
                        .into(),
            });
        }
        // Only younger prunes: they give up by themselves; poll until they are gone.
        let _ = crossbeam_channel::never::<()>().recv_timeout(Duration::from_millis(100));
    }
}

/// Writes a condemned record for `packs`, and returns it with its path.
///
/// The sweep compares the record's `created` time with the start of write leases, so the
/// record must become visible soon after that time: a writer that started after
/// `created + skew` is assumed to have seen it. When the write took longer than half the
/// skew margin (a slow or retried upload, a stalled process), the record is written again
/// with a time taken after the first write had completed, and the first one removed; every
/// writer that missed both started before the new time.
fn write_record(
    repo: &Repository,
    packs: Vec<PackId>,
    skew: Duration,
) -> Result<(String, Condemned)> {
    let put = |rec: &Condemned| -> Result<String> {
        let bytes = serde_json::to_vec(rec).map_err(|e| Error::Invalid(e.to_string()))?;
        let path = format!("{}/{}", paths::CONDEMNED, hex::encode(content_id(&bytes)));
        repo.storage().put(&path, bytes)?;
        Ok(path)
    };
    let started = std::time::Instant::now();
    let rec = Condemned {
        created: now_s(),
        packs,
    };
    let path = put(&rec)?;
    if started.elapsed() <= skew / 2 {
        return Ok((path, rec));
    }
    tracing::warn!(
        "writing the condemned record took {:?}; writing it again with a fresh time",
        started.elapsed()
    );
    let again = Condemned {
        created: now_s(),
        packs: rec.packs,
    };
    let new_path = put(&again)?;
    if new_path != path {
        repo.storage().delete(&path)?;
    }
    Ok((new_path, again))
}

/// Whether a pack of `size` bytes, whose sealed blobs take `data_len` bytes of which `used`
/// are needed, holds enough unused blobs to be rewritten. Only blob bytes count: the
/// header and trailer every pack has are not waste, or a small pack (one tree, 118 bytes)
/// would look a third empty and be rewritten into an identical small pack by every prune.
/// A pack the index knows no blobs of (`data_len` 0) is judged by its size.
fn worth_repacking(size: u64, data_len: u64, used: u64, opts: &PruneOptions) -> bool {
    let data = if data_len > 0 { data_len } else { size };
    data > 0 && data.saturating_sub(used) as f64 / data as f64 > opts.repack_unused_fraction
}

/// Copies the used blobs of `packs` into new packs (indexed before return).
fn repack_packs(
    repo: &Repository,
    index: &Index,
    used: &HashSet<BlobId>,
    packs: &[PackId],
    pack_blobs: &HashMap<PackId, Vec<(BlobId, crate::index::BlobLoc)>>,
    damaged: &HashSet<PackId>,
) -> Result<()> {
    let writer = BlobWriter::new(repo, Arc::new(Index::new()), &WriterOptions::default())?;
    for p in packs {
        let Some(blobs) = pack_blobs.get(p) else {
            continue;
        };
        for (id, loc) in blobs {
            if !used.contains(id) || !writer.claim(id) {
                continue;
            }
            if damaged.contains(p) {
                // Verify each blob; a damaged one is left behind (check reports it).
                match repo.read_blob(index, id) {
                    Ok(plain) => writer.save(loc.kind, *id, plain)?,
                    Err(e) => tracing::warn!("not repacking damaged blob {}: {e}", id.short()),
                }
            } else {
                let sealed = repo.storage().get_range(
                    &paths::pack(p),
                    u64::from(loc.offset),
                    u64::from(loc.length),
                )?;
                writer.save_sealed(loc.kind, *id, loc.raw_len, sealed)?;
            }
        }
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KdfParams;
    use crate::lease::DEFAULT_TTL;
    use crate::repository::InitOptions;

    #[test]
    fn pack_overhead_is_not_waste() {
        let opts = PruneOptions::default();
        // Issue 10: one 60-byte blob in a 118-byte pack, all of it used: nothing to gain.
        assert!(!worth_repacking(118, 60, 60, &opts));
        // Half the blob bytes unused: worth it, however small the pack.
        assert!(worth_repacking(178, 120, 60, &opts));
        assert!(!worth_repacking(1000, 900, 700, &opts));
        // No blobs known: judged by the size.
        assert!(worth_repacking(500, 0, 100, &opts));
    }

    #[test]
    fn a_prune_started_at_the_same_instant_is_ordered_by_name() {
        let storage = lifeboat_storage::Storage::memory().unwrap();
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let repo = Repository::init(storage, b"pw", &opts).unwrap();
        let lease = Lease::acquire(&repo, LeaseKind::Prune, "prune", DEFAULT_TTL).unwrap();
        // Another prune whose lease has exactly our start time (two processes that read
        // the clock within its resolution), under a name that sorts first: it is the
        // older, so we refuse at once. (Its side, with us the younger, refuses too: that
        // is the "both refused" race this guards against if the times disagreed.)
        let other = lease.info();
        let path = format!("{}/{}", paths::LOCKS, "0".repeat(32));
        assert!(path.as_str() < lease.path());
        repo.storage()
            .put(&path, serde_json::to_vec(&other).unwrap())
            .unwrap();
        let started = std::time::Instant::now();
        let err = exclude_other_prunes(&repo, &lease).unwrap_err();
        assert!(matches!(err, Error::Leased { .. }), "{err}");
        assert!(
            started.elapsed() < PRUNE_STANDOFF / 2,
            "refused by the order, not the deadline"
        );
        repo.storage().delete(&path).unwrap();
        assert!(exclude_other_prunes(&repo, &lease).is_ok());

        // The same start time under a name that sorts last: we are the older and wait for
        // it to go (here: its lease lapses after half a second), instead of refusing (which,
        // with it refusing too, stopped both).
        let younger = format!("{}/{}", paths::LOCKS, "f".repeat(32));
        assert!(younger.as_str() > lease.path());
        let lapsing = crate::lease::LeaseInfo {
            refreshed: now_s(),
            ttl_s: 0.5,
            ..other
        };
        repo.storage()
            .put(&younger, serde_json::to_vec(&lapsing).unwrap())
            .unwrap();
        let started = std::time::Instant::now();
        assert!(exclude_other_prunes(&repo, &lease).is_ok());
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "went on while the younger prune's lease was live"
        );
    }
}
