//! Names and small files of PostgreSQL's WAL archive as found in the repository: WAL file
//! names (`WalFile`), streamed piece names, and timeline history files (read back from
//! `wal/<source>/NNNNNNNN.history` to follow timelines). Parsing must never panic, and a
//! recognised name must print back as itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_postgres::catalog::StreamPiece;
use lifeboat_postgres::walname::{SegmentSize, TimelineHistory, WalFile};
use lifeboat_types::Lsn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for bytes in [1u64 << 20, 16 << 20, 1 << 30] {
        let Some(size) = SegmentSize::new(bytes) else {
            continue;
        };
        if let Some(f) = WalFile::parse(text, size) {
            // Names print in PostgreSQL's upper-case hex and read back as the same file.
            assert_eq!(WalFile::parse(&f.name(size), size), Some(f));
        }
        if let Some(p) = StreamPiece::parse(text, size) {
            assert!(p.start < p.end && u64::from(p.end) <= size.bytes());
        }
    }
    if let Ok(h) = TimelineHistory::parse(text) {
        let latest = h.switches.last().map_or(1, |s| s.parent.saturating_add(1));
        let _ = h.timeline_at(Lsn(u64::MAX), latest);
        for s in &h.switches {
            let _ = h.end_of(s.parent);
        }
    }
});
