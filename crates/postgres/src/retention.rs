//! WAL retention: after `forget` removed base backups, the WAL that no kept backup needs.
//!
//! Lives here: [`wal_to_remove`] (pure: a catalog and the kept backups in, names out) and
//! [`remove_wal`]. Never here: choosing which base backups to keep (the snapshot policy in
//! `lifeboat_repo::retention` does, per source).
//!
//! The rule: a base backup needs every WAL file from the segment holding its start position
//! onwards, on its timeline and on every later one. So WAL of segments older than the
//! oldest kept backup's start segment goes — on any timeline — and nothing newer ever does.
//! Timeline history files are always kept (they are tiny and restores need them to choose
//! a timeline). A source without any kept base backup keeps all its WAL: its first backup
//! may be running.

use serde::Serialize;

use lifeboat_repo::Repository;

use crate::catalog::{BaseBackup, StreamPiece};
use crate::error::Result;
use crate::walname::{Segment, SegmentSize, WalFile};

/// What WAL retention removed (or would remove) for one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalRetention {
    /// The source.
    pub source: String,
    /// The oldest segment kept (`None`: no kept base backup, nothing removed).
    pub oldest_kept: Option<String>,
    /// WAL objects removed (or, in a dry run, that a run would remove).
    pub remove: Vec<String>,
    /// Their size in the repository: what removing them frees.
    pub freed_bytes: u64,
    /// WAL objects kept.
    pub kept: usize,
}

/// The WAL objects of `names` that no backup of `kept` needs.
pub fn wal_to_remove(
    names: &[String],
    kept: &[BaseBackup],
    size: SegmentSize,
) -> (Option<Segment>, Vec<String>) {
    let oldest = kept
        .iter()
        .map(|b| Segment::containing(b.info.timeline, b.info.start_lsn, size))
        .min_by_key(|s| s.number);
    let Some(oldest) = oldest else {
        return (None, Vec::new());
    };
    let older = |s: &Segment| s.number < oldest.number;
    let remove = names
        .iter()
        .filter(|n| {
            if let Some(p) = StreamPiece::parse(n, size) {
                return older(&p.segment);
            }
            match WalFile::parse(n, size) {
                Some(WalFile::Segment(s)) | Some(WalFile::Partial(s)) => older(&s),
                Some(WalFile::BackupHistory(s, _)) => older(&s),
                Some(WalFile::History(_)) | None => false,
            }
        })
        .cloned()
        .collect();
    (Some(oldest), remove)
}

/// Removes the WAL of `source` that no backup of `kept` needs (all of them must be of that
/// source); with `dry_run`, only says what would go.
///
/// # Errors
/// Storage errors (objects removed before the error stay removed: all were unneeded).
pub fn remove_wal(
    repo: &Repository,
    source: &str,
    kept: &[BaseBackup],
    dry_run: bool,
) -> Result<WalRetention> {
    let size = kept
        .last()
        .and_then(|b| SegmentSize::new(b.info.segment_size))
        .unwrap_or_default();
    let listed = repo.wal_list(source)?;
    let names: Vec<String> = listed.iter().map(|e| e.name.clone()).collect();
    let (oldest, remove) = wal_to_remove(&names, kept, size);
    let mut out = WalRetention {
        source: source.to_string(),
        oldest_kept: oldest.map(|s| s.name(size)),
        kept: names.len() - remove.len(),
        ..WalRetention::default()
    };
    for name in remove {
        out.freed_bytes += listed.iter().find(|e| e.name == name).map_or(0, |e| e.size);
        if !dry_run {
            repo.wal_delete(source, &name)?;
        }
        out.remove.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_repo::format::PgBackupInfo;
    use lifeboat_types::{Lsn, SnapshotId};

    fn backup(tli: u32, start: u64) -> BaseBackup {
        BaseBackup {
            snapshot_id: SnapshotId([0; 32]),
            time: String::new(),
            bytes: 0,
            stored_bytes: 0,
            info: PgBackupInfo {
                source: "orders".into(),
                system_id: "1".into(),
                server_version: 150000,
                timeline: tli,
                start_lsn: Lsn(start),
                stop_lsn: Lsn(start + 0x100),
                start_time: String::new(),
                stop_time: String::new(),
                segment_size: 16 << 20,
                data_dir: "/d".into(),
                backup_label: String::new(),
                tablespace_map: String::new(),
            },
        }
    }

    #[test]
    fn wal_older_than_the_oldest_kept_backup_goes_and_nothing_newer() {
        let size = SegmentSize::DEFAULT;
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000010000000000000004.partial",
            "000000020000000000000004",
            "000000020000000000000005",
            "000000020000000000000005.stream.00000000-00100000",
            "000000010000000000000001.stream.00000000-00100000",
            "00000002.history",
            "something-else",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Kept: a backup starting in segment 3 of timeline 1, and one on timeline 2.
        let kept = [backup(1, 0x300_0028), backup(2, 0x500_0028)];
        let (oldest, remove) = wal_to_remove(&names, &kept, size);
        assert_eq!(oldest.unwrap().number, 3);
        assert_eq!(
            remove,
            vec![
                "000000010000000000000001".to_string(),
                "000000010000000000000002".to_string(),
                "000000010000000000000002.00000028.backup".to_string(),
                "000000010000000000000001.stream.00000000-00100000".to_string(),
            ]
        );
        // No kept backup: nothing goes.
        assert!(wal_to_remove(&names, &[], size).1.is_empty());
    }
}
