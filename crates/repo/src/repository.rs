//! The repository handle: open with a password, read and write its sealed files.
//!
//! Lives here: [`Repository`] (init, open, keys, config, snapshots, index loading, blob and
//! tree reads), and [`par_map`] for bounded parallel reads.
//! Never here: the backup pipeline (`writer`), maintenance (`check`, `prune`, `copy`), or
//! anything that prints; secrets are never logged.
//!
//! # Crash safety
//! Every file is written whole under a name that is the BLAKE3 hash of its bytes, and never
//! changed afterwards; `init` writes key files before the config, so a half-created
//! repository has no config: opening it reports the missing config, and `init` completes it.

use std::collections::HashSet;
use std::sync::Arc;

use lifeboat_storage::{ErrorKind, Storage};
use lifeboat_types::{BlobId, IndexId, KeyId, PackId, SnapshotId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crypto::{Compressor, KeyMaterial, MasterKey};
use crate::error::{Error, Result};
use crate::format::{
    aad, from_cbor, pack_header_range, paths, to_cbor, validate_pack_header, BlobKind,
    ChunkerParams, IndexFile, PackHeader, RepoConfig, Snapshot, Tree, FORMAT_VERSION, PACK_TRAILER,
};
use crate::index::Index;
use crate::keys::{KdfParams, KeyFile};

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Argon2id costs of the first key.
    pub kdf: KdfParams,
    /// zstd level (0 = off).
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Chunker sizes; the seed is random unless `share_with` is given.
    pub chunker: ChunkerParams,
    /// Host name recorded in the key file.
    pub hostname: String,
    /// User name recorded in the key file.
    pub username: String,
    /// Format version to create (1 ..= [`FORMAT_VERSION`]; older ones for tests of
    /// `migrate` and for repositories that older binaries must still read).
    pub format_version: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::default(),
            compression: 2,
            pack_size: 16 << 20,
            chunker: ChunkerParams {
                min: 512 << 10,
                avg: 1 << 20,
                max: 4 << 20,
                seed: 0,
            },
            hostname: local_hostname(),
            username: local_username(),
            format_version: FORMAT_VERSION,
        }
    }
}

/// The host name of this machine ("unknown" when it cannot be read).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The user running this process, from `$USER` ("unknown" when unset).
pub fn local_username() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

/// Snapshots read (oldest first) and the errors of snapshot files that could not be read.
pub type SnapshotList = (Vec<(SnapshotId, Snapshot)>, Vec<Error>);

/// An open repository.
#[derive(Clone)]
pub struct Repository {
    storage: Storage,
    key: Arc<MasterKey>,
    config: RepoConfig,
    key_id: KeyId,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.storage.describe())
    }
}

/// Runs `f` over `items` on up to `threads` threads, keeping the input order.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<parking_lot::Mutex<Option<R>>> = items
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                *results[i].lock() = Some(f(item));
            });
        }
    });
    results.into_iter().filter_map(|m| m.into_inner()).collect()
}

/// Like [`par_map`], with per-thread state made by `init` (reused buffers, say).
pub fn par_map_init<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len().max(1));
    if threads == 1 {
        let mut state = init();
        return items.iter().map(|t| f(&mut state, t)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<parking_lot::Mutex<Option<R>>> = items
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut state = init();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    *results[i].lock() = Some(f(&mut state, item));
                }
            });
        }
    });
    results.into_iter().filter_map(|m| m.into_inner()).collect()
}

/// The name of a repository file: BLAKE3 of its bytes.
pub fn content_id(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn id_from_path(path: &str) -> Option<[u8; 32]> {
    let name = path.rsplit('/').next()?;
    lifeboat_types::hex_decode32(name).ok()
}

impl Repository {
    /// Creates a repository at `storage`, protected by `password`.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] when a config exists; storage errors otherwise.
    pub fn init(storage: Storage, password: &[u8], opts: &InitOptions) -> Result<Self> {
        Self::init_with_material(storage, password, opts, None)
    }

    /// Creates a repository that shares blob ids and chunking with `source`, so that
    /// `copy` can move data between them without re-chunking. The encryption key is new.
    ///
    /// # Errors
    /// As [`Repository::init`].
    pub fn init_like(
        storage: Storage,
        password: &[u8],
        opts: &InitOptions,
        source: &Repository,
    ) -> Result<Self> {
        Self::init_with_material(storage, password, opts, Some(source))
    }

    fn init_with_material(
        storage: Storage,
        password: &[u8],
        opts: &InitOptions,
        source: Option<&Repository>,
    ) -> Result<Self> {
        let describe = storage.describe().to_string();
        if storage.stat(paths::CONFIG)?.is_some() {
            return Err(Error::AlreadyInitialized { repo: describe });
        }
        let mut material = KeyMaterial::random()
            .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
        let mut chunker = opts.chunker;
        let mut repo_id = [0u8; 32];
        let mut seed = [0u8; 8];
        {
            use rand::RngCore;
            let mut rng = rand::rng();
            rng.fill_bytes(&mut repo_id);
            rng.fill_bytes(&mut seed);
        }
        chunker.seed = u64::from_le_bytes(seed);
        if let Some(src) = source {
            material.id = src.key.material().id;
            chunker = src.config.chunker;
        }
        chunker
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if !(1..=FORMAT_VERSION).contains(&opts.format_version) {
            return Err(Error::Invalid(format!(
                "format version {} (this lifeboat writes 1 to {FORMAT_VERSION})",
                opts.format_version
            )));
        }
        let config = RepoConfig {
            version: opts.format_version,
            id: hex::encode(repo_id),
            chunker,
            compression: opts.compression,
            pack_size: opts.pack_size.clamp(1 << 20, 512 << 20),
        };
        let kf = KeyFile::wrap(
            &material,
            password,
            opts.kdf,
            &opts.hostname,
            &opts.username,
        )?;
        let bytes = kf.encode();
        let key_id = KeyId(content_id(&bytes));
        storage.put(&paths::key(&key_id), bytes)?;
        let key = Arc::new(MasterKey::new(material));
        let sealed = key.seal_stored(aad::CONFIG, &to_cbor(&config));
        match storage.put_new(paths::CONFIG, sealed) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyInitialized { repo: describe })
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Repository {
            storage,
            key,
            config,
            key_id,
        })
    }

    /// Opens the repository at `storage` with `password`.
    ///
    /// # Errors
    /// [`Error::NotARepository`], [`Error::WrongPassword`], [`Error::UnsupportedVersion`],
    /// [`Error::Damaged`] for a damaged config, or storage errors.
    pub fn open(storage: Storage, password: &[u8]) -> Result<Self> {
        let describe = storage.describe().to_string();
        let mut keys = storage.list(paths::KEYS)?;
        let config_bytes = match storage.get(paths::CONFIG) {
            Ok(b) => b,
            Err(e) if e.is_not_found() && !keys.is_empty() => {
                return Err(Error::damaged(
                    paths::CONFIG,
                    "missing: the repository has keys but no config (restore it from a copy of the repository)",
                ))
            }
            Err(e) if e.is_not_found() => return Err(Error::NotARepository { repo: describe }),
            Err(e) => return Err(e.into()),
        };
        if keys.is_empty() {
            return Err(Error::damaged(
                paths::KEYS,
                "no key files: the repository cannot be opened (restore keys/ from a copy of the repository)",
            ));
        }
        keys.sort_by(|a, b| a.path.cmp(&b.path));
        let mut tried = 0;
        let mut damaged: Vec<(String, String)> = Vec::new();
        let mut config_error: Option<String> = None;
        // Read every key file first (they are small), then try the cheapest key derivation
        // first: a machine key (a random secret, no stretching needed) opens in microseconds
        // instead of an Argon2 run per human key before it — what keeps `pg wal-push`, run
        // once per WAL segment, cheap.
        let mut candidates = Vec::new();
        for entry in &keys {
            let Some(id) = id_from_path(&entry.path) else {
                continue;
            };
            let bytes = storage.get(&entry.path)?;
            if content_id(&bytes) != id {
                damaged.push((
                    entry.path.clone(),
                    "contents do not match the file name (BLAKE3): bytes changed or truncated"
                        .into(),
                ));
                continue;
            }
            match KeyFile::decode(&bytes) {
                Ok(kf) => candidates.push((entry, id, kf)),
                Err(reason) => damaged.push((entry.path.clone(), reason)),
            }
        }
        candidates
            .sort_by_key(|(_, _, kf)| u64::from(kf.params.m_cost) * u64::from(kf.params.t_cost));
        for (entry, id, kf) in candidates {
            tried += 1;
            let material = match kf.unwrap_key(password) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(reason) => {
                    tracing::warn!(key = %entry.path, %reason, "skipping damaged key file");
                    continue;
                }
            };
            let key = MasterKey::new(material);
            let plain = match key.open(aad::CONFIG, &config_bytes) {
                Ok(p) => p,
                Err(e) => {
                    // A key left by an interrupted `init` (or the config is damaged): try the
                    // other keys before saying so.
                    config_error = Some(e.to_string());
                    continue;
                }
            };
            let config: RepoConfig = from_cbor("config", &plain)
                .map_err(|e| Error::damaged(paths::CONFIG, e.to_string()))?;
            if config.version > FORMAT_VERSION {
                return Err(Error::UnsupportedVersion {
                    repo: describe,
                    found: config.version,
                    supported: FORMAT_VERSION,
                });
            }
            config
                .chunker
                .validate()
                .map_err(|e| Error::damaged(paths::CONFIG, e.to_string()))?;
            return Ok(Repository {
                storage,
                key: Arc::new(key),
                config,
                key_id: KeyId(id),
            });
        }
        if let Some(reason) = config_error {
            return Err(Error::damaged(
                paths::CONFIG,
                format!("{reason}: a key opens with this password but the config does not (restore the config from a copy of the repository)"),
            ));
        }
        if let Some((file, reason)) = damaged.into_iter().next() {
            // A damaged key file may be the one this password opens: say so, not "wrong
            // password".
            return Err(Error::damaged(
                file,
                format!("{reason}; no intact key opens with this password (restore the key file from a copy, or open with another password and `lifeboat key add`)"),
            ));
        }
        Err(Error::WrongPassword {
            repo: describe,
            keys: tried,
        })
    }

    /// The storage this repository lives on.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Whether trees of this repository may hold delta files (format version ≥ 2).
    pub fn supports_deltas(&self) -> bool {
        self.config.version >= crate::format::DELTA_VERSION
    }

    /// Brings the repository to [`FORMAT_VERSION`] and returns the version it had. Every
    /// step so far only adds what older versions lack (version 2: delta files), so nothing
    /// is rewritten but the config, the single commit point; older binaries then refuse the
    /// repository instead of misreading it. Refused while another process holds a lease
    /// (one that started under the old version must not see the new one).
    ///
    /// # Errors
    /// [`Error::Leased`] while other commands run; storage errors.
    pub fn migrate(&mut self) -> Result<u32> {
        let from = self.config.version;
        if from >= FORMAT_VERSION {
            return Ok(from);
        }
        let lease = crate::lease::Lease::acquire(
            self,
            crate::lease::LeaseKind::Prune,
            "migrate",
            crate::lease::DEFAULT_TTL,
        )?;
        let now = crate::lease::now_s();
        let others: Vec<String> = crate::lease::list_leases(self)?
            .into_iter()
            .filter(|(path, info)| path != lease.path() && info.is_live(now))
            .map(|(_, info)| info.describe())
            .collect();
        if let Some(first) = others.first() {
            return Err(Error::Leased {
                what: format!("{first} (and {} more)", others.len() - 1),
                hint: "run migrate again when no other lifeboat command uses the repository".into(),
            });
        }
        lease.check_valid()?;
        let config = RepoConfig {
            version: FORMAT_VERSION,
            ..self.config.clone()
        };
        let sealed = self.key.seal_stored(aad::CONFIG, &to_cbor(&config));
        self.storage.put(paths::CONFIG, sealed)?;
        self.config = config;
        Ok(from)
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The key file this handle was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A compressor at the repository's level.
    ///
    /// # Errors
    /// When zstd cannot allocate.
    pub fn compressor(&self) -> Result<Compressor> {
        Compressor::new(self.config.compression).map_err(|e| Error::Io {
            path: "zstd".into(),
            source: e,
        })
    }

    // ---- keys ------------------------------------------------------------------------

    /// Adds a password.
    ///
    /// # Errors
    /// Storage errors.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let kf = KeyFile::wrap(
            self.key.material(),
            password,
            kdf,
            &local_hostname(),
            &local_username(),
        )?;
        let bytes = kf.encode();
        let id = KeyId(content_id(&bytes));
        self.storage.put(&paths::key(&id), bytes)?;
        Ok(id)
    }

    /// Lists key files.
    ///
    /// # Errors
    /// Storage errors; unreadable key files are listed with `None`.
    pub fn list_keys(&self) -> Result<Vec<(KeyId, Option<KeyFile>)>> {
        let mut out = Vec::new();
        for e in self.storage.list(paths::KEYS)? {
            let Some(id) = id_from_path(&e.path) else {
                continue;
            };
            let kf = KeyFile::decode(&self.storage.get(&e.path)?).ok();
            out.push((KeyId(id), kf));
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    /// Removes a key file. Refuses to remove the key this handle was opened with, and the
    /// last key.
    ///
    /// # Errors
    /// [`Error::Invalid`] when refused; storage errors.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::Invalid(format!(
                "key {} is the one this command was opened with; open with another password to remove it",
                id.short()
            )));
        }
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::Invalid(format!("there is no key {}", id.short())));
        }
        self.storage.delete(&paths::key(id))?;
        Ok(())
    }

    /// Resolves a key id or unique prefix.
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing or several keys match.
    pub fn find_key(&self, spec: &str) -> Result<KeyId> {
        let keys = self.list_keys()?;
        let m: Vec<_> = keys
            .iter()
            .filter(|(k, _)| k.to_hex().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        match m.as_slice() {
            [(k, _)] => Ok(*k),
            [] => Err(Error::Invalid(format!(
                "no key matches {spec:?}; see `lifeboat key list`"
            ))),
            _ => Err(Error::Invalid(format!(
                "{spec:?} matches several keys; give more digits"
            ))),
        }
    }

    // ---- sealed files ----------------------------------------------------------------

    /// Seals `value` and writes it under `dir/<hash>`; returns the hash.
    ///
    /// # Errors
    /// Storage errors.
    pub fn write_file<T: Serialize>(&self, dir: &str, aad: &[u8], value: &T) -> Result<[u8; 32]> {
        let plain = to_cbor(value);
        let mut c = self.compressor()?;
        let sealed = self.key.seal_compressed(aad, &plain, &mut c);
        let id = content_id(&sealed);
        self.storage
            .put(&format!("{dir}/{}", hex::encode(id)), sealed)?;
        Ok(id)
    }

    /// Reads, verifies and decodes a sealed file.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the file when its hash, seal or encoding is wrong.
    pub fn read_file<T: DeserializeOwned>(
        &self,
        path: &str,
        aad: &[u8],
        what: &'static str,
    ) -> Result<T> {
        let bytes = self.storage.get(path)?;
        self.decode_file(path, &bytes, aad, what)
    }

    /// Verifies and decodes sealed file bytes already read.
    ///
    /// # Errors
    /// As [`Repository::read_file`].
    pub fn decode_file<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: &[u8],
        aad: &[u8],
        what: &'static str,
    ) -> Result<T> {
        if let Some(expected) = id_from_path(path) {
            if content_id(bytes) != expected {
                return Err(Error::damaged(
                    path,
                    "contents do not match the file name (BLAKE3): bytes changed or truncated",
                ));
            }
        }
        let plain = self
            .key
            .open(aad, bytes)
            .map_err(|e| Error::damaged(path, e.to_string()))?;
        from_cbor(what, &plain).map_err(|e| Error::damaged(path, e.to_string()))
    }

    // ---- snapshots -------------------------------------------------------------------

    /// Lists snapshot ids.
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .storage
            .list(paths::SNAPSHOTS)?
            .iter()
            .filter_map(|e| id_from_path(&e.path).map(SnapshotId))
            .collect())
    }

    /// Reads every snapshot, oldest first. Damaged snapshot files are returned as errors in
    /// the second list, so one bad file does not hide the others.
    ///
    /// # Errors
    /// Storage errors listing the directory.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let ids = self.snapshot_ids()?;
        let res = par_map(&ids, 8, |id| {
            self.read_file::<Snapshot>(&paths::snapshot(id), aad::SNAPSHOT, "snapshot")
                .map(|s| (*id, s))
        });
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for r in res {
            match r {
                Ok(s) => ok.push(s),
                Err(e) if matches!(&e, Error::Storage(s) if s.is_not_found()) => {}
                Err(e) => bad.push(e),
            }
        }
        ok.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((ok, bad))
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest` (the newest of all; see
    /// [`Repository::find_snapshot_matching`] to narrow it).
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`].
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.find_snapshot_matching(spec, &crate::select::SnapshotFilter::default())
    }

    /// Finds a snapshot by full id or unique id prefix (not `latest`).
    pub(crate) fn find_snapshot_by_id(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        let want = spec.to_ascii_lowercase();
        if want.is_empty() || !want.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound { spec: spec.into() });
        }
        let ids: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&want))
            .collect();
        match ids.as_slice() {
            [id] => {
                let s = self.read_file(&paths::snapshot(id), aad::SNAPSHOT, "snapshot")?;
                Ok((*id, s))
            }
            [] => Err(Error::SnapshotNotFound { spec: spec.into() }),
            many => Err(Error::AmbiguousSnapshot {
                spec: spec.into(),
                count: many.len(),
            }),
        }
    }

    /// Writes a snapshot file (the commit point of a backup).
    ///
    /// # Errors
    /// Storage errors.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        Ok(SnapshotId(self.write_file(
            paths::SNAPSHOTS,
            aad::SNAPSHOT,
            snap,
        )?))
    }

    /// Deletes a snapshot file.
    ///
    /// # Errors
    /// Storage errors.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        Ok(self.storage.delete(&paths::snapshot(id))?)
    }

    // ---- index -----------------------------------------------------------------------

    /// Ids of the index files.
    ///
    /// # Errors
    /// Storage errors.
    pub fn index_ids(&self) -> Result<Vec<IndexId>> {
        Ok(self
            .storage
            .list(paths::INDEX)?
            .iter()
            .filter_map(|e| id_from_path(&e.path).map(IndexId))
            .collect())
    }

    /// Packs recorded as damaged by `check`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn damaged_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self
            .storage
            .list(paths::DAMAGED)?
            .iter()
            .filter_map(|e| id_from_path(&e.path).map(PackId))
            .collect())
    }

    /// Loads every index file. Damaged index files are returned in the second list.
    /// `avoid` packs are used only when no other copy of a blob exists.
    ///
    /// # Errors
    /// Storage errors listing the directory.
    pub fn load_index_with(&self, avoid: &HashSet<PackId>) -> Result<(Index, Vec<Error>)> {
        let ids = self.index_ids()?;
        let files = par_map(&ids, 8, |id| {
            self.read_file::<IndexFile>(&paths::index(id), aad::INDEX, "index")
        });
        let mut index = Index::new();
        index.avoid_packs(avoid.iter().copied());
        let mut bad = Vec::new();
        for (id, f) in ids.iter().zip(files) {
            match f {
                Ok(f) => index.add_file(Some(*id), &f),
                Err(e) if matches!(&e, Error::Storage(s) if s.is_not_found()) => {}
                Err(e) => bad.push(e),
            }
        }
        Ok((index, bad))
    }

    /// Loads the index for reading (restore, ls, dump): like
    /// [`Repository::load_index_for_write`], so that where a blob has several copies the
    /// one in an intact pack is read.
    ///
    /// # Errors
    /// Storage errors.
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_for_write()
    }

    /// Every pack file in storage, with its size.
    ///
    /// # Errors
    /// Storage errors listing `data/`.
    pub fn list_packs(&self) -> Result<std::collections::HashMap<PackId, u64>> {
        Ok(self
            .storage
            .list(paths::DATA)?
            .into_iter()
            .filter_map(|e| id_from_path(&e.path).map(|id| (PackId(id), e.size)))
            .collect())
    }

    /// Loads the index for writers (backup, copy into this repository): blobs in damaged or
    /// condemned packs, and in packs that are missing or whose size differs from what the
    /// index says (deleted or truncated since), count as absent, so new snapshots store fresh
    /// copies instead of building on them. Costs one listing of `data/`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn load_index_for_write(&self) -> Result<Index> {
        let mut avoid = crate::prune::packs_to_avoid(self)?;
        let (index, bad_files) = self.load_index_with(&avoid)?;
        for e in bad_files {
            tracing::warn!("{e}");
        }
        let listed = self.list_packs()?;
        let bad: Vec<PackId> = index
            .packs()
            .filter(|(p, size)| listed.get(p) != Some(size))
            .map(|(p, _)| p)
            .filter(|p| !avoid.contains(p))
            .collect();
        let mut index = if bad.is_empty() {
            index
        } else {
            for p in &bad {
                tracing::warn!(
                    "{} is missing or has the wrong size: data it held will be stored again (run `lifeboat check`)",
                    paths::pack(p)
                );
            }
            avoid.extend(bad);
            self.load_index_with(&avoid)?.0
        };
        index.track_use();
        Ok(index)
    }

    /// Of `packs`, those that no longer exist in storage.
    ///
    /// Cost: one HEAD per pack, on up to 8 threads, or one listing of `data/` (1,000 names
    /// per request on S3), whichever takes fewer requests weighted by price: a LIST request
    /// costs as much as ~12 HEADs on S3, and `known_packs` (the index's pack count)
    /// estimates the listing's length.
    ///
    /// # Errors
    /// Storage errors.
    pub fn missing_packs(&self, packs: &[PackId], known_packs: usize) -> Result<Vec<PackId>> {
        let pages = known_packs / 1000 + 1;
        if packs.len() > 12 * pages {
            let listed = self.list_packs()?;
            return Ok(packs
                .iter()
                .filter(|p| !listed.contains_key(p))
                .copied()
                .collect());
        }
        let found = par_map(packs, 8, |p| self.storage.stat(&paths::pack(p)));
        let mut missing = Vec::new();
        for (p, r) in packs.iter().zip(found) {
            if r?.is_none() {
                missing.push(*p);
            }
        }
        Ok(missing)
    }

    /// The commit point of a writer: writes `snap` only while `lease` is valid and after
    /// checking that every pack in `uses` (the packs the writer wrote and those it built
    /// on, see [`crate::WriterReport::packs_used`]) still exists — a prune that wrongly took
    /// the writer's lease for dead may have deleted some, and a snapshot must never name
    /// data that is gone.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`], [`Error::PacksGone`] (nothing is written then), storage
    /// errors.
    pub fn commit_snapshot(
        &self,
        lease: &crate::lease::Lease,
        uses: &[PackId],
        known_packs: usize,
        snap: &Snapshot,
    ) -> Result<SnapshotId> {
        lease.check_valid()?;
        let missing = self.missing_packs(uses, known_packs)?;
        if let Some(first) = missing.first() {
            return Err(Error::PacksGone {
                operation: lease.info().operation,
                count: missing.len(),
                first: paths::pack(first),
            });
        }
        // The check above may have taken a while (a listing): fence again right before the
        // write.
        lease.check_valid()?;
        self.save_snapshot(snap)
    }

    /// Writes an index file.
    ///
    /// # Errors
    /// Storage errors.
    pub fn save_index(&self, file: &IndexFile) -> Result<IndexId> {
        Ok(IndexId(self.write_file(paths::INDEX, aad::INDEX, file)?))
    }

    // ---- blobs -----------------------------------------------------------------------

    /// Reads, authenticates and decompresses a blob.
    ///
    /// # Errors
    /// [`Error::BlobMissing`], [`Error::PackMissing`], [`Error::Damaged`] naming the pack.
    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let (loc, path, mut sealed) = self.read_sealed(index, id)?;
        self.open_blob(&path, loc.kind, id, loc.raw_len, &mut sealed)
    }

    /// Like [`Repository::read_blob`], decoding into `out` (its allocation reused: rebuilding
    /// a delta file reads thousands of blobs, and fresh buffers cost a page fault per 4 KiB).
    ///
    /// # Errors
    /// As [`Repository::read_blob`].
    pub fn read_blob_to(&self, index: &Index, id: &BlobId, out: &mut Vec<u8>) -> Result<()> {
        let (loc, path, mut sealed) = self.read_sealed(index, id)?;
        self.open_blob_to(&path, loc.kind, id, loc.raw_len, &mut sealed, out)
    }

    /// The sealed bytes of blob `id`, with its location and its pack's path.
    fn read_sealed(
        &self,
        index: &Index,
        id: &BlobId,
    ) -> Result<(crate::index::BlobLoc, String, Vec<u8>)> {
        let loc = index.get(id).ok_or(Error::BlobMissing { id: *id })?;
        let path = paths::pack(&loc.pack);
        match self
            .storage
            .get_range(&path, u64::from(loc.offset), u64::from(loc.length))
        {
            Ok(b) => Ok((loc, path, b)),
            Err(e) if e.is_not_found() => Err(Error::PackMissing { pack: loc.pack }),
            Err(e) if e.kind() == ErrorKind::Truncated => Err(Error::damaged(&path, "truncated")),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens one sealed blob read from `path` and verifies its id.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming `path` and the blob.
    pub fn open_blob(
        &self,
        path: &str,
        kind: BlobKind,
        id: &BlobId,
        raw_len: u32,
        sealed: &mut Vec<u8>,
    ) -> Result<Vec<u8>> {
        let plain = self
            .key
            .open_in_place(&aad::blob(kind, id), sealed)
            .map_err(|e| Error::damaged(path, format!("blob {}: {e}", id.short())))?;
        if plain.len() != raw_len as usize || self.key.blob_id(&plain) != *id {
            return Err(Error::damaged(
                path,
                format!("blob {} does not match its id", id.short()),
            ));
        }
        Ok(plain)
    }

    /// Like [`Repository::open_blob`], in place: `sealed` is overwritten and the plaintext
    /// goes into `out` (reused).
    ///
    /// # Errors
    /// [`Error::Damaged`] naming `path` and the blob.
    pub fn open_blob_to(
        &self,
        path: &str,
        kind: BlobKind,
        id: &BlobId,
        raw_len: u32,
        sealed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.key
            .open_to(&aad::blob(kind, id), sealed, out)
            .map_err(|e| Error::damaged(path, format!("blob {}: {e}", id.short())))?;
        if out.len() != raw_len as usize || self.key.blob_id(out) != *id {
            return Err(Error::damaged(
                path,
                format!("blob {} does not match its id", id.short()),
            ));
        }
        Ok(())
    }

    /// Reads and decodes a tree blob.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], plus [`Error::Damaged`] for an undecodable tree.
    pub fn read_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(index, id)?;
        Tree::decode(&bytes).map_err(|e| {
            let file = index
                .get(id)
                .map(|l| paths::pack(&l.pack))
                .unwrap_or_default();
            Error::damaged(file, format!("tree {}: {e}", id.short()))
        })
    }

    /// Reads and validates the header of a pack of `size` bytes.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the pack when the header is unreadable.
    pub fn read_pack_header(&self, pack: &PackId, size: u64) -> Result<PackHeader> {
        let path = paths::pack(pack);
        if size < PACK_TRAILER as u64 {
            return Err(Error::damaged(&path, "too short to be a pack"));
        }
        let trailer =
            self.storage
                .get_range(&path, size - PACK_TRAILER as u64, PACK_TRAILER as u64)?;
        let (start, len) =
            pack_header_range(size, &trailer).map_err(|e| Error::damaged(&path, e.to_string()))?;
        let sealed = self.storage.get_range(&path, start, len)?;
        self.decode_pack_header(&path, &sealed, start)
    }

    /// Opens a sealed pack header and validates it against a data area of `data_len` bytes.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming `path`.
    pub fn decode_pack_header(
        &self,
        path: &str,
        sealed: &[u8],
        data_len: u64,
    ) -> Result<PackHeader> {
        let plain = self
            .key
            .open(aad::PACK_HEADER, sealed)
            .map_err(|e| Error::damaged(path, format!("pack header: {e}")))?;
        let header: PackHeader =
            from_cbor("pack header", &plain).map_err(|e| Error::damaged(path, e.to_string()))?;
        validate_pack_header(&header, data_len).map_err(|e| Error::damaged(path, e.to_string()))?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_packs_are_found_by_stat_and_by_listing() {
        let storage = Storage::memory().unwrap();
        let opts = InitOptions {
            kdf: KdfParams {
                m_cost: 1024,
                t_cost: 1,
                p_cost: 1,
            },
            ..InitOptions::default()
        };
        let repo = Repository::init(storage, b"pw", &opts).unwrap();
        let packs: Vec<PackId> = (0..40u8).map(|i| PackId([i; 32])).collect();
        for p in packs.iter().step_by(2) {
            repo.storage().put(&paths::pack(p), vec![1]).unwrap();
        }
        let gone: Vec<PackId> = packs.iter().skip(1).step_by(2).copied().collect();
        // 40 packs of a repository that knows 0: more than 12 HEADs, one listing.
        assert_eq!(repo.missing_packs(&packs, 0).unwrap(), gone);
        // A few packs of a repository that knows 100,000: a HEAD each.
        assert_eq!(
            repo.missing_packs(&packs[..4], 100_000).unwrap(),
            vec![packs[1], packs[3]]
        );
    }
}
