//! `pg stream`: WAL received over the replication protocol (with a replication slot, as
//! `pg_receivewal` does) and made durable in the repository within a fraction of a second,
//! so that losing the primary and its disk loses about that much of the shop's commits —
//! not a whole 16 MiB segment or `archive_timeout`.
//!
//! Lives here: [`stream`], its options and status, choosing where to resume, following
//! timeline switches. Never here: the protocol itself (`replication`), or archiving whole
//! segments from `archive_command` (`archive`).
//!
//! # What goes into the repository
//! Every `flush_interval` (and at once in `synchronous` mode) the bytes received since the
//! last flush become a *piece* object `SEGMENT.stream.SSSSSSSS-EEEEEEEE` (bytes `[S, E)` of
//! that segment). When a segment is complete it is stored whole under its normal name —
//! byte-identical to what `archive_command` would push, so the two can run side by side —
//! and its pieces are deleted. Only after a piece or segment is durable is its end reported
//! to the server as flushed, so the slot never lets the server drop WAL that is not safe,
//! and a synchronous standby named `lifeboat_<source>` really holds every acknowledged
//! commit.
//!
//! # Crash safety
//! Every object is created whole or not at all (`lifeboat_repo::wal`). A killed streamer
//! leaves pieces; the next run resumes at the start of the segment it was in (the slot kept
//! that WAL on the server) and completes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use lifeboat_repo::Repository;
use lifeboat_types::Lsn;

use crate::catalog::{base_backups, StreamPiece, WalCatalog};
use crate::error::{Error, Result};
use crate::replication::{ReplicationConn, StreamEvent, WalStream};
use crate::walname::{Segment, SegmentSize, TimelineHistory};

/// How to stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The source name.
    pub source: String,
    /// libpq connection string of the primary (`replication` is added by the client).
    pub dsn: String,
    /// Replication slot (default `lifeboat_<source>`); created when missing.
    pub slot: Option<String>,
    /// Stream without a slot (the server may then remove WAL before it is received).
    pub no_slot: bool,
    /// How often received WAL is made durable in the repository.
    pub flush_interval: Duration,
    /// Make every received batch durable at once and report it, for use as a synchronous
    /// standby (`synchronous_standby_names = 'lifeboat_<source>'`).
    pub synchronous: bool,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Set to stop: the streamer flushes what it holds and returns.
    pub stop: Arc<AtomicBool>,
}

impl StreamOptions {
    /// Options with the defaults: a slot named after the source, 200 ms flushes.
    pub fn new(source: &str, dsn: &str) -> Self {
        StreamOptions {
            source: source.to_string(),
            dsn: dsn.to_string(),
            slot: None,
            no_slot: false,
            flush_interval: Duration::from_millis(200),
            synchronous: false,
            max_backoff: Duration::from_secs(10),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The slot name (and the application name the server sees).
    pub fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| default_slot(&self.source))
    }
}

/// `lifeboat_<source>` with characters a slot name cannot hold replaced by `_`.
pub fn default_slot(source: &str) -> String {
    let mut s = String::from("lifeboat_");
    for c in source.chars() {
        s.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    s.truncate(63);
    s
}

/// What the streamer reports as it goes (for logs, `--json` lines and tests).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamStatus {
    /// Connected and streaming.
    Streaming {
        /// The server (host:port).
        server: String,
        /// The timeline streamed.
        timeline: u32,
        /// Where streaming started.
        start: Lsn,
    },
    /// WAL up to `lsn` is durable in the repository.
    Flushed {
        /// The durable end.
        lsn: Lsn,
    },
    /// A segment was stored whole.
    Segment {
        /// Its name.
        name: String,
    },
    /// The server switched timelines.
    Timeline {
        /// The new timeline.
        timeline: u32,
        /// Where it starts.
        start: Lsn,
    },
    /// The connection failed; retrying after `retry_in_seconds`.
    Disconnected {
        /// Why.
        error: String,
        /// Pause before the next attempt, in seconds.
        retry_in_seconds: f64,
    },
    /// WAL was lost before it could be received (the server removed it): a gap.
    Gap {
        /// Where the repository's WAL ends.
        from: Lsn,
        /// Where streaming resumed.
        to: Lsn,
    },
}

/// Errors that end streaming instead of a reconnect: they need a person.
fn is_fatal(e: &Error) -> bool {
    match e {
        Error::Replication(r) => !r.is_transient() && r.sqlstate().is_none(),
        Error::Invalid(_) => true,
        Error::Repo(r) => r.is_usage() || matches!(r, lifeboat_repo::Error::WalConflict { .. }),
        _ => false,
    }
}

/// Streams WAL of the cluster at `opts.dsn` into the repository until `opts.stop` is set.
/// Connection failures are retried with backoff (reported as
/// [`StreamStatus::Disconnected`]); timeline switches are followed.
///
/// # Errors
/// Problems a retry cannot fix: a server of another cluster than the source's base backups,
/// a server on an older timeline than the repository's WAL, bad credentials, conflicting
/// WAL already in the repository.
pub fn stream(
    repo: &Repository,
    opts: &StreamOptions,
    status: &mut dyn FnMut(StreamStatus),
) -> Result<()> {
    lifeboat_repo::wal::validate_source(&opts.source)?;
    let mut backoff = Duration::from_millis(100);
    while !opts.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match stream_once(repo, opts, status) {
            Ok(()) => return Ok(()),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                status(StreamStatus::Disconnected {
                    error: e.to_string(),
                    retry_in_seconds: backoff.as_secs_f64(),
                });
                tracing::warn!("streaming stopped: {e}; reconnecting in {backoff:?}");
                let until = Instant::now() + backoff;
                while Instant::now() < until && !opts.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
    Ok(())
}

/// Parses `SHOW wal_segment_size` (`16MB`).
fn parse_segment_size(text: &str) -> Option<SegmentSize> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    SegmentSize::new(n.checked_mul(mult)?)
}

/// One connection's worth of streaming.
fn stream_once(
    repo: &Repository,
    opts: &StreamOptions,
    status: &mut dyn FnMut(StreamStatus),
) -> Result<()> {
    let slot = opts.slot_name();
    let mut conn = ReplicationConn::connect(&opts.dsn, &slot, Duration::from_secs(30))?;
    let server = conn.target().to_string();
    let info = conn.identify_system()?;
    let size = parse_segment_size(&conn.show("wal_segment_size")?).ok_or_else(|| {
        Error::Invalid(format!("{server}: wal_segment_size is not a segment size"))
    })?;
    // Never mix clusters in one source.
    let (snaps, _) = repo.snapshots()?;
    if let Some(b) = base_backups(&snaps, &opts.source).last() {
        if b.info.system_id != info.system_id {
            return Err(Error::Invalid(format!(
                "{server} is cluster {} but the base backups of source {:?} are of cluster {}; \
                 stream it under another --source",
                info.system_id, opts.source, b.info.system_id
            )));
        }
    }
    let slot_info = if opts.no_slot {
        None
    } else {
        conn.create_physical_slot(&slot)?;
        conn.read_slot(&slot)?
    };
    // History of the server's timeline: needed to follow it, and by restores.
    let history = if info.timeline > 1 {
        let (name, content) = conn.timeline_history(info.timeline)?;
        repo.wal_put(&opts.source, &name, &content, 1)?;
        TimelineHistory::parse(&String::from_utf8_lossy(&content)).map_err(|e| {
            Error::Invalid(format!("{server}: unreadable timeline history {name}: {e}"))
        })?
    } else {
        TimelineHistory::default()
    };
    let catalog = WalCatalog::load(repo, &opts.source, size)?;
    let (timeline, start) =
        plan_start(&catalog, &info, &history, slot_info.as_ref(), size, &server)?;
    let mut receiver = Receiver {
        repo,
        opts,
        size,
        catalog,
        segment: Segment::containing(timeline, start, size),
        buf: Vec::with_capacity(size.bytes() as usize),
        pos: start,
        flushed: 0,
        pieces: Vec::new(),
        last_flush: Instant::now(),
        unreported: false,
    };
    receiver.enter(receiver.segment);
    let slot_ref = (!opts.no_slot).then_some(slot.as_str());
    let mut stream = match conn.start_physical(slot_ref, start, timeline) {
        Ok(s) => s,
        Err(e) if e.sqlstate() == Some("58P01") => {
            // The WAL we need is gone from the server: resume where the slot is, and say so.
            let to = slot_info
                .as_ref()
                .and_then(|s| s.restart_lsn)
                .unwrap_or(info.xlogpos);
            status(StreamStatus::Gap { from: start, to });
            return Err(Error::Replication(e));
        }
        Err(e) => return Err(e.into()),
    };
    status(StreamStatus::Streaming {
        server: server.clone(),
        timeline,
        start,
    });
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            receiver.flush(&mut stream, status)?;
            return Ok(());
        }
        let wait = if receiver.unflushed() && !opts.synchronous {
            opts.flush_interval
                .saturating_sub(receiver.last_flush.elapsed())
                .max(Duration::from_millis(1))
        } else if opts.synchronous && receiver.unflushed() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(500)
        };
        let event = match stream.next(wait) {
            Ok(ev) => ev,
            Err(e) => {
                // The server sends only WAL it has flushed itself: what arrived before the
                // connection broke is real, and may be all that is left of a lost primary.
                receiver.persist(status)?;
                return Err(e.into());
            }
        };
        match event {
            StreamEvent::Data { start, data } => {
                receiver.take(start, &data, &mut stream, status)?
            }
            StreamEvent::Keepalive {
                reply_requested, ..
            } => {
                if reply_requested {
                    receiver.report(&mut stream)?;
                }
            }
            StreamEvent::Idle => {
                if opts.synchronous && receiver.unflushed() {
                    receiver.flush(&mut stream, status)?;
                }
            }
            StreamEvent::TimelineEnded {
                next_timeline,
                next_start,
            } => {
                receiver.flush(&mut stream, status)?;
                let mut conn = stream.finish()?;
                let (name, content) = conn.timeline_history(next_timeline)?;
                repo.wal_put(&opts.source, &name, &content, 1)?;
                // Like pg_receivewal: the new timeline from the start of the segment that
                // holds the switch (its first segment repeats the old timeline's bytes up
                // to there), so that segment can be stored whole too.
                let from = receiver.switch_timeline(next_timeline, next_start);
                status(StreamStatus::Timeline {
                    timeline: next_timeline,
                    start: next_start,
                });
                stream = conn.start_physical(slot_ref, from, next_timeline)?;
            }
        }
        // In synchronous mode commits wait for our flush: flush as soon as the socket is
        // drained (the Idle arm above), and at least every 10 ms under a continuous stream.
        let every = if opts.synchronous {
            Duration::from_millis(10)
        } else {
            opts.flush_interval
        };
        if receiver.unflushed() && receiver.last_flush.elapsed() >= every {
            receiver.flush(&mut stream, status)?;
        }
    }
}

/// Where to (re)start: the start of the segment where the repository's WAL of the server's
/// history ends, on the timeline that segment belongs to.
fn plan_start(
    catalog: &WalCatalog,
    info: &crate::replication::SystemInfo,
    history: &TimelineHistory,
    slot: Option<&crate::replication::SlotInfo>,
    size: SegmentSize,
    server: &str,
) -> Result<(u32, Lsn)> {
    let seg_start = |l: Lsn| Segment::containing(1, l, size).start(size);
    // The end of the repository's WAL per timeline.
    let mut ends: Vec<(u32, Lsn)> = Vec::new();
    for s in &catalog.segments {
        ends.push((s.timeline, s.end(size)));
    }
    for s in catalog.pieces.keys() {
        let to = catalog.streamed_to(s);
        if to > 0 {
            ends.push((s.timeline, Lsn(s.start(size).0 + to)));
        }
    }
    let newest = ends.iter().map(|(t, _)| *t).max();
    let Some(tli_r) = newest else {
        // Nothing yet: from where the slot keeps WAL, else from now.
        let from = slot.and_then(|s| s.restart_lsn).unwrap_or(info.xlogpos);
        let tli = slot.and_then(|s| s.timeline).unwrap_or(info.timeline);
        return Ok((tli, seg_start(from)));
    };
    let end_r = ends
        .iter()
        .filter(|(t, _)| *t == tli_r)
        .map(|(_, l)| *l)
        .max()
        .unwrap_or_default();
    if tli_r > info.timeline {
        return Err(Error::Invalid(format!(
            "the repository already holds WAL of timeline {tli_r} for this source but {server} is \
             on timeline {}: is it an old primary? stream from the current primary",
            info.timeline
        )));
    }
    if tli_r == info.timeline {
        return Ok((tli_r, seg_start(end_r)));
    }
    match history.end_of(tli_r) {
        Some(switch) if end_r <= switch => Ok((tli_r, seg_start(end_r))),
        Some(switch) => {
            // The repository has timeline tli_r beyond where the server's history left it
            // (the old primary went on): continue on the timeline that followed tli_r.
            let next = history
                .switches
                .iter()
                .position(|s| s.parent == tli_r)
                .and_then(|i| history.switches.get(i + 1).map(|s| s.parent))
                .unwrap_or(info.timeline);
            Ok((next, seg_start(switch)))
        }
        None => Ok((info.timeline, seg_start(info.xlogpos))),
    }
}

/// The segment being received and what of it is durable.
struct Receiver<'a> {
    repo: &'a Repository,
    opts: &'a StreamOptions,
    size: SegmentSize,
    catalog: WalCatalog,
    /// The segment being filled.
    segment: Segment,
    /// Its bytes from offset 0 up to `pos`.
    buf: Vec<u8>,
    /// The next WAL position expected.
    pos: Lsn,
    /// Offset in the segment up to which the repository holds its bytes.
    flushed: usize,
    /// Piece objects of this segment (to delete when it is stored whole).
    pieces: Vec<String>,
    last_flush: Instant,
    /// Something became durable that the server has not been told about.
    unreported: bool,
}

impl Receiver<'_> {
    fn offset(&self) -> usize {
        self.buf.len()
    }

    fn unflushed(&self) -> bool {
        self.offset() > self.flushed
    }

    fn durable_lsn(&self) -> Lsn {
        Lsn(self.segment.start(self.size).0 + self.flushed.min(self.offset()) as u64)
    }

    fn take(
        &mut self,
        start: Lsn,
        mut data: &[u8],
        stream: &mut WalStream,
        status: &mut dyn FnMut(StreamStatus),
    ) -> Result<()> {
        if start != self.pos {
            return Err(Error::Invalid(format!(
                "the server sent WAL at {start} where {} was expected",
                self.pos
            )));
        }
        let seg_bytes = self.size.bytes() as usize;
        while !data.is_empty() {
            let room = seg_bytes - self.offset();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.pos = Lsn(self.pos.0 + n as u64);
            data = &data[n..];
            if self.offset() == seg_bytes {
                self.complete(stream, status)?;
            }
        }
        Ok(())
    }

    /// Stores the full segment, deletes its pieces, moves to the next segment.
    fn complete(
        &mut self,
        stream: &mut WalStream,
        status: &mut dyn FnMut(StreamStatus),
    ) -> Result<()> {
        let name = self.segment.name(self.size);
        self.repo.wal_put(&self.opts.source, &name, &self.buf, 2)?;
        for p in self.pieces.drain(..) {
            if let Err(e) = self.repo.wal_delete(&self.opts.source, &p) {
                tracing::warn!("could not delete streamed piece {p}: {e}");
            }
        }
        self.flushed = self.offset();
        status(StreamStatus::Segment { name });
        self.unreported = true;
        self.report(stream)?;
        self.enter(self.segment.next());
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Starts receiving `segment` from its beginning. What of it the repository already
    /// holds (a previous run's pieces) is not written again, and its pieces go once the
    /// segment is stored whole.
    fn enter(&mut self, segment: Segment) {
        self.segment = segment;
        self.buf.clear();
        self.pos = segment.start(self.size);
        self.flushed = self.catalog.streamed_to(&segment) as usize;
        self.pieces = self
            .catalog
            .pieces
            .get(&segment)
            .map(|v| v.iter().map(|p| p.name(self.size)).collect())
            .unwrap_or_default();
    }

    /// Makes the bytes received since the last flush durable as a piece, then reports.
    fn flush(
        &mut self,
        stream: &mut WalStream,
        status: &mut dyn FnMut(StreamStatus),
    ) -> Result<()> {
        self.persist(status)?;
        if self.unreported {
            self.report(stream)?;
        }
        Ok(())
    }

    /// Makes the bytes received since the last flush durable as a piece.
    fn persist(&mut self, status: &mut dyn FnMut(StreamStatus)) -> Result<()> {
        self.last_flush = Instant::now();
        if self.unflushed() {
            let piece = StreamPiece {
                segment: self.segment,
                start: self.flushed as u32,
                end: self.offset() as u32,
            };
            let name = piece.name(self.size);
            self.repo
                .wal_put(&self.opts.source, &name, &self.buf[self.flushed..], 1)?;
            self.pieces.push(name);
            self.flushed = self.offset();
            self.unreported = true;
            status(StreamStatus::Flushed {
                lsn: self.durable_lsn(),
            });
        }
        Ok(())
    }

    /// Tells the server what is durable (write = received, flush = apply = durable).
    fn report(&mut self, stream: &mut WalStream) -> Result<()> {
        let durable = self.durable_lsn();
        stream.send_status(self.pos, durable, durable, false)?;
        self.unreported = false;
        Ok(())
    }

    /// Continues on `timeline` at the start of the segment holding `start`; returns that
    /// position.
    fn switch_timeline(&mut self, timeline: u32, start: Lsn) -> Lsn {
        self.enter(Segment::containing(timeline, start, self.size));
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_parse_from_show() {
        assert_eq!(parse_segment_size("16MB"), Some(SegmentSize::DEFAULT));
        assert_eq!(parse_segment_size("1GB").map(|s| s.bytes()), Some(1 << 30));
        assert_eq!(parse_segment_size("3MB"), None);
        assert_eq!(parse_segment_size("lots"), None);
        // A server's answer that overflows is refused, not a panic (issue 9 sibling).
        assert_eq!(parse_segment_size("99999999999999999GB"), None);
        assert_eq!(parse_segment_size("16é"), None);
    }

    #[test]
    fn slot_names_are_safe() {
        assert_eq!(default_slot("Orders-DB.eu"), "lifeboat_orders_db_eu");
    }
}
