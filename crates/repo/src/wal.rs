//! Write-ahead log objects: one immutable, sealed repository file per WAL file of a
//! database source (`wal/<source>/<name>`), written whole or not at all.
//!
//! Lives here: the object codec ([`WalHeader`], pieces), [`Repository::wal_put`] (atomic,
//! idempotent, refusing different content under the same name), [`Repository::wal_get`],
//! listing and deletion. Never here: what the names mean (segments, timelines, which WAL a
//! backup needs) — that is `lifeboat-postgres` — nor deciding what to delete.
//!
//! # Format (docs/format/README.md, "WAL objects")
//! ```text
//! "LBW1"  u32-le header length  sealed header  sealed piece 0  sealed piece 1 …
//! ```
//! The header (CBOR: version, plaintext length, keyed BLAKE3 of the plaintext, sealed length
//! of each piece) and every piece (≤ 4 MiB of the plaintext, zstd when it pays) are sealed
//! with AES-256-GCM; their associated data binds the source, the name and the piece number,
//! so an object cannot be moved to another name or source, nor its pieces reordered,
//! dropped or swapped, without failing authentication.
//!
//! # Crash safety
//! Objects are created with [`lifeboat_storage::Storage::put_new`]: on a local disk a temp
//! file is fsynced and linked into place, on S3 a single PUT; a reader sees the whole object
//! or nothing, and a killed writer leaves at most a temp file (removed by prune).

use serde::{Deserialize, Serialize};

use crate::crypto::{Compressor, MasterKey};
use crate::error::{Error, Result};
use crate::format::{from_cbor, to_cbor};
use crate::repository::Repository;

/// Directory of WAL objects.
pub const WAL_DIR: &str = "wal";
/// Magic bytes at the start of every WAL object.
pub const WAL_MAGIC: &[u8; 4] = b"LBW1";
/// Plaintext bytes per sealed piece.
pub const WAL_PIECE: usize = 4 << 20;
/// Largest plaintext accepted (PostgreSQL's largest WAL segment is 1 GiB).
pub const WAL_MAX_PLAIN: u64 = 1 << 30;
/// zstd level for WAL (a fast level, literals still Huffman-coded): the archiver waits for
/// every push, so speed beats the last percent. On WAL of random-hex inserts: 680 MB/s per
/// core and 2.37× (level 1: 503 MB/s, 2.52×); see docs/decisions/0013-wal-objects.md.
pub const WAL_ZSTD_LEVEL: i32 = -4;
/// zstd level for WAL pushed while a backlog waits ([`WalSpeed::CatchUp`]): 810 MB/s per
/// core, 2.19× on the same WAL.
pub const WAL_ZSTD_LEVEL_FAST: i32 = -10;

/// How hard WAL is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalSpeed {
    /// [`WAL_ZSTD_LEVEL`]: the normal case.
    #[default]
    Normal,
    /// [`WAL_ZSTD_LEVEL_FAST`]: used by the asynchronous pusher while segments queue up,
    /// so archiving keeps up with a write-heavy primary; the repository is larger.
    CatchUp,
}

/// The sealed header of a WAL object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHeader {
    /// Object format version (1).
    pub version: u32,
    /// Length of the plaintext (the WAL file).
    pub plain_len: u64,
    /// Content hash of the plaintext ([`content_hash`]): equal content, equal hash.
    #[serde(with = "serde_bytes")]
    pub plain_hash: [u8; 32],
    /// Sealed length of each piece, in order.
    pub pieces: Vec<u32>,
}

/// What [`Repository::wal_put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PutOutcome {
    /// The object was written.
    Stored {
        /// Its size in the repository.
        stored_bytes: u64,
    },
    /// An object with the same name and the same content was already there.
    AlreadyStored,
}

/// One WAL object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// The WAL file name (`000000010000000000000003`).
    pub name: String,
    /// Size of the object in the repository.
    pub size: u64,
}

/// Checks that `source` can name a directory of WAL objects: 1–64 characters of
/// `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`.
///
/// # Errors
/// [`Error::Invalid`] saying what is allowed.
pub fn validate_source(source: &str) -> Result<()> {
    let ok = !source.is_empty()
        && source.len() <= 64
        && !source.starts_with(['.', '-'])
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "source name {source:?} is not valid (fix: use 1-64 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-', e.g. orders-db)"
        )))
    }
}

/// Checks that `name` is a plausible WAL file name (1–80 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.`): it becomes part of a repository path.
///
/// # Errors
/// [`Error::Invalid`] naming it.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{name:?} is not a WAL file name")))
    }
}

/// Path of a WAL object.
pub fn wal_path(source: &str, name: &str) -> String {
    format!("{WAL_DIR}/{source}/{name}")
}

/// Associated data of a WAL object's header.
pub fn aad_header(source: &str, name: &str) -> Vec<u8> {
    let mut a = b"lifeboat/v1/wal-header/".to_vec();
    a.extend_from_slice(source.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

/// Associated data of piece `index` of `count` of a WAL object.
pub fn aad_piece(source: &str, name: &str, index: u32, count: u32) -> Vec<u8> {
    let mut a = b"lifeboat/v1/wal-piece/".to_vec();
    a.extend_from_slice(source.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(&index.to_le_bytes());
    a.extend_from_slice(&count.to_le_bytes());
    a
}

/// The content hash of a WAL file: keyed BLAKE3 (the repository's id key) over
/// `"lifeboat/v1/wal-content"`, the length (u64 LE) and the keyed BLAKE3 of each
/// [`WAL_PIECE`]-sized piece in order — so the pieces are hashed in parallel, and equal
/// content gives an equal hash in every repository that shares the id key (`copy`).
pub fn content_hash(
    key: &crate::crypto::MasterKey,
    len: u64,
    piece_hashes: &[[u8; 32]],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.material().id);
    h.update(b"lifeboat/v1/wal-content");
    h.update(&len.to_le_bytes());
    for p in piece_hashes {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Where [`Repository::wal_encode_from`] reads the plaintext.
#[derive(Debug, Clone, Copy)]
pub enum WalInput<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// An open file of this length, read with positional reads.
    File(&'a std::fs::File, u64),
}

impl WalInput<'_> {
    fn len(&self) -> u64 {
        match self {
            WalInput::Bytes(b) => b.len() as u64,
            WalInput::File(_, n) => *n,
        }
    }
}

/// Decodes the header of a WAL object and returns it with the offset of piece 0.
///
/// # Errors
/// [`Error::Damaged`] naming the object when the bytes are not a WAL object of this
/// repository, name and source, or are truncated.
pub fn decode_header(
    key: &MasterKey,
    source: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(WalHeader, usize)> {
    let path = wal_path(source, name);
    let damaged = |why: String| Error::damaged(&path, why);
    if bytes.len() < 8 || &bytes[..4] != WAL_MAGIC {
        return Err(damaged(format!(
            "not a WAL object ({} bytes, bad magic)",
            bytes.len()
        )));
    }
    let hlen = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let sealed = bytes
        .get(8..8usize.saturating_add(hlen))
        .ok_or_else(|| damaged(format!("truncated: header of {hlen} bytes does not fit")))?;
    let mut sealed = sealed.to_vec();
    let plain = key
        .open_in_place(&aad_header(source, name), &mut sealed)
        .map_err(|e| damaged(format!("header: {e}")))?;
    let header: WalHeader = from_cbor("WAL header", &plain).map_err(|e| damaged(e.to_string()))?;
    if header.version != 1 {
        return Err(damaged(format!(
            "WAL object version {} (this lifeboat reads 1: upgrade lifeboat)",
            header.version
        )));
    }
    // As `wal_encode_from` cuts: this many pieces, so a hostile header cannot make a
    // reader hold more than the plaintext it claims.
    let want_pieces = header.plain_len.div_ceil(WAL_PIECE as u64).max(1);
    if header.plain_len > WAL_MAX_PLAIN || header.pieces.len() as u64 != want_pieces {
        return Err(damaged("implausible header".into()));
    }
    let body: u64 = header.pieces.iter().map(|&l| u64::from(l)).sum();
    let expected = 8 + hlen as u64 + body;
    if bytes.len() as u64 != expected {
        return Err(damaged(format!(
            "has {} bytes, its header says {expected}: truncated or appended to",
            bytes.len()
        )));
    }
    Ok((header, 8 + hlen))
}

/// Decodes and verifies a whole WAL object (pieces opened on up to `threads` threads).
///
/// # Errors
/// [`Error::Damaged`] naming the object.
pub fn decode_object(
    key: &MasterKey,
    source: &str,
    name: &str,
    bytes: &[u8],
    threads: usize,
) -> Result<Vec<u8>> {
    let path = wal_path(source, name);
    let (header, mut at) = decode_header(key, source, name, bytes)?;
    let count = header.pieces.len() as u32;
    let mut spans = Vec::with_capacity(header.pieces.len());
    for (i, &len) in header.pieces.iter().enumerate() {
        spans.push((i as u32, at, at + len as usize));
        at += len as usize;
    }
    let plains = par_pieces(&spans, threads.max(1), |(i, s, e)| {
        let mut sealed = bytes[*s..*e].to_vec();
        let plain = key
            .open_in_place(&aad_piece(source, name, *i, count), &mut sealed)
            .map_err(|err| Error::damaged(&path, format!("piece {i}: {err}")))?;
        if plain.len() > WAL_PIECE {
            return Err(Error::damaged(&path, format!("piece {i} is too long")));
        }
        Ok((*key.blob_id(&plain).as_bytes(), plain))
    })?;
    let mut out = Vec::with_capacity(header.plain_len as usize);
    let mut hashes = Vec::with_capacity(plains.len());
    for (h, p) in plains {
        // Every piece but the last is exactly WAL_PIECE long.
        if p.len() != WAL_PIECE && hashes.len() + 1 < header.pieces.len() {
            return Err(Error::damaged(&path, "a piece has the wrong length"));
        }
        hashes.push(h);
        out.extend_from_slice(&p);
    }
    if out.len() as u64 != header.plain_len
        || content_hash(key, out.len() as u64, &hashes) != header.plain_hash
    {
        return Err(Error::damaged(
            &path,
            "contents do not match the hash in its header",
        ));
    }
    Ok(out)
}

/// Runs `f` over `items` on up to `threads` threads, results in order.
/// How much of a WAL file is read at a time while its piece is compressed.
const READ_CHUNK: usize = 256 << 10;

/// A compressor for WAL at `level` (negative: a fast level that still codes literals).
fn wal_compressor(level: i32) -> Result<Compressor> {
    let comp = if level < 0 {
        Compressor::fast_with_literals(level)
    } else {
        Compressor::new(level)
    };
    comp.map_err(|e| Error::Io {
        path: "zstd".into(),
        source: e,
    })
}

/// Hashes, compresses and seals bytes `start..end` of `file` as one piece, reading
/// [`READ_CHUNK`] bytes at a time into one small buffer: a 4 MiB buffer per piece cost a
/// page fault per 4 KiB, a fifth of a `wal-push`'s CPU time.
fn seal_file_piece(
    key: &crate::crypto::MasterKey,
    aad: &[u8],
    file: &std::fs::File,
    start: u64,
    end: u64,
    level: i32,
) -> Result<([u8; 32], Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    let n = (end - start) as usize;
    let read_err = |e| Error::Io {
        path: "WAL file".into(),
        source: e,
    };
    let zstd_err = |e| Error::Io {
        path: "zstd".into(),
        source: e,
    };
    let mut buf = vec![0u8; READ_CHUNK.min(n)];
    let mut hasher = key.blob_hasher();
    let mut sealed = key.seal_builder(n);
    let mut hashed = false;
    if level != 0 && n >= 64 {
        let mut comp = wal_compressor(level)?;
        let mut frame = comp
            .begin_frame(n as u64, sealed.compressed_payload())
            .map_err(zstd_err)?;
        let mut off = start;
        while off < end {
            let m = READ_CHUNK.min((end - off) as usize);
            file.read_exact_at(&mut buf[..m], off).map_err(read_err)?;
            hasher.update(&buf[..m]);
            frame.write(&buf[..m]).map_err(zstd_err)?;
            off += m as u64;
        }
        frame.finish().map_err(zstd_err)?;
        hashed = true;
    }
    // Same rule as the bulk path: keep the frame only when it saves more than 8 bytes.
    if !hashed || sealed.payload_len() + 8 >= n {
        sealed.restart_stored();
        let mut off = start;
        while off < end {
            let m = READ_CHUNK.min((end - off) as usize);
            file.read_exact_at(&mut buf[..m], off).map_err(read_err)?;
            if !hashed {
                hasher.update(&buf[..m]);
            }
            sealed.push_stored(&buf[..m]);
            off += m as u64;
        }
    }
    Ok((*hasher.finalize().as_bytes(), sealed.finish(key, aad)))
}

fn par_pieces<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    crate::repository::par_map(items, threads, f)
        .into_iter()
        .collect()
}

impl Repository {
    /// Encodes `data` as the WAL object `source`/`name` (compressing and sealing its pieces
    /// on up to `threads` threads).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a plaintext over [`WAL_MAX_PLAIN`].
    pub fn wal_encode(
        &self,
        source: &str,
        name: &str,
        data: &[u8],
        threads: usize,
    ) -> Result<Vec<u8>> {
        Ok(self
            .wal_encode_from(
                source,
                name,
                WalInput::Bytes(data),
                threads,
                WalSpeed::Normal,
            )?
            .0)
    }

    /// Encodes WAL from `input`; returns the object and the content hash of the plaintext.
    /// A file is read piece by piece on the worker threads, so reading overlaps
    /// compressing.
    ///
    /// # Errors
    /// As [`Repository::wal_encode`], and I/O errors reading a file.
    pub fn wal_encode_from(
        &self,
        source: &str,
        name: &str,
        input: WalInput<'_>,
        threads: usize,
        speed: WalSpeed,
    ) -> Result<(Vec<u8>, [u8; 32])> {
        let (parts, hash) = self.wal_encode_parts(source, name, input, threads, speed)?;
        Ok((parts.concat(), hash))
    }

    /// Like [`Repository::wal_encode_from`], returning the object in parts (magic, length
    /// and sealed header; then each sealed piece) that are stored one after the other: no
    /// copy of the whole object is made.
    ///
    /// # Errors
    /// As [`Repository::wal_encode_from`].
    pub fn wal_encode_parts(
        &self,
        source: &str,
        name: &str,
        input: WalInput<'_>,
        threads: usize,
        speed: WalSpeed,
    ) -> Result<(Vec<Vec<u8>>, [u8; 32])> {
        validate_source(source)?;
        validate_name(name)?;
        let len = input.len();
        if len > WAL_MAX_PLAIN {
            return Err(Error::Invalid(format!(
                "{name}: {len} bytes is larger than any WAL file"
            )));
        }
        // An empty file is one empty piece.
        let count = (len.div_ceil(WAL_PIECE as u64)).max(1) as u32;
        let indexed: Vec<u32> = (0..count).collect();
        let level = match (self.config().compression, speed) {
            (0, _) => 0,
            (_, WalSpeed::Normal) => WAL_ZSTD_LEVEL,
            (_, WalSpeed::CatchUp) => WAL_ZSTD_LEVEL_FAST,
        };
        let key = self.key();
        let sealed = par_pieces(&indexed, threads.max(1), |&i| {
            let start = u64::from(i) * WAL_PIECE as u64;
            let end = (start + WAL_PIECE as u64).min(len);
            let aad = aad_piece(source, name, i, count);
            match input {
                WalInput::Bytes(b) => {
                    let chunk = &b[start as usize..end as usize];
                    let mut comp = wal_compressor(level)?;
                    let hash = *key.blob_id(chunk).as_bytes();
                    Ok((hash, key.seal_compressed(&aad, chunk, &mut comp)))
                }
                WalInput::File(f, _) => seal_file_piece(key, &aad, f, start, end, level),
            }
        })?;
        let (hashes, pieces): (Vec<[u8; 32]>, Vec<Vec<u8>>) = sealed.into_iter().unzip();
        let plain_hash = content_hash(key, len, &hashes);
        let header = WalHeader {
            version: 1,
            plain_len: len,
            plain_hash,
            pieces: pieces.iter().map(|p| p.len() as u32).collect(),
        };
        let sealed_header = key.seal_stored(&aad_header(source, name), &to_cbor(&header));
        let mut prefix = Vec::with_capacity(8 + sealed_header.len());
        prefix.extend_from_slice(WAL_MAGIC);
        prefix.extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
        prefix.extend_from_slice(&sealed_header);
        let mut parts = Vec::with_capacity(1 + pieces.len());
        parts.push(prefix);
        parts.extend(pieces);
        Ok((parts, plain_hash))
    }

    /// Decodes the header of a WAL object and returns it with the offset of piece 0.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the object when the bytes are not a WAL object of this
    /// repository, name and source, or are truncated.
    pub fn wal_header(&self, source: &str, name: &str, bytes: &[u8]) -> Result<(WalHeader, usize)> {
        decode_header(self.key(), source, name, bytes)
    }

    /// Decodes and verifies a whole WAL object (pieces opened on up to `threads` threads).
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the object.
    pub fn wal_decode(
        &self,
        source: &str,
        name: &str,
        bytes: &[u8],
        threads: usize,
    ) -> Result<Vec<u8>> {
        decode_object(self.key(), source, name, bytes, threads)
    }

    /// Stores `data` as WAL file `name` of `source`, atomically: afterwards the repository
    /// holds the whole object or (after a crash) nothing. Storing the same content again is
    /// fine ([`PutOutcome::AlreadyStored`]).
    ///
    /// # Errors
    /// [`Error::WalConflict`] when the repository already holds different content under
    /// that name (nothing is overwritten); storage errors.
    pub fn wal_put(
        &self,
        source: &str,
        name: &str,
        data: &[u8],
        threads: usize,
    ) -> Result<PutOutcome> {
        self.wal_put_from(
            source,
            name,
            WalInput::Bytes(data),
            threads,
            WalSpeed::Normal,
        )
    }

    /// Like [`Repository::wal_put`], reading from `input` (a file is read piece by piece
    /// on the worker threads).
    ///
    /// # Errors
    /// As [`Repository::wal_put`], and I/O errors reading a file.
    pub fn wal_put_from(
        &self,
        source: &str,
        name: &str,
        input: WalInput<'_>,
        threads: usize,
        speed: WalSpeed,
    ) -> Result<PutOutcome> {
        let path = wal_path(source, name);
        let len = input.len();
        // Most pushes are new: encode first, create-only write, compare only on conflict.
        let (parts, hash) = self.wal_encode_parts(source, name, input, threads, speed)?;
        let stored_bytes = parts.iter().map(|p| p.len() as u64).sum();
        match self.storage().put_new_parts(&path, parts) {
            Ok(()) => Ok(PutOutcome::Stored { stored_bytes }),
            Err(e) if e.kind() == lifeboat_storage::ErrorKind::AlreadyExists => {
                let existing = self.storage().get(&path)?;
                match self.wal_header(source, name, &existing) {
                    Ok((h, _)) if h.plain_len == len && h.plain_hash == hash => {
                        Ok(PutOutcome::AlreadyStored)
                    }
                    Ok(_) => Err(Error::WalConflict { file: path }),
                    Err(damage) => Err(damage),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and verifies WAL file `name` of `source`.
    ///
    /// # Errors
    /// A storage error of kind `NotFound` when the repository does not hold it (see
    /// [`Error::is_not_found`]); [`Error::Damaged`] naming the object.
    pub fn wal_get(&self, source: &str, name: &str, threads: usize) -> Result<Vec<u8>> {
        validate_source(source)?;
        validate_name(name)?;
        let bytes = self.storage().get(&wal_path(source, name))?;
        self.wal_decode(source, name, &bytes, threads)
    }

    /// Lists the WAL objects of `source` (unordered).
    ///
    /// # Errors
    /// Storage errors.
    pub fn wal_list(&self, source: &str) -> Result<Vec<WalEntry>> {
        validate_source(source)?;
        let prefix = format!("{WAL_DIR}/{source}/");
        Ok(self
            .storage()
            .list(&format!("{WAL_DIR}/{source}"))?
            .into_iter()
            .filter_map(|e| {
                let name = e.path.strip_prefix(&prefix)?;
                (!name.contains('/') && validate_name(name).is_ok()).then(|| WalEntry {
                    name: name.to_string(),
                    size: e.size,
                })
            })
            .collect())
    }

    /// The sources that have WAL objects, sorted.
    ///
    /// # Errors
    /// Storage errors.
    pub fn wal_sources(&self) -> Result<Vec<String>> {
        Ok(self.wal_objects_per_source()?.into_keys().collect())
    }

    /// The sources that have WAL objects, with how many each has (one listing of the WAL
    /// directory).
    ///
    /// # Errors
    /// Storage errors.
    pub fn wal_objects_per_source(&self) -> Result<std::collections::BTreeMap<String, usize>> {
        let prefix = format!("{WAL_DIR}/");
        let mut out = std::collections::BTreeMap::new();
        for e in self.storage().list(WAL_DIR)? {
            let Some((source, name)) = e
                .path
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            if validate_source(source).is_ok() && validate_name(name).is_ok() {
                *out.entry(source.to_string()).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Deletes WAL file `name` of `source` (retention decides which).
    ///
    /// # Errors
    /// Storage errors.
    pub fn wal_delete(&self, source: &str, name: &str) -> Result<()> {
        validate_source(source)?;
        validate_name(name)?;
        Ok(self.storage().delete(&wal_path(source, name))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, KdfParams};

    fn repo() -> Repository {
        let storage = lifeboat_storage::Storage::memory().unwrap();
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        Repository::init(storage, b"pw", &opts).unwrap()
    }

    fn segment(seed: u8) -> Vec<u8> {
        // WAL-like: mostly compressible records, some noise, 9 MiB (three pieces).
        (0..9 << 20)
            .map(|i: usize| {
                if i % 4096 < 64 {
                    (i as u8).wrapping_mul(seed | 1) ^ (i >> 12) as u8
                } else {
                    seed
                }
            })
            .collect()
    }

    #[test]
    fn put_get_roundtrip_is_idempotent_and_refuses_other_content() {
        let r = repo();
        let a = segment(3);
        let name = "000000010000000000000003";
        assert!(matches!(
            r.wal_put("orders", name, &a, 2).unwrap(),
            PutOutcome::Stored { stored_bytes } if stored_bytes < a.len() as u64 / 4
        ));
        assert_eq!(r.wal_get("orders", name, 2).unwrap(), a);
        assert_eq!(
            r.wal_put("orders", name, &a, 1).unwrap(),
            PutOutcome::AlreadyStored
        );
        let b = segment(4);
        let err = r.wal_put("orders", name, &b, 2).unwrap_err();
        assert!(matches!(err, Error::WalConflict { .. }), "{err}");
        assert_eq!(
            r.wal_get("orders", name, 2).unwrap(),
            a,
            "nothing overwritten"
        );
        let list = r.wal_list("orders").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, name);
        assert_eq!(r.wal_sources().unwrap(), vec!["orders".to_string()]);
        // An empty file and a history file are objects too.
        r.wal_put("orders", "00000002.history", b"", 1).unwrap();
        assert!(r
            .wal_get("orders", "00000002.history", 1)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn files_are_streamed_into_the_same_content_at_either_speed() {
        // A local repository (parts written one after the other) and a file read in small
        // chunks: WAL-like pieces, an incompressible piece (stored as is) and a short tail.
        let dir = tempfile::tempdir().unwrap();
        let storage = lifeboat_storage::Storage::create(
            &lifeboat_storage::Location::Local(dir.path().join("repo")),
            &lifeboat_storage::StorageOptions::default(),
        )
        .unwrap();
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let r = Repository::init(storage, b"pw", &opts).unwrap();
        let mut data = segment(5);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..WAL_PIECE + 12_345)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        data.extend_from_slice(&noise);
        let path = dir.path().join("seg");
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let len = data.len() as u64;
        for (name, speed) in [
            ("000000010000000000000007", WalSpeed::Normal),
            ("000000010000000000000008", WalSpeed::CatchUp),
        ] {
            let out = r
                .wal_put_from("orders", name, WalInput::File(&file, len), 2, speed)
                .unwrap();
            let PutOutcome::Stored { stored_bytes } = out else {
                panic!("{out:?}")
            };
            // The WAL-like part compresses; the noise piece is kept as is, not expanded.
            assert!(stored_bytes < len - (9 << 20) / 2, "{stored_bytes}");
            assert!(stored_bytes > noise.len() as u64);
            assert_eq!(r.wal_get("orders", name, 2).unwrap(), data);
            // The same content from memory is recognised as the same object.
            assert_eq!(
                r.wal_put("orders", name, &data, 2).unwrap(),
                PutOutcome::AlreadyStored
            );
        }
    }

    #[test]
    fn objects_cannot_be_moved_truncated_or_altered() {
        let r = repo();
        let a = segment(7);
        let name = "000000010000000000000007";
        let enc = r.wal_encode("orders", name, &a, 2).unwrap();
        assert_eq!(r.wal_decode("orders", name, &enc, 2).unwrap(), a);
        // Another name or source: the header's associated data no longer matches.
        assert!(r
            .wal_decode("orders", "000000010000000000000008", &enc, 2)
            .unwrap_err()
            .is_damage());
        assert!(r
            .wal_decode("carts", name, &enc, 2)
            .unwrap_err()
            .is_damage());
        // Truncated, appended to, or any byte flipped.
        for bad in [
            enc[..enc.len() - 1].to_vec(),
            [enc.clone(), vec![0]].concat(),
            enc[..5].to_vec(),
        ] {
            assert!(r
                .wal_decode("orders", name, &bad, 1)
                .unwrap_err()
                .is_damage());
        }
        for pos in [0, 5, 20, enc.len() / 2, enc.len() - 1] {
            let mut bad = enc.clone();
            bad[pos] ^= 0x40;
            let e = r.wal_decode("orders", name, &bad, 2).unwrap_err();
            assert!(e.is_damage(), "flip at {pos}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn names_and_sources_are_checked() {
        for ok in ["orders", "orders-db", "a.b_c"] {
            assert!(validate_source(ok).is_ok());
        }
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_source(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("000000010000000000000001.partial").is_ok());
        for bad in ["", ".hidden", "../x", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
