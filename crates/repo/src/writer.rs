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
    error: Mutex<Option<Error>>,
    pending: Mutex<IndexFile>,
    written: Mutex<Vec<IndexId>>,
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
            error: Mutex::new(None),
            pending: Mutex::new(IndexFile::default()),
            written: Mutex::new(Vec::new()),
            packs_per_index: opts.packs_per_index.max(1),
            blobs: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            packs: AtomicU64::new(0),
        });
        let threads_n = opts.threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads_n * 2);
        let (seal_tx, seal_rx) = bounded::<Sealed>(threads_n);
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
        drop(seal_tx);
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
        Ok(WriterReport {
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
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn seal_loop(
    sh: &Shared,
    rx: &Receiver<Job>,
    tx: &Sender<Sealed>,
    comp: &mut crate::crypto::Compressor,
) {
    let key = sh.repo.key();
    for job in rx {
        if sh.failed() {
            continue; // drain so senders never block
        }
        let item = match job {
            Job::Raw { kind, id, data } => {
                let sealed = key.seal_compressed(&aad::blob(kind, &id), &data, comp);
                Sealed {
                    kind,
                    id,
                    raw_len: data.len() as u32,
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
        if tx.send(item).is_err() {
            return;
        }
    }
}

fn pack_loop(sh: &Shared, rx: &Receiver<Sealed>, tx: &Sender<Pack>, pack_size: usize) {
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
    for item in rx {
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
