//! The write pipeline: deduplicate, compress and seal blobs on a thread pool, gather them
//! into packs, upload packs, then record them in index files.
//!
//! Lives here: [`BlobWriter`]. Never here: reading sources or building trees (callers do),
//! or writing snapshots (the caller commits after [`BlobWriter::finish`]).
//!
//! # Crash safety
//! A pack is uploaded whole before any index file names it, and index files are written
//! before the caller writes the snapshot that needs them. A process killed at any point
//! leaves packs nobody references (garbage for prune), never a snapshot with missing data.
//!
//! # Memory
//! Bounded channels between stages: at most `2 × threads` blobs waiting to be sealed, one
//! pack being filled and `uploaders` packs being uploaded, whatever the size of the input.
//! Buffers of large blobs are recycled through a small pool (at most [`POOL_KEEP`] of them)
//! instead of being freed: with glibc's 1 MiB mmap threshold (ADR 0007) every fresh large
//! buffer would otherwise cost an mmap, a page fault per 4 KiB and an munmap.
//!
//! # Thread hand-offs
//! Every hand-off between threads can cost a wake-up, and on a small VM wake-ups are
//! expensive (an inter-processor interrupt and a preemption each). Small blobs are therefore
//! sealed by the caller's own thread ([`InlineSealer`]) and reach the packer in batches;
//! only large blobs, where parallelism inside one file matters, go through the seal threads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use lifeboat_types::{BlobId, IndexId, PackId};

use crate::error::{Error, Result};
use crate::format::{aad, paths, to_cbor, BlobKind, IndexFile, IndexPack, PackEntry};
use crate::index::Index;
use crate::repository::Repository;

/// Knobs of the write pipeline.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Threads that compress and seal.
    pub threads: usize,
    /// Threads that upload packs.
    pub uploaders: usize,
    /// Packs per index file.
    pub packs_per_index: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WriterOptions {
            threads: cores,
            uploaders: 2,
            packs_per_index: 64,
        }
    }
}

/// What a writer stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Blobs added.
    pub blobs: u64,
    /// Plaintext bytes of the blobs added.
    pub raw_bytes: u64,
    /// Bytes of pack files uploaded.
    pub stored_bytes: u64,
    /// Pack files uploaded.
    pub packs: u64,
    /// Index files written.
    pub index_files: Vec<IndexId>,
    /// Every pack what was stored may reference: the packs this writer uploaded and those
    /// holding blobs it did not store again because the index had them (when the index
    /// tracks use, as `Repository::load_index_for_write` sets it up). Sorted, no repeats.
    pub packs_used: Vec<PackId>,
}

enum Job {
    Raw {
        kind: BlobKind,
        id: BlobId,
        data: Vec<u8>,
    },
    Sealed {
        kind: BlobKind,
        id: BlobId,
        raw_len: u32,
        sealed: Vec<u8>,
    },
}

/// Large buffers kept for reuse by the pipeline, at most this many.
pub const POOL_KEEP: usize = 8;
/// Buffers smaller than this are not pooled (malloc serves them from its heaps cheaply).
const POOL_MIN: usize = 256 * 1024;
/// Buffers larger than this are not pooled (a chunk is at most 4 MiB; see ChunkerParams).
const POOL_MAX: usize = (8 << 20) + 64 * 1024;
/// An [`InlineSealer`] hands its blobs to the packer once it holds this many bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many blobs.
const BATCH_BLOBS: usize = 256;

/// Recycled large buffers (see the module's notes on memory).
#[derive(Default)]
struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    /// An empty buffer with room for at least `cap` bytes.
    fn take(&self, cap: usize) -> Vec<u8> {
        if cap >= POOL_MIN {
            if let Some(mut v) = self.bufs.lock().pop() {
                v.clear();
                v.reserve(cap);
                return v;
            }
        }
        Vec::with_capacity(cap)
    }

    /// Returns a buffer for reuse (or frees it when it is small, huge, or the pool is full).
    fn give(&self, v: Vec<u8>) {
        if (POOL_MIN..=POOL_MAX).contains(&v.capacity()) {
            let mut g = self.bufs.lock();
            if g.len() < POOL_KEEP {
                g.push(v);
            }
        }
    }
}

struct Sealed {
    kind: BlobKind,
    id: BlobId,
    raw_len: u32,
    sealed: Vec<u8>,
}

struct Pack {
    id: PackId,
    staged: lifeboat_storage::Staged,
    size: u64,
    entries: Vec<PackEntry>,
}

struct Shared {
    repo: Repository,
    pool: Pool,
    error: Mutex<Option<Error>>,
    pending: Mutex<IndexFile>,
    written: Mutex<Vec<IndexId>>,
    packs_written: Mutex<Vec<PackId>>,
    packs_per_index: usize,
    blobs: AtomicU64,
    raw_bytes: AtomicU64,
    stored_bytes: AtomicU64,
    packs: AtomicU64,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut g = self.error.lock();
        if g.is_none() {
            *g = Some(e);
        }
    }
    fn failed(&self) -> bool {
        self.error.lock().is_some()
    }
    fn flush_index(&self, force: bool) -> Result<()> {
        let file = {
            let mut p = self.pending.lock();
            if p.packs.is_empty() || (!force && p.packs.len() < self.packs_per_index) {
                return Ok(());
            }
            std::mem::take(&mut *p)
        };
        let id = self.repo.save_index(&file)?;
        self.written.lock().push(id);
        Ok(())
    }
}

/// Stores blobs into a repository through a bounded, multi-threaded pipeline.
pub struct BlobWriter {
    index: Arc<Index>,
    in_flight: Mutex<HashSet<BlobId>>,
    tx: Option<Sender<Job>>,
    sealed_tx: Option<Sender<Vec<Sealed>>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl BlobWriter {
    /// Starts the pipeline. Blobs usable in `index` are not stored again.
    ///
    /// # Errors
    /// When zstd cannot allocate or threads cannot start.
    pub fn new(repo: &Repository, index: Arc<Index>, opts: &WriterOptions) -> Result<Self> {
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            pool: Pool::default(),
            error: Mutex::new(None),
            pending: Mutex::new(IndexFile::default()),
            written: Mutex::new(Vec::new()),
            packs_written: Mutex::new(Vec::new()),
            packs_per_index: opts.packs_per_index.max(1),
            blobs: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            packs: AtomicU64::new(0),
        });
        let threads_n = opts.threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads_n * 2);
        let (seal_tx, seal_rx) = bounded::<Vec<Sealed>>(threads_n);
        // Packs staged on disk cost no memory while they wait: let two queue up so an fsync
        // never stalls the packer. Buffered packs (object stores) are handed over directly.
        let queue = if repo.storage().stages_on_disk() {
            2
        } else {
            0
        };
        let (pack_tx, pack_rx) = bounded::<Pack>(queue);
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| Error::Io {
                    path: "thread".into(),
                    source: e,
                })
        };
        for i in 0..threads_n {
            let rx = job_rx.clone();
            let tx = seal_tx.clone();
            let sh = shared.clone();
            let mut comp = repo.compressor()?;
            threads.push(spawn(
                format!("seal-{i}"),
                Box::new(move || seal_loop(&sh, &rx, &tx, &mut comp)),
            )?);
        }
        let sealed_tx = Some(seal_tx);
        {
            let sh = shared.clone();
            let pack_size = repo.config().pack_size as usize;
            threads.push(spawn(
                "packer".into(),
                Box::new(move || pack_loop(&sh, &seal_rx, &pack_tx, pack_size)),
            )?);
        }
        // A local disk gains nothing from parallel writes of whole packs, and each one in
        // flight holds a pack in memory; object stores hide latency with parallel uploads.
        let uploaders = if repo.storage().describe().starts_with("s3://") {
            opts.uploaders.max(1)
        } else {
            1
        };
        for i in 0..uploaders {
            let rx = pack_rx.clone();
            let sh = shared.clone();
            threads.push(spawn(
                format!("upload-{i}"),
                Box::new(move || upload_loop(&sh, &rx)),
            )?);
        }
        Ok(BlobWriter {
            index,
            in_flight: Mutex::new(HashSet::new()),
            tx: Some(job_tx),
            sealed_tx,
            threads,
            shared,
        })
    }

    /// The index this writer deduplicates against.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Whether `id` must be stored by the caller: `false` when the repository already has a
    /// usable copy or another caller is storing it. A `true` answer obliges the caller to
    /// call [`BlobWriter::save`].
    pub fn claim(&self, id: &BlobId) -> bool {
        if self.index.has_usable(id) {
            return false;
        }
        self.in_flight.lock().insert(*id)
    }

    /// An empty buffer with room for `cap` bytes, recycled from the pipeline when it is
    /// large: fill it and pass it to [`BlobWriter::save`].
    pub fn buffer(&self, cap: usize) -> Vec<u8> {
        self.shared.pool.take(cap)
    }

    /// A sealer that compresses and seals blobs on the calling thread and hands them to the
    /// packer in batches. Meant for small blobs, where a hand-off to a seal thread per blob
    /// would cost more than the work; each thread should keep one for its lifetime.
    ///
    /// # Errors
    /// When zstd cannot allocate its context.
    pub fn inline_sealer(&self) -> Result<InlineSealer<'_>> {
        Ok(InlineSealer {
            writer: self,
            comp: self.shared.repo.compressor()?,
            batch: Vec::new(),
            bytes: 0,
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        if self.shared.failed() {
            return Err(self.take_error());
        }
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|_| self.take_error()),
            None => Err(Error::Invalid("writer already finished".into())),
        }
    }

    fn take_error(&self) -> Error {
        match self.shared.error.lock().as_ref() {
            Some(e) => Error::Invalid(format!("the write pipeline failed: {e}")),
            None => Error::Invalid("the write pipeline stopped".into()),
        }
    }

    /// Compresses, seals and stores a blob (after a successful [`BlobWriter::claim`]).
    ///
    /// # Errors
    /// When the pipeline has failed (the first error is returned by `finish`).
    pub fn save(&self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        self.send(Job::Raw { kind, id, data })
    }

    /// Stores a blob that is already sealed with this repository's key (used by `copy`
    /// between repositories that share a key, and by prune's repacking).
    ///
    /// # Errors
    /// As [`BlobWriter::save`].
    pub fn save_sealed(
        &self,
        kind: BlobKind,
        id: BlobId,
        raw_len: u32,
        sealed: Vec<u8>,
    ) -> Result<()> {
        self.send(Job::Sealed {
            kind,
            id,
            raw_len,
            sealed,
        })
    }

    /// Flushes the last pack, waits for every upload, and writes the remaining index.
    ///
    /// # Errors
    /// The first error any stage hit; nothing stored may be assumed referenced then.
    pub fn finish(mut self) -> Result<WriterReport> {
        self.tx.take();
        self.sealed_tx.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared
                    .fail(Error::Invalid("a writer thread panicked".into()));
            }
        }
        if let Some(e) = self.shared.error.lock().take() {
            return Err(e);
        }
        self.shared.flush_index(true)?;
        let s = &self.shared;
        let mut packs_used = std::mem::take(&mut *s.packs_written.lock());
        packs_used.extend(self.index.used_packs());
        packs_used.sort_unstable();
        packs_used.dedup();
        Ok(WriterReport {
            packs_used,
            blobs: s.blobs.load(Ordering::Relaxed),
            raw_bytes: s.raw_bytes.load(Ordering::Relaxed),
            stored_bytes: s.stored_bytes.load(Ordering::Relaxed),
            packs: s.packs.load(Ordering::Relaxed),
            index_files: std::mem::take(&mut *s.written.lock()),
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.tx.take();
        self.sealed_tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Seals blobs on the caller's thread and hands them to the packer in batches (see
/// [`BlobWriter::inline_sealer`]). Dropping it flushes what it holds; call
/// [`InlineSealer::flush`] to see the error, if any.
pub struct InlineSealer<'w> {
    writer: &'w BlobWriter,
    comp: crate::crypto::Compressor,
    batch: Vec<Sealed>,
    bytes: usize,
}

impl InlineSealer<'_> {
    /// Compresses, seals and queues a blob (after a successful [`BlobWriter::claim`]).
    ///
    /// # Errors
    /// When the pipeline has failed.
    pub fn save(&mut self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<()> {
        let sh = &self.writer.shared;
        if sh.failed() {
            return Err(self.writer.take_error());
        }
        let out = sh.pool.take(data.len() + crate::crypto::SEAL_OVERHEAD);
        let sealed =
            sh.repo
                .key()
                .seal_compressed_into(&aad::blob(kind, &id), data, &mut self.comp, out);
        sh.blobs.fetch_add(1, Ordering::Relaxed);
        sh.raw_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.bytes += sealed.len();
        self.batch.push(Sealed {
            kind,
            id,
            raw_len: data.len() as u32,
            sealed,
        });
        if self.bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the queued blobs to the packer.
    ///
    /// # Errors
    /// When the pipeline has failed.
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        match &self.writer.sealed_tx {
            Some(tx) => tx.send(batch).map_err(|_| self.writer.take_error()),
            None => Err(Error::Invalid("writer already finished".into())),
        }
    }
}

impl Drop for InlineSealer<'_> {
    fn drop(&mut self) {
        // A failed send means the pipeline failed, and `finish` reports that error.
        let _ = self.flush();
    }
}

fn seal_loop(
    sh: &Shared,
    rx: &Receiver<Job>,
    tx: &Sender<Vec<Sealed>>,
    comp: &mut crate::crypto::Compressor,
) {
    let key = sh.repo.key();
    for job in rx {
        if sh.failed() {
            continue; // drain so senders never block
        }
        let item = match job {
            Job::Raw { kind, id, data } => {
                let out = sh.pool.take(data.len() + crate::crypto::SEAL_OVERHEAD);
                let sealed = key.seal_compressed_into(&aad::blob(kind, &id), &data, comp, out);
                let raw_len = data.len() as u32;
                sh.pool.give(data);
                Sealed {
                    kind,
                    id,
                    raw_len,
                    sealed,
                }
            }
            Job::Sealed {
                kind,
                id,
                raw_len,
                sealed,
            } => Sealed {
                kind,
                id,
                raw_len,
                sealed,
            },
        };
        sh.blobs.fetch_add(1, Ordering::Relaxed);
        sh.raw_bytes
            .fetch_add(u64::from(item.raw_len), Ordering::Relaxed);
        if tx.send(vec![item]).is_err() {
            return;
        }
    }
}

fn pack_loop(sh: &Shared, rx: &Receiver<Vec<Sealed>>, tx: &Sender<Pack>, pack_size: usize) {
    struct Open {
        staged: lifeboat_storage::Staged,
        hasher: blake3::Hasher,
        len: usize,
        entries: Vec<PackEntry>,
    }
    let storage = sh.repo.storage();
    let start = |sh: &Shared| -> Option<Open> {
        match storage.stage(pack_size + 64 * 1024) {
            Ok(staged) => Some(Open {
                staged,
                hasher: blake3::Hasher::new(),
                len: 0,
                entries: Vec::new(),
            }),
            Err(e) => {
                sh.fail(e.into());
                None
            }
        }
    };
    let append = |p: &mut Open, bytes: &[u8]| -> Result<()> {
        p.staged.write(bytes)?;
        p.hasher.update(bytes);
        p.len += bytes.len();
        Ok(())
    };
    let finish = |mut p: Open| -> Result<Pack> {
        let header = sh
            .repo
            .key()
            .seal_stored(crate::format::aad::PACK_HEADER, &to_cbor(&p.entries));
        append(&mut p, &header)?;
        append(&mut p, &(header.len() as u32).to_le_bytes())?;
        Ok(Pack {
            id: PackId(*p.hasher.finalize().as_bytes()),
            staged: p.staged,
            size: p.len as u64,
            entries: p.entries,
        })
    };
    let mut open: Option<Open> = None;
    for item in rx.iter().flatten() {
        if sh.failed() {
            continue;
        }
        if let Some(p) =
            open.take_if(|p| !p.entries.is_empty() && p.len + item.sealed.len() > pack_size)
        {
            match finish(p) {
                Ok(pack) => {
                    if tx.send(pack).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    sh.fail(e);
                    continue;
                }
            }
        }
        if open.is_none() {
            open = start(sh);
        }
        let Some(p) = open.as_mut() else { continue };
        let entry = PackEntry {
            kind: item.kind,
            id: item.id,
            offset: p.len as u32,
            length: item.sealed.len() as u32,
            raw_len: item.raw_len,
        };
        if let Err(e) = append(p, &item.sealed) {
            sh.fail(e);
            continue;
        }
        p.entries.push(entry);
        sh.pool.give(item.sealed);
    }
    if !sh.failed() {
        if let Some(p) = open.take().filter(|p| !p.entries.is_empty()) {
            match finish(p) {
                Ok(pack) => {
                    let _ = tx.send(pack);
                }
                Err(e) => sh.fail(e),
            }
        }
    }
}

fn upload_loop(sh: &Shared, rx: &Receiver<Pack>) {
    for pack in rx {
        if sh.failed() {
            continue;
        }
        let size = pack.size;
        if let Err(e) = sh
            .repo
            .storage()
            .publish(pack.staged, &paths::pack(&pack.id))
        {
            sh.fail(e.into());
            continue;
        }
        sh.stored_bytes.fetch_add(size, Ordering::Relaxed);
        sh.packs.fetch_add(1, Ordering::Relaxed);
        sh.packs_written.lock().push(pack.id);
        sh.pending.lock().packs.push(IndexPack {
            id: pack.id,
            size,
            blobs: pack.entries,
        });
        if let Err(e) = sh.flush_index(false) {
            sh.fail(e);
        }
    }
}
