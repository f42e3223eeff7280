//! What the repository holds for one database source: base backups, WAL files per
//! timeline, the ranges they cover and the gaps between them.
//!
//! Lives here: [`WalCatalog`] (built from a listing of `wal/<source>/`), [`BaseBackup`]
//! (from snapshots), [`Listing`] (what `pg backups` prints). Never here: reading WAL
//! contents, or deleting anything.
//!
//! Streamed WAL (`pg stream`) arrives in pieces before a segment is complete: objects named
//! `SEGMENT.stream.SSSSSSSS-EEEEEEEE` hold the bytes `[S, E)` of that segment. A complete
//! segment object supersedes its pieces.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use lifeboat_repo::format::{PgBackupInfo, Snapshot};
use lifeboat_repo::Repository;
use lifeboat_types::{Lsn, SnapshotId};

use crate::error::Result;
use crate::walname::{Segment, SegmentSize, TimelineHistory, WalFile};

/// A piece of a segment written by `pg stream` before the segment was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamPiece {
    /// The segment.
    pub segment: Segment,
    /// First byte offset inside the segment.
    pub start: u32,
    /// Offset just past the last byte.
    pub end: u32,
}

impl StreamPiece {
    /// The object name (`000000010000000000000003.stream.00000000-00A00000`).
    pub fn name(&self, size: SegmentSize) -> String {
        format!(
            "{}.stream.{:08X}-{:08X}",
            self.segment.name(size),
            self.start,
            self.end
        )
    }

    /// Parses a piece name.
    pub fn parse(name: &str, size: SegmentSize) -> Option<Self> {
        let (seg, range) = name.split_once(".stream.")?;
        let (s, e) = range.split_once('-')?;
        let hex = |t: &str| {
            (t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(t, 16).ok())
                .flatten()
        };
        let (start, end) = (hex(s)?, hex(e)?);
        (start < end && u64::from(end) <= size.bytes()).then_some(StreamPiece {
            segment: Segment::parse(seg, size)?,
            start,
            end,
        })
    }
}

/// The WAL objects of one source, by kind.
#[derive(Debug, Clone, Default)]
pub struct WalCatalog {
    /// The cluster's segment size (names are read with it).
    pub size: SegmentSize,
    /// Complete segments.
    pub segments: BTreeSet<Segment>,
    /// `.partial` segments (archived by a promoted server, or kept by `pg stream`).
    pub partials: BTreeSet<Segment>,
    /// Timelines with a history file.
    pub histories: BTreeSet<u32>,
    /// Streamed pieces of incomplete segments.
    pub pieces: BTreeMap<Segment, Vec<StreamPiece>>,
    /// Objects whose names mean nothing here (listed by `check`, kept by retention).
    pub unknown: Vec<String>,
    /// Total size of the objects in the repository.
    pub stored_bytes: u64,
}

impl WalCatalog {
    /// Lists `wal/<source>/`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn load(repo: &Repository, source: &str, size: SegmentSize) -> Result<Self> {
        let mut c = WalCatalog {
            size,
            ..WalCatalog::default()
        };
        for e in repo.wal_list(source)? {
            c.stored_bytes += e.size;
            if let Some(p) = StreamPiece::parse(&e.name, size) {
                c.pieces.entry(p.segment).or_default().push(p);
                continue;
            }
            match WalFile::parse(&e.name, size) {
                Some(WalFile::Segment(s)) => {
                    c.segments.insert(s);
                }
                Some(WalFile::Partial(s)) => {
                    c.partials.insert(s);
                }
                Some(WalFile::History(t)) => {
                    c.histories.insert(t);
                }
                Some(WalFile::BackupHistory(..)) => {}
                None => c.unknown.push(e.name),
            }
        }
        for v in c.pieces.values_mut() {
            v.sort();
        }
        Ok(c)
    }

    /// How far streamed pieces cover `segment` contiguously from its start (bytes).
    pub fn streamed_to(&self, segment: &Segment) -> u64 {
        let mut covered = 0u64;
        if let Some(pieces) = self.pieces.get(segment) {
            for p in pieces {
                if u64::from(p.start) <= covered {
                    covered = covered.max(u64::from(p.end));
                }
            }
        }
        covered
    }

    /// Whether WAL up to (not including) `upto` in `segment` is available: the complete
    /// segment, or streamed pieces reaching that far.
    pub fn has_through(&self, segment: &Segment, upto: Lsn) -> bool {
        if self.segments.contains(segment) {
            return true;
        }
        let need = upto.0.saturating_sub(segment.start(self.size).0);
        need > 0 && self.streamed_to(segment) >= need
    }

    /// The first segment from `first` to `last` (one timeline) that is missing; the last
    /// one only needs to reach `stop`.
    pub fn first_missing(&self, first: Segment, last: Segment, stop: Lsn) -> Option<Segment> {
        let mut s = first;
        while s.number <= last.number {
            let ok = if s.number == last.number {
                self.has_through(&s, stop)
            } else {
                self.segments.contains(&s)
            };
            if !ok {
                return Some(s);
            }
            s = s.next();
        }
        None
    }

    /// Contiguous runs of WAL per timeline (complete segments; a run may end in streamed
    /// pieces), oldest first.
    pub fn ranges(&self) -> Vec<WalRange> {
        let mut by_tli: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
        for s in &self.segments {
            by_tli
                .entry(s.timeline)
                .or_default()
                .insert(s.number, self.size.bytes());
        }
        for s in self.pieces.keys() {
            if !self.segments.contains(s) {
                let to = self.streamed_to(s);
                if to > 0 {
                    by_tli.entry(s.timeline).or_default().insert(s.number, to);
                }
            }
        }
        let mut out = Vec::new();
        for (tli, segs) in by_tli {
            let mut run: Option<WalRange> = None;
            for (n, covered) in segs {
                let seg = Segment {
                    timeline: tli,
                    number: n,
                };
                let end = Lsn(seg.start(self.size).0 + covered);
                match run.as_mut() {
                    Some(r) if r.end == seg.start(self.size) && r.complete => {
                        r.end = end;
                        r.segments += 1;
                        r.complete = covered == self.size.bytes();
                    }
                    _ => {
                        if let Some(r) = run.take() {
                            out.push(r);
                        }
                        run = Some(WalRange {
                            timeline: tli,
                            start: seg.start(self.size),
                            end,
                            segments: 1,
                            complete: covered == self.size.bytes(),
                            first_segment: seg.name(self.size),
                        });
                    }
                }
            }
            out.extend(run);
        }
        out
    }
}

/// A contiguous run of WAL on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// First position held.
    pub start: Lsn,
    /// Position just past the last byte held.
    pub end: Lsn,
    /// Segments (complete or streamed) in the run.
    pub segments: u64,
    /// Whether the run ends with a complete segment (else with streamed pieces).
    pub complete: bool,
    /// Name of the first segment.
    pub first_segment: String,
}

/// A base backup of a source.
#[derive(Debug, Clone, Serialize)]
pub struct BaseBackup {
    /// The snapshot holding its files.
    pub snapshot_id: SnapshotId,
    /// Snapshot time.
    pub time: String,
    /// Bytes of the data directory.
    pub bytes: u64,
    /// Bytes it added to the repository (sealed, compressed: the summary's `stored_bytes`).
    pub stored_bytes: u64,
    /// The PostgreSQL side.
    #[serde(flatten)]
    pub info: PgBackupInfo,
}

/// The base backups of `source` among `snapshots`, oldest first.
pub fn base_backups(snapshots: &[(SnapshotId, Snapshot)], source: &str) -> Vec<BaseBackup> {
    let mut out: Vec<BaseBackup> = snapshots
        .iter()
        .filter_map(|(id, s)| {
            let pg = s.postgres.as_ref().filter(|p| p.source == source)?;
            Some(BaseBackup {
                snapshot_id: *id,
                time: s.time.clone(),
                bytes: s.summary.bytes,
                stored_bytes: s.summary.stored_bytes,
                info: pg.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.info
            .start_lsn
            .cmp(&b.info.start_lsn)
            .then(a.time.cmp(&b.time))
    });
    out
}

/// A gap: WAL missing between two available positions of one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The timeline.
    pub timeline: u32,
    /// First missing segment.
    pub first_missing: String,
    /// Where the WAL before the gap ends: restores on this timeline reach at most here.
    pub from: Lsn,
    /// Where WAL resumes.
    pub to: Lsn,
}

/// Everything `pg backups` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The source.
    pub source: String,
    /// Base backups, oldest first.
    pub backups: Vec<BaseBackup>,
    /// Available WAL runs.
    pub wal: Vec<WalRange>,
    /// Gaps between runs of the same timeline.
    pub gaps: Vec<Gap>,
    /// Timelines with a history file.
    pub histories: Vec<u32>,
    /// Bytes of WAL objects in the repository.
    pub wal_stored_bytes: u64,
    /// Objects under `wal/<source>/` whose names are not WAL file names.
    pub unknown: Vec<String>,
}

/// Lists what the repository holds for `source`.
///
/// # Errors
/// Storage and repository errors.
pub fn listing(repo: &Repository, source: &str) -> Result<Listing> {
    let (snaps, _) = repo.snapshots()?;
    let backups = base_backups(&snaps, source);
    let size = backups
        .last()
        .and_then(|b| SegmentSize::new(b.info.segment_size))
        .unwrap_or_default();
    let catalog = WalCatalog::load(repo, source, size)?;
    let wal = catalog.ranges();
    let mut gaps = Vec::new();
    for w in wal.windows(2) {
        if w[0].timeline == w[1].timeline {
            gaps.push(Gap {
                timeline: w[0].timeline,
                first_missing: Segment::containing(w[0].timeline, w[0].end, size).name(size),
                from: w[0].end,
                to: w[1].start,
            });
        }
    }
    Ok(Listing {
        source: source.to_string(),
        backups,
        wal,
        gaps,
        histories: catalog.histories.iter().copied().collect(),
        wal_stored_bytes: catalog.stored_bytes,
        unknown: catalog.unknown,
    })
}

/// Reads and parses the history file of `timeline`, when the repository has one.
///
/// # Errors
/// Repository errors other than "not found"; a damaged history file.
pub fn history(repo: &Repository, source: &str, timeline: u32) -> Result<Option<TimelineHistory>> {
    let name = crate::walname::history_name(timeline);
    match repo.wal_get(source, &name, 1) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            TimelineHistory::parse(&text).map(Some).map_err(|e| {
                crate::Error::Repo(lifeboat_repo::Error::damaged(
                    lifeboat_repo::wal::wal_path(source, &name),
                    e,
                ))
            })
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(t: u32, n: u64) -> Segment {
        Segment {
            timeline: t,
            number: n,
        }
    }

    #[test]
    fn ranges_gaps_and_stream_pieces() {
        let size = SegmentSize::DEFAULT;
        let mut c = WalCatalog {
            size,
            ..WalCatalog::default()
        };
        for n in [1, 2, 3, 5, 6] {
            c.segments.insert(seg(1, n));
        }
        // Segment 7 streamed up to 0x300000 in two pieces, with a hole-free overlap.
        for (a, b) in [(0, 0x200000), (0x100000, 0x300000), (0x400000, 0x500000)] {
            c.pieces.entry(seg(1, 7)).or_default().push(StreamPiece {
                segment: seg(1, 7),
                start: a,
                end: b,
            });
        }
        assert_eq!(c.streamed_to(&seg(1, 7)), 0x300000);
        let r = c.ranges();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].start, r[0].end), (Lsn(0x100_0000), Lsn(0x400_0000)));
        assert_eq!(r[1].end, Lsn(0x700_0000 + 0x300000));
        assert!(!r[1].complete);
        assert_eq!(
            c.first_missing(seg(1, 1), seg(1, 7), Lsn(0x700_0100)),
            Some(seg(1, 4))
        );
        assert_eq!(c.first_missing(seg(1, 5), seg(1, 7), Lsn(0x720_0000)), None);
        assert_eq!(
            c.first_missing(seg(1, 5), seg(1, 7), Lsn(0x740_0000)),
            Some(seg(1, 7)),
            "streamed only to 0x300000"
        );
        let p = StreamPiece {
            segment: seg(1, 7),
            start: 0x10,
            end: 0x20,
        };
        assert_eq!(StreamPiece::parse(&p.name(size), size), Some(p));
        assert_eq!(
            StreamPiece::parse("000000010000000000000007.stream.00000020-00000010", size),
            None
        );
    }
}

/// One PostgreSQL source the repository holds anything of (`pg sources`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceSummary {
    /// The source's name (`--source`).
    pub source: String,
    /// Base backups of it.
    pub base_backups: usize,
    /// When its newest base backup ended (RFC 3339), if it has one.
    pub newest_backup: Option<String>,
    /// WAL objects (segments, history files, partial segments) of it.
    pub wal_objects: usize,
}

/// Every source the repository holds base backups or WAL of, sorted by name.
///
/// # Errors
/// Repository errors listing snapshots or WAL.
pub fn sources(repo: &Repository) -> Result<Vec<SourceSummary>> {
    let (snaps, _) = repo.snapshots()?;
    let wal = repo.wal_objects_per_source()?;
    let mut names: BTreeSet<String> = wal.keys().cloned().collect();
    names.extend(
        snaps
            .iter()
            .filter_map(|(_, s)| s.postgres.as_ref().map(|p| p.source.clone())),
    );
    Ok(names
        .into_iter()
        .map(|source| {
            let backups = base_backups(&snaps, &source);
            SourceSummary {
                base_backups: backups.len(),
                newest_backup: backups.last().map(|b| b.info.stop_time.clone()),
                wal_objects: wal.get(&source).copied().unwrap_or(0),
                source,
            }
        })
        .collect())
}

/// Refuses a source the repository holds nothing of, listing those it knows: a mistyped
/// `--source` is a usage error, not an empty answer.
///
/// # Errors
/// [`crate::Error::Invalid`] naming the known sources; repository errors.
pub fn require_source(repo: &Repository, source: &str) -> Result<()> {
    let known = sources(repo)?;
    if known.iter().any(|s| s.source == source) {
        return Ok(());
    }
    let names: Vec<&str> = known.iter().map(|s| s.source.as_str()).collect();
    Err(crate::Error::Invalid(if names.is_empty() {
        format!(
            "the repository holds no PostgreSQL source {source:?} (it holds none yet); take a \
             base backup with `lifeboat pg backup --source {source} --dsn ...`"
        )
    } else {
        format!(
            "the repository holds no PostgreSQL source {source:?}; it holds {} (list them \
             with `lifeboat pg sources`)",
            names.join(", ")
        )
    }))
}
