//! WAL file names: segments, timeline history files, backup history files and partial
//! segments, and how segment names map to WAL positions.
//!
//! Lives here: [`WalFile`], [`Segment`], [`SegmentSize`], [`TimelineHistory`]. Never here:
//! I/O of any kind.
//!
//! A segment name is 24 hex digits `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment
//! number split into "log" and "seg" parts, with `0x1_0000_0000 / segment size` segments per
//! log. The same name means different positions for different segment sizes, so every
//! conversion takes the cluster's [`SegmentSize`].

use std::fmt;

use lifeboat_types::Lsn;
use serde::{Deserialize, Serialize};

/// A cluster's WAL segment size (`wal_segment_size`): a power of two from 1 MiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// A segment size, when `bytes` is one PostgreSQL allows.
    pub fn new(bytes: u64) -> Option<Self> {
        (bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes))
            .then_some(SegmentSize(bytes as u32))
    }

    /// In bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per "log" (the middle 8 hex digits of a name).
    fn per_log(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One WAL segment: a timeline and a segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline.
    pub timeline: u32,
    /// The segment number: the segment covers `[number × size, (number + 1) × size)`.
    pub number: u64,
}

impl Segment {
    /// The segment of `timeline` that holds `lsn`.
    pub fn containing(timeline: u32, lsn: Lsn, size: SegmentSize) -> Self {
        Segment {
            timeline,
            number: lsn.0 / size.bytes(),
        }
    }

    /// The segment that holds the byte just before `lsn`: where WAL ending at `lsn` ends.
    pub fn ending_at(timeline: u32, lsn: Lsn, size: SegmentSize) -> Self {
        Segment {
            timeline,
            number: lsn.0.saturating_sub(1) / size.bytes(),
        }
    }

    /// The first position in the segment.
    pub fn start(&self, size: SegmentSize) -> Lsn {
        Lsn(self.number * size.bytes())
    }

    /// The position just after the segment.
    pub fn end(&self, size: SegmentSize) -> Lsn {
        Lsn((self.number + 1) * size.bytes())
    }

    /// The file name (`000000010000000000000003`).
    pub fn name(&self, size: SegmentSize) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / size.per_log(),
            self.number % size.per_log()
        )
    }

    /// Parses a 24-hex-digit segment name.
    pub fn parse(name: &str, size: SegmentSize) -> Option<Self> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let part = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).ok();
        let (tli, log, seg) = (part(0..8)?, part(8..16)?, part(16..24)?);
        if tli == 0 || seg >= size.per_log() {
            return None;
        }
        Some(Segment {
            timeline: tli as u32,
            number: log * size.per_log() + seg,
        })
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> Self {
        Segment {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }
}

/// What a file in PostgreSQL's WAL archive is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete segment (`000000010000000000000003`).
    Segment(Segment),
    /// The part of a segment written before a timeline switch or by a receiver that stopped
    /// (`000000010000000000000003.partial`).
    Partial(Segment),
    /// A timeline history file (`00000002.history`).
    History(u32),
    /// A backup history file (`000000010000000000000003.00000028.backup`).
    BackupHistory(Segment, u32),
}

impl WalFile {
    /// Recognizes an archive file name; `None` for anything else.
    pub fn parse(name: &str, size: SegmentSize) -> Option<Self> {
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && tli.bytes().all(|b| b.is_ascii_hexdigit()) {
                let t = u32::from_str_radix(tli, 16).ok()?;
                return (t > 0).then_some(WalFile::History(t));
            }
            return None;
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return Segment::parse(seg, size).map(WalFile::Partial);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            if off.len() != 8 || !off.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let off = u32::from_str_radix(off, 16).ok()?;
            return Segment::parse(seg, size).map(|s| WalFile::BackupHistory(s, off));
        }
        Segment::parse(name, size).map(WalFile::Segment)
    }

    /// The file name.
    pub fn name(&self, size: SegmentSize) -> String {
        match self {
            WalFile::Segment(s) => s.name(size),
            WalFile::Partial(s) => format!("{}.partial", s.name(size)),
            WalFile::History(t) => format!("{t:08X}.history"),
            WalFile::BackupHistory(s, off) => format!("{}.{off:08X}.backup", s.name(size)),
        }
    }
}

/// The name of timeline `tli`'s history file.
pub fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// One line of a timeline history file: timeline `parent` ended at `switch` and its child
/// began there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSwitch {
    /// The timeline that ended.
    pub parent: u32,
    /// Where it ended (the first position of the next timeline).
    pub switch: Lsn,
    /// The reason PostgreSQL recorded.
    pub reason: String,
}

/// A timeline history file: how a timeline descends from its ancestors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimelineHistory {
    /// The switches, oldest first.
    pub switches: Vec<TimelineSwitch>,
}

impl TimelineHistory {
    /// Parses the text of `NNNNNNNN.history` (lines `parent<TAB>lsn<TAB>reason`, `#`
    /// comments and blank lines ignored).
    ///
    /// # Errors
    /// A description of the first bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut switches = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.splitn(3, |c: char| c.is_whitespace());
            let (Some(parent), Some(lsn)) = (f.next(), f.next()) else {
                return Err(format!("line {}: expected `timeline  lsn  reason`", i + 1));
            };
            let parent: u32 = parent
                .parse()
                .map_err(|_| format!("line {}: {parent:?} is not a timeline", i + 1))?;
            let switch: Lsn = lsn
                .trim()
                .parse()
                .map_err(|e| format!("line {}: {e}", i + 1))?;
            switches.push(TimelineSwitch {
                parent,
                switch,
                reason: f.next().unwrap_or("").trim().to_string(),
            });
        }
        Ok(TimelineHistory { switches })
    }

    /// The timeline that was current at `lsn`, for a history ending in timeline `latest`:
    /// the first ancestor whose switch point lies after `lsn`, else `latest`.
    pub fn timeline_at(&self, lsn: Lsn, latest: u32) -> u32 {
        self.switches
            .iter()
            .find(|s| lsn < s.switch)
            .map_or(latest, |s| s.parent)
    }

    /// Where timeline `tli` ended, if it is an ancestor in this history.
    pub fn end_of(&self, tli: u32) -> Option<Lsn> {
        self.switches
            .iter()
            .find(|s| s.parent == tli)
            .map(|s| s.switch)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name(SegmentSize::DEFAULT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_for_every_size() {
        let sizes = [1u64 << 20, 16 << 20, 64 << 20, 1 << 30];
        for bytes in sizes {
            let size = SegmentSize::new(bytes).unwrap();
            for n in [0u64, 1, 255, 256, 4095, 1 << 20] {
                let s = Segment {
                    timeline: 3,
                    number: n,
                };
                let name = s.name(size);
                assert_eq!(Segment::parse(&name, size), Some(s), "{name}");
            }
        }
        let d = SegmentSize::DEFAULT;
        // PostgreSQL's own example: LSN 0/3000028 lives in 000000010000000000000003.
        let lsn: Lsn = "0/3000028".parse().unwrap();
        assert_eq!(
            Segment::containing(1, lsn, d).name(d),
            "000000010000000000000003"
        );
        // And 1/0 in the 257th segment: log 1, seg 0.
        assert_eq!(
            Segment::containing(2, Lsn(1 << 32), d).name(d),
            "000000020000000100000000"
        );
        // WAL ending exactly at a boundary ends in the segment before it.
        assert_eq!(Segment::ending_at(1, Lsn(0x300_0000), d).number, 2);
        assert!(SegmentSize::new(3 << 20).is_none());
        assert!(Segment::parse("0000000100000000000001000", d).is_none());
        assert!(
            Segment::parse("000000010000000000000100", d).is_none(),
            "seg 0x100 > 0xFF"
        );
        assert!(
            Segment::parse("000000000000000000000001", d).is_none(),
            "timeline 0"
        );
    }

    #[test]
    fn archive_names_are_recognized() {
        let d = SegmentSize::DEFAULT;
        let seg = Segment {
            timeline: 1,
            number: 3,
        };
        for (name, want) in [
            ("000000010000000000000003", WalFile::Segment(seg)),
            ("000000010000000000000003.partial", WalFile::Partial(seg)),
            ("0000000A.history", WalFile::History(10)),
            (
                "000000010000000000000003.00000028.backup",
                WalFile::BackupHistory(seg, 0x28),
            ),
        ] {
            assert_eq!(WalFile::parse(name, d), Some(want.clone()), "{name}");
            assert_eq!(want.name(d), name);
        }
        for bad in [
            "",
            "00000000.history",
            "xyz",
            "000000010000000000000003.part",
        ] {
            assert_eq!(WalFile::parse(bad, d), None, "{bad}");
        }
    }

    #[test]
    fn history_files_parse_and_answer_which_timeline() {
        let text = "1\t0/3000158\tno recovery target specified\n\n\
                    2\t0/5000000\tbefore 2026-11-30 12:00:00+00\n";
        let h = TimelineHistory::parse(text).unwrap();
        assert_eq!(h.switches.len(), 2);
        assert_eq!(h.timeline_at(Lsn(0x300_0000), 3), 1);
        assert_eq!(h.timeline_at(Lsn(0x300_0158), 3), 2);
        assert_eq!(h.timeline_at(Lsn(0x600_0000), 3), 3);
        assert_eq!(h.end_of(2), Some(Lsn(0x500_0000)));
        assert!(TimelineHistory::parse("x 0/1 r").is_err());
        assert!(TimelineHistory::parse("1 zz r").is_err());
    }
}
