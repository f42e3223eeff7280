//! `check`: prove the repository's structure, and with `read_data` every byte.
//!
//! Lives here: [`check`], [`CheckOptions`], [`CheckReport`]. Never here: repairing data.
//! The only thing `check` writes is a damage record (`damaged/<pack>`) for each pack it finds
//! damaged or missing, so that later backups store fresh copies of the affected blobs
//! instead of building on them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use lifeboat_types::{BlobId, PackId, SnapshotId};

use crate::error::{Error, Result};
use crate::format::{paths, BlobKind, NodeKind};
use crate::index::Index;
use crate::repository::{content_id, par_map_init, Repository};

/// How much of the data `check` reads and verifies, besides the structure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    #[default]
    None,
    /// Every pack (and every WAL object), in full.
    All,
    /// This percentage (0–100) of the packs, and of the WAL objects, chosen at random; each
    /// pack chosen is read in full. `--read-data --read-data-subset N%` means this too.
    Subset(f64),
}

impl ReadData {
    /// Whether any data is read.
    pub fn reads(self) -> bool {
        self != ReadData::None
    }

    /// Chooses what to read of `items`: all, none, or a random `pct`% (rounded up, so a
    /// subset of a non-empty list reads at least one).
    fn choose<T>(self, items: &mut Vec<T>) {
        match self {
            ReadData::None => items.clear(),
            ReadData::All => {}
            ReadData::Subset(pct) => {
                use rand::seq::SliceRandom;
                let n = ((items.len() as f64) * pct.clamp(0.0, 100.0) / 100.0).ceil() as usize;
                items.shuffle(&mut rand::rng());
                items.truncate(n);
            }
        }
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// How much data to read and verify.
    pub read_data: ReadData,
    /// Threads for reading packs.
    pub threads: usize,
    /// Do not write damage records.
    pub no_record: bool,
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The repository file concerned (`data/ab/ab12…`, `index/…`, `snapshots/…`).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// What `check` found (`--json` schema: docs/json.md).
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Index files read.
    pub index_files: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Trees walked.
    pub trees: usize,
    /// Packs whose bytes were read.
    pub packs_read: usize,
    /// Bytes read from packs.
    pub read_bytes: u64,
    /// Packs that reading data chooses from (indexed and present), and their bytes: with
    /// `--read-data` all of them are read, with a subset `packs_read` of them.
    pub data_packs: usize,
    /// Bytes of the `data_packs`.
    pub data_bytes: u64,
    /// The percentage of packs (and WAL objects) read when reading a random subset; `None`
    /// when all or nothing was read.
    pub read_data_subset: Option<f64>,
    /// WAL objects in the repository (all sources).
    pub wal_objects: usize,
    /// WAL objects read and verified (with --read-data, or a subset).
    pub wal_objects_read: usize,
    /// Damage: the repository cannot restore everything it promises.
    pub errors: Vec<Problem>,
    /// Harmless findings (unindexed packs left by interrupted runs, …).
    pub warnings: Vec<Problem>,
    /// Packs found damaged or missing (recorded in `damaged/`).
    pub damaged_packs: Vec<PackId>,
}

impl CheckReport {
    /// Whether no damage was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
///
/// # Errors
/// Only operational failures (storage unreachable); damage is reported in the report.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut damaged: HashSet<PackId> = HashSet::new();

    // Snapshots.
    let (snaps, bad) = repo.snapshots()?;
    for e in bad {
        report.errors.push(problem_of(&e));
    }
    report.snapshots = snaps.len();

    // Index.
    let (index, bad) = repo.load_index_with(&HashSet::new())?;
    for e in bad {
        report.errors.push(problem_of(&e));
    }
    report.index_files = index.files().len();
    report.blobs = index.len();
    let indexed: HashMap<PackId, u64> = index.packs().collect();
    report.packs = indexed.len();

    // Packs on storage against the index.
    let listed: HashMap<PackId, u64> = repo.list_packs()?;
    // Packs condemned by prune may disappear while we look: a running sweep deletes them
    // after rewriting the index. Their absence is not damage.
    let condemned: HashSet<PackId> = crate::prune::condemned_records(repo)?
        .into_iter()
        .flat_map(|(_, c)| c.packs)
        .collect();
    let mut missing: Vec<_> = indexed
        .iter()
        .filter(|(p, _)| !listed.contains_key(p))
        .collect();
    missing.sort();
    for (p, _) in missing {
        if condemned.contains(p) {
            report.warnings.push(Problem {
                file: paths::pack(p),
                message: "condemned by prune and being deleted".into(),
            });
            continue;
        }
        report.errors.push(Problem {
            file: paths::pack(p),
            message: "missing: the index names this pack but it does not exist".into(),
        });
        damaged.insert(*p);
    }
    let mut sized: Vec<_> = indexed
        .iter()
        .filter_map(|(p, s)| listed.get(p).filter(|l| *l != s).map(|l| (*p, *s, *l)))
        .collect();
    sized.sort();
    for (p, want, got) in sized {
        report.errors.push(Problem {
            file: paths::pack(&p),
            message: format!("size is {got} bytes, the index says {want}: truncated or altered"),
        });
        damaged.insert(p);
    }
    let mut orphans: Vec<_> = listed.keys().filter(|p| !indexed.contains_key(p)).collect();
    orphans.sort();
    for p in orphans {
        report.warnings.push(Problem {
            file: paths::pack(p),
            message: "not in any index: left by an interrupted or running backup; prune removes it"
                .into(),
        });
    }

    // Trees of every snapshot.
    walk_snapshots(repo, &index, &snaps, &mut report, &mut damaged);

    // Data.
    let mut packs: Vec<(PackId, u64)> = listed
        .iter()
        .filter(|(p, _)| indexed.contains_key(p))
        .map(|(p, s)| (*p, *s))
        .collect();
    packs.sort();
    report.data_packs = packs.len();
    report.data_bytes = packs.iter().map(|(_, s)| s).sum();
    if let ReadData::Subset(pct) = opts.read_data {
        report.read_data_subset = Some(pct);
    }
    opts.read_data.choose(&mut packs);
    if !packs.is_empty() {
        let by_pack = entries_by_pack(&index);
        // Each thread reuses one pack buffer and one plaintext buffer: fresh multi-MiB
        // buffers cost an mmap, a page fault per 4 KiB and an munmap each (ADR 0007).
        let results = par_map_init(
            &packs,
            opts.threads.max(1),
            || (Vec::new(), Vec::new()),
            |(pack_buf, plain), (p, size)| {
                read_pack(
                    repo,
                    p,
                    *size,
                    by_pack.get(p).map(Vec::as_slice).unwrap_or(&[]),
                    pack_buf,
                    plain,
                )
            },
        );
        for ((p, size), res) in packs.iter().zip(results) {
            report.packs_read += 1;
            report.read_bytes += size;
            if condemned.contains(p) && repo.storage().stat(&paths::pack(p))?.is_none() {
                report.warnings.push(Problem {
                    file: paths::pack(p),
                    message: "condemned by prune and deleted while being read".into(),
                });
                continue;
            }
            if let Err(problems) = res {
                damaged.insert(*p);
                report.errors.extend(problems);
            }
        }
    }

    // WAL objects: listed always; read, authenticated and hashed with --read-data.
    check_wal(repo, opts, &mut report)?;

    let mut damaged: Vec<PackId> = damaged.into_iter().collect();
    damaged.sort();
    if !opts.no_record {
        for p in &damaged {
            if let Err(e) = repo
                .storage()
                .put(&paths::damaged(p), b"found damaged by check\n".to_vec())
            {
                report.warnings.push(Problem {
                    file: paths::damaged(p),
                    message: format!("could not record damage: {e}"),
                });
            }
        }
    }
    report.damaged_packs = damaged;
    Ok(report)
}

fn check_wal(repo: &Repository, opts: &CheckOptions, report: &mut CheckReport) -> Result<()> {
    let mut objects: Vec<(String, String)> = Vec::new();
    for source in repo.wal_sources()? {
        for e in repo.wal_list(&source)? {
            objects.push((source.clone(), e.name));
        }
    }
    objects.sort();
    report.wal_objects = objects.len();
    opts.read_data.choose(&mut objects);
    let results = par_map_init(
        &objects,
        opts.threads.max(1),
        Vec::new,
        |buf: &mut Vec<u8>, (source, name)| -> std::result::Result<(), Problem> {
            let path = crate::wal::wal_path(source, name);
            match repo.storage().get_into(&path, buf) {
                Ok(()) => {}
                // Retention may delete WAL while we look.
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => {
                    return Err(Problem {
                        file: path,
                        message: format!("unreadable: {e}"),
                    })
                }
            }
            repo.wal_decode(source, name, buf, 1)
                .map(|_| ())
                .map_err(|e| problem_of(&e))
        },
    );
    for r in results {
        report.wal_objects_read += 1;
        if let Err(p) = r {
            report.errors.push(p);
        }
    }
    Ok(())
}

fn problem_of(e: &Error) -> Problem {
    match e {
        Error::Damaged { file, reason } => Problem {
            file: file.clone(),
            message: reason.clone(),
        },
        Error::PackMissing { pack } => Problem {
            file: paths::pack(pack),
            message: "missing".into(),
        },
        other => Problem {
            file: String::new(),
            message: other.to_string(),
        },
    }
}

fn walk_snapshots(
    repo: &Repository,
    index: &Index,
    snaps: &[(SnapshotId, crate::format::Snapshot)],
    report: &mut CheckReport,
    damaged: &mut HashSet<PackId>,
) {
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut missing_data: HashSet<BlobId> = HashSet::new();
    for (sid, snap) in snaps {
        let mut stack = vec![(snap.tree, String::new())];
        while let Some((tid, path)) = stack.pop() {
            if !seen.insert(tid) {
                continue;
            }
            report.trees += 1;
            let tree = match repo.read_tree(index, &tid) {
                Ok(t) => t,
                Err(e) => {
                    let mut p = problem_of(&e);
                    if p.file.is_empty() {
                        p.file = format!("snapshots/{sid}");
                    }
                    p.message =
                        format!("snapshot {} directory /{path}: {}", sid.short(), p.message);
                    if let Some(loc) = index.get(&tid) {
                        damaged.insert(loc.pack);
                    }
                    report.errors.push(p);
                    continue;
                }
            };
            for n in &tree.nodes {
                let child = if path.is_empty() {
                    n.display_name()
                } else {
                    format!("{path}/{}", n.display_name())
                };
                match (&n.kind, n.subtree) {
                    (NodeKind::Dir, Some(sub)) => stack.push((sub, child)),
                    (NodeKind::File, _) => {
                        for b in &n.content {
                            if index.get(b).is_none() && missing_data.insert(*b) {
                                report.errors.push(Problem {
                                    file: format!("snapshots/{sid}"),
                                    message: format!(
                                        "file /{child}: data blob {} is in no index",
                                        b.short()
                                    ),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Blob id, kind, offset, sealed length, plaintext length.
type Expected = (BlobId, BlobKind, u32, u32, u32);

fn entries_by_pack(index: &Index) -> HashMap<PackId, Vec<Expected>> {
    let mut m: HashMap<PackId, Vec<_>> = HashMap::new();
    for (id, loc) in index.blobs() {
        m.entry(loc.pack)
            .or_default()
            .push((id, loc.kind, loc.offset, loc.length, loc.raw_len));
    }
    m
}

/// Reads one pack whole and verifies its hash, header and every blob the index places in it.
fn read_pack(
    repo: &Repository,
    pack: &PackId,
    size: u64,
    expected: &[Expected],
    bytes: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> std::result::Result<(), Vec<Problem>> {
    let path = paths::pack(pack);
    let err = |m: String| {
        vec![Problem {
            file: path.clone(),
            message: m,
        }]
    };
    match repo.storage().get_into(&path, bytes) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Err(err("missing".into())),
        Err(e) => return Err(err(format!("unreadable: {e}"))),
    }
    let mut problems = Vec::new();
    if bytes.len() as u64 != size {
        problems.push(Problem {
            file: path.clone(),
            message: format!("has {} bytes, expected {size}", bytes.len()),
        });
    }
    if content_id(bytes) != pack.0 {
        problems.push(Problem {
            file: path.clone(),
            message: "contents do not match the file name (BLAKE3): bytes were changed".into(),
        });
    }
    // Header.
    let header_ok = (|| -> Result<()> {
        let n = bytes.len() as u64;
        let tail = bytes
            .get(bytes.len().saturating_sub(4)..)
            .ok_or_else(|| Error::damaged(&path, "too short"))?;
        let (start, len) = crate::format::pack_header_range(n, tail)
            .map_err(|e| Error::damaged(&path, e.to_string()))?;
        let sealed = &bytes[start as usize..(start + len) as usize];
        let header = repo.decode_pack_header(&path, sealed, start)?;
        let in_header: HashSet<(BlobId, u32, u32)> =
            header.iter().map(|e| (e.id, e.offset, e.length)).collect();
        for (id, _, off, len, _) in expected {
            if !in_header.contains(&(*id, *off, *len)) {
                return Err(Error::damaged(
                    &path,
                    format!(
                        "the index places blob {} here but the header does not",
                        id.short()
                    ),
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = header_ok {
        problems.push(problem_of(&e));
    }
    // Blobs, opened in place (the pack's hash and header were checked above). Blobs that
    // overlap are opened from a copy: the first one opened in place would spoil the other.
    let mut bad_blobs = 0usize;
    let mut spans: Vec<(usize, usize)> = expected
        .iter()
        .map(|(_, _, off, len, _)| (*off as usize, *off as usize + *len as usize))
        .collect();
    spans.sort_unstable();
    let overlapping = spans.windows(2).any(|w| w[1].0 < w[0].1);
    let mut copy = Vec::new();
    for (id, kind, off, len, raw_len) in expected {
        let (s, e) = (*off as usize, *off as usize + *len as usize);
        let Some(slice) = bytes.get_mut(s..e) else {
            bad_blobs += 1;
            continue;
        };
        let sealed: &mut [u8] = if overlapping {
            copy.clear();
            copy.extend_from_slice(slice);
            &mut copy
        } else {
            slice
        };
        if repo
            .open_blob_to(&path, *kind, id, *raw_len, sealed, plain)
            .is_err()
        {
            bad_blobs += 1;
        }
    }
    if bad_blobs > 0 {
        problems.push(Problem {
            file: path.clone(),
            message: format!(
                "{bad_blobs} of {} blobs fail authentication or do not match their ids",
                expected.len()
            ),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
