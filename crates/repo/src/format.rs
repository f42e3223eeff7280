//! On-disk structures of the repository and their codecs (CBOR, RFC 8949, via serde).
//!
//! Lives here: the layout of the repository (`paths`), the repository config, pack headers,
//! index files, trees and nodes, snapshots, and the pure functions that encode and decode
//! them. Decoders take bytes read from storage and must never panic on any input: they are
//! fuzzed (fuzz/). Never here: I/O or encryption (see `crypto`, `repository`).
//!
//! docs/format/README.md documents every byte.

use serde::{Deserialize, Serialize};

use lifeboat_types::{BlobId, IndexId, PackId, SnapshotId};

/// The repository format version written by this build. Version 2 added the `delta` field
/// of tree nodes (ADR 0016); a version-1 reader would take a delta file's blobs for its
/// data, so only version-2 repositories get deltas, and older binaries refuse them.
pub const FORMAT_VERSION: u32 = 2;

/// The first format version whose trees may hold delta files.
pub const DELTA_VERSION: u32 = 2;

/// Repository paths, relative to the storage root.
pub mod paths {
    use lifeboat_types::{IndexId, KeyId, PackId, SnapshotId};

    /// The repository config (sealed).
    pub const CONFIG: &str = "config";
    /// Directory of key files.
    pub const KEYS: &str = "keys";
    /// Directory of pack files (two-hex-digit fan-out).
    pub const DATA: &str = "data";
    /// Directory of index files.
    pub const INDEX: &str = "index";
    /// Directory of snapshot files.
    pub const SNAPSHOTS: &str = "snapshots";
    /// Directory of leases.
    pub const LOCKS: &str = "locks";
    /// Directory of prune's condemned-pack records.
    pub const CONDEMNED: &str = "condemned";
    /// Directory of damage records written by `check`.
    pub const DAMAGED: &str = "damaged";

    /// Path of a pack file.
    pub fn pack(id: &PackId) -> String {
        let h = id.to_hex();
        format!("{DATA}/{}/{h}", &h[..2])
    }
    /// Path of an index file.
    pub fn index(id: &IndexId) -> String {
        format!("{INDEX}/{id}")
    }
    /// Path of a snapshot file.
    pub fn snapshot(id: &SnapshotId) -> String {
        format!("{SNAPSHOTS}/{id}")
    }
    /// Path of a key file.
    pub fn key(id: &KeyId) -> String {
        format!("{KEYS}/{id}")
    }
    /// Path of a damage record for a pack.
    pub fn damaged(id: &PackId) -> String {
        format!("{DAMAGED}/{id}")
    }
}

/// Associated data bound to sealed repository files, by kind.
pub mod aad {
    /// The config file.
    pub const CONFIG: &[u8] = b"lifeboat/v1/config";
    /// Index files.
    pub const INDEX: &[u8] = b"lifeboat/v1/index";
    /// Snapshot files.
    pub const SNAPSHOT: &[u8] = b"lifeboat/v1/snapshot";
    /// Pack headers.
    pub const PACK_HEADER: &[u8] = b"lifeboat/v1/pack-header";
    /// Key files' wrapped master key.
    pub const KEY: &[u8] = b"lifeboat/v1/key";

    /// Associated data of a blob: kind byte and id, so a blob cannot be swapped for another.
    pub fn blob(kind: super::BlobKind, id: &lifeboat_types::BlobId) -> [u8; 50] {
        let mut a = [0u8; 50];
        a[..17].copy_from_slice(b"lifeboat/v1/blob/");
        a[17] = kind as u8;
        a[18..50].copy_from_slice(id.as_bytes());
        a
    }
}

/// Why bytes read from storage could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The CBOR is malformed or does not match the expected structure.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A structural limit was exceeded.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Encodes a value as CBOR.
pub fn to_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every type here serializes.
    #[allow(clippy::expect_used)]
    ciborium::into_writer(v, &mut out).expect("CBOR encoding into memory");
    out
}

/// Decodes CBOR, naming `what` in the error.
///
/// # Errors
/// [`DecodeError::Malformed`] for any input that is not the expected structure.
pub fn from_cbor<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    ciborium::de::from_reader_with_recursion_limit(bytes, 64).map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// The kind of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[repr(u8)]
#[serde(try_from = "u8", into = "u8")]
pub enum BlobKind {
    /// A chunk of file contents.
    Data = 0,
    /// A tree (a directory listing).
    Tree = 1,
}

impl TryFrom<u8> for BlobKind {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            other => Err(format!("unknown blob kind {other}")),
        }
    }
}

impl From<BlobKind> for u8 {
    fn from(k: BlobKind) -> u8 {
        k as u8
    }
}

/// Chunker parameters (FastCDC 2020, normalization level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Minimum chunk size in bytes.
    pub min: u32,
    /// Average chunk size in bytes.
    pub avg: u32,
    /// Maximum chunk size in bytes.
    pub max: u32,
    /// Seed XORed into the gear table, so chunk boundaries reveal nothing about content.
    pub seed: u64,
}

impl ChunkerParams {
    /// Checks the parameters are within what FastCDC accepts.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the bad parameter.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(DecodeError::Invalid {
                what: "config",
                reason: format!(
                    "chunker sizes min={} avg={} max={} out of range",
                    self.min, self.avg, self.max
                ),
            })
        }
    }
}

/// The repository config: format version, identity, and parameters shared by every writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Format version ([`FORMAT_VERSION`] for new repositories).
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level for new blobs (0 = no compression).
    pub compression: i32,
    /// Target size of pack files in bytes.
    pub pack_size: u32,
}

/// One blob inside a pack, as listed by the pack header and the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Blob kind.
    #[serde(rename = "k")]
    pub kind: BlobKind,
    /// Blob id.
    #[serde(rename = "i")]
    pub id: BlobId,
    /// Offset of the sealed blob in the pack file.
    #[serde(rename = "o")]
    pub offset: u32,
    /// Length of the sealed blob.
    #[serde(rename = "l")]
    pub length: u32,
    /// Length of the blob's plaintext.
    #[serde(rename = "r")]
    pub raw_len: u32,
}

/// Decoded pack header: the entries of one pack, in file order.
pub type PackHeader = Vec<PackEntry>;

/// Length of the trailer that ends every pack: the sealed header's length (u32 LE).
pub const PACK_TRAILER: usize = 4;

/// Maximum size of a sealed pack header that a reader accepts.
pub const MAX_PACK_HEADER: usize = 16 << 20;

/// Checks a decoded pack header against the pack's size: entries in order, inside the data
/// area, not overlapping.
///
/// # Errors
/// [`DecodeError::Invalid`] describing the first inconsistency.
pub fn validate_pack_header(entries: &[PackEntry], data_len: u64) -> Result<(), DecodeError> {
    let mut end = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let start = u64::from(e.offset);
        let stop = start + u64::from(e.length);
        if start < end || stop > data_len || e.length == 0 {
            return Err(DecodeError::Invalid {
                what: "pack header",
                reason: format!(
                    "entry {i} covers bytes {start}..{stop}, outside the data area or overlapping"
                ),
            });
        }
        end = stop;
    }
    Ok(())
}

/// Where the sealed header of a pack lies, from the pack's last bytes.
///
/// # Errors
/// [`DecodeError::Invalid`] when the trailer points outside the pack.
pub fn pack_header_range(pack_len: u64, trailer: &[u8]) -> Result<(u64, u64), DecodeError> {
    let bad = |reason: String| DecodeError::Invalid {
        what: "pack trailer",
        reason,
    };
    let t: [u8; 4] = trailer
        .try_into()
        .map_err(|_| bad(format!("trailer has {} bytes, expected 4", trailer.len())))?;
    let hlen = u64::from(u32::from_le_bytes(t));
    if hlen as usize > MAX_PACK_HEADER || hlen + PACK_TRAILER as u64 > pack_len {
        return Err(bad(format!(
            "header length {hlen} does not fit a pack of {pack_len} bytes"
        )));
    }
    let start = pack_len - PACK_TRAILER as u64 - hlen;
    Ok((start, hlen))
}

/// The blobs of one pack, as recorded in an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    #[serde(rename = "p")]
    pub id: PackId,
    /// Total size of the pack file in bytes.
    #[serde(rename = "s")]
    pub size: u64,
    /// Its blobs.
    #[serde(rename = "b")]
    pub blobs: Vec<PackEntry>,
}

/// An index file: which blobs live in which packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IndexFile {
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces (written by prune); informational.
    #[serde(default)]
    pub supersedes: Vec<IndexId>,
}

/// The type of a tree node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `target` (raw bytes: targets need not be UTF-8).
    Symlink {
        /// The link target.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDev {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDev {
        /// Device number.
        rdev: u64,
    },
    /// A Unix socket (recorded, not restored).
    Socket,
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Name, e.g. `user.checksum`.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One entry of a tree: a file, directory, link or special file, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name as raw bytes (names need not be UTF-8).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_ns: u32,
    /// Status change time, seconds (to detect changes; not restored).
    pub ctime: i64,
    /// Nanoseconds of the status change time.
    pub ctime_ns: u32,
    /// Inode number (hard-link detection and change detection).
    pub inode: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Logical size in bytes (files).
    pub size: u64,
    /// The file is sparse: restore must leave holes where the data is all zeros.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Data blobs in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// The file is stored as changes against an earlier version of itself: `content` then
    /// holds the base's blobs followed by each layer's (ADR 0016, format §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Tree blob (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// `user.*` extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// The file could not be read completely; its content is missing or partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most layers a delta may have; a writer stores the whole file again before this.
pub const MAX_DELTA_LAYERS: usize = 16;

/// A file stored as XOR layers over an earlier version of itself (PostgreSQL relation
/// files, whose pages change a few bytes at a time; ADR 0016).
///
/// The file is rebuilt as: start from the base (the first `base_blobs` blobs of the node's
/// `content`, `base_len` bytes); then for each layer in order, cut or zero-extend it to
/// the layer's `len` and XOR it with the layer's blobs (the next `blobs` of `content`,
/// exactly `len` bytes). The last layer's `len` is the file's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Bytes of the base.
    pub base_len: u64,
    /// How many of `content`'s blobs are the base.
    pub base_blobs: u32,
    /// The layers, oldest first (at least one).
    pub layers: Vec<DeltaLayer>,
}

/// One XOR layer of a [`Delta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaLayer {
    /// Length of the file after this layer (and of the layer's data).
    pub len: u64,
    /// How many blobs of `content` the layer has.
    pub blobs: u32,
}

impl Delta {
    /// Checks the delta against its node: layers present and not too many, blob counts
    /// adding up to `content`, the last layer as long as the file.
    ///
    /// # Errors
    /// A reason, for [`DecodeError::Invalid`].
    pub fn validate(&self, content_len: usize, size: u64) -> Result<(), String> {
        let Some(last) = self.layers.last() else {
            return Err("a delta without layers".into());
        };
        if self.layers.len() > MAX_DELTA_LAYERS {
            return Err(format!(
                "{} delta layers (at most {MAX_DELTA_LAYERS})",
                self.layers.len()
            ));
        }
        let blobs = self
            .layers
            .iter()
            .try_fold(u64::from(self.base_blobs), |n, l| {
                n.checked_add(u64::from(l.blobs))
            });
        if blobs != Some(content_len as u64) {
            return Err("delta blob counts do not add up to the content".into());
        }
        if last.len != size {
            return Err("the last delta layer is not as long as the file".into());
        }
        Ok(())
    }
}

impl Node {
    /// The name for display (lossy UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A tree: the nodes of one directory, sorted by name bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    /// The entries, sorted by `name`, no duplicates.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Checks that names are sorted, unique, non-empty and contain no `/` or NUL, and that
    /// `.` and `..` do not occur: a hostile tree must not make restore write outside its
    /// target.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the bad entry.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let mut prev: Option<&[u8]> = None;
        for n in &self.nodes {
            let name = n.name.as_slice();
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(DecodeError::Invalid {
                    what: "tree",
                    reason: format!("unsafe entry name {:?}", String::from_utf8_lossy(name)),
                });
            }
            if prev.is_some_and(|p| p >= name) {
                return Err(DecodeError::Invalid {
                    what: "tree",
                    reason: "entries not sorted or duplicated".into(),
                });
            }
            match (&n.kind, n.subtree.is_some()) {
                (NodeKind::Dir, false) => {
                    return Err(DecodeError::Invalid {
                        what: "tree",
                        reason: format!("directory {:?} has no subtree", n.display_name()),
                    })
                }
                (NodeKind::Dir, true) | (_, false) => {}
                (_, true) => {
                    return Err(DecodeError::Invalid {
                        what: "tree",
                        reason: format!("non-directory {:?} has a subtree", n.display_name()),
                    })
                }
            }
            if let Some(d) = &n.delta {
                if !matches!(n.kind, NodeKind::File) || n.sparse {
                    return Err(DecodeError::Invalid {
                        what: "tree",
                        reason: format!("{:?} has a delta but is no plain file", n.display_name()),
                    });
                }
                d.validate(n.content.len(), n.size)
                    .map_err(|reason| DecodeError::Invalid {
                        what: "tree",
                        reason: format!("{:?}: {reason}", n.display_name()),
                    })?;
            }
            prev = Some(name);
        }
        Ok(())
    }

    /// Decodes and validates a tree.
    ///
    /// # Errors
    /// [`DecodeError`] for malformed or unsafe trees.
    pub fn decode(bytes: &[u8]) -> Result<Tree, DecodeError> {
        let t: Tree = from_cbor("tree", bytes)?;
        t.validate()?;
        Ok(t)
    }
}

/// Counters recorded with a snapshot.
///
/// Stored inside the sealed snapshot under the names of format version 1 (`bytes_read`,
/// `bytes_added`, `bytes_stored`, `duration_s`; docs/format/README.md); `--json` shows
/// them through [`SummaryJson`] with the names of docs/json.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files whose content was read (new or changed).
    pub files_read: u64,
    /// Files reused from the parent by metadata.
    pub files_unchanged: u64,
    /// Bytes read from the source.
    #[serde(rename = "bytes_read")]
    pub read_bytes: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    #[serde(rename = "bytes_added")]
    pub added_bytes: u64,
    /// Bytes written to the repository (sealed, compressed), excluding metadata files.
    #[serde(rename = "bytes_stored")]
    pub stored_bytes: u64,
    /// Entries that could not be read and were skipped or stored partially.
    pub errors: u64,
    /// When the backup started (RFC 3339).
    pub started: String,
    /// Seconds the backup took.
    #[serde(rename = "duration_s")]
    pub duration_seconds: f64,
}

/// The `--json` form of a [`SnapshotSummary`] (docs/json.md): sizes end in `_bytes`,
/// durations in `_seconds`. The stored form keeps the names of the repository format.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SummaryJson<'a> {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files whose content was read (new or changed).
    pub files_read: u64,
    /// Files reused from the parent by metadata.
    pub files_unchanged: u64,
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    pub added_bytes: u64,
    /// Bytes written to the repository (sealed, compressed), excluding metadata files.
    pub stored_bytes: u64,
    /// Entries that could not be read and were skipped or stored partially.
    pub errors: u64,
    /// When the backup started (RFC 3339, UTC).
    pub started: &'a str,
    /// Seconds the backup took.
    pub duration_seconds: f64,
}

impl<'a> From<&'a SnapshotSummary> for SummaryJson<'a> {
    fn from(s: &'a SnapshotSummary) -> Self {
        SummaryJson {
            files: s.files,
            dirs: s.dirs,
            bytes: s.bytes,
            files_read: s.files_read,
            files_unchanged: s.files_unchanged,
            read_bytes: s.read_bytes,
            blobs_added: s.blobs_added,
            added_bytes: s.added_bytes,
            stored_bytes: s.stored_bytes,
            errors: s.errors,
            started: &s.started,
            duration_seconds: s.duration_seconds,
        }
    }
}

impl SnapshotSummary {
    /// Serializes the summary in its `--json` form ([`SummaryJson`]); for
    /// `#[serde(serialize_with = "SnapshotSummary::serialize_json")]` on report fields.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize_json<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        SummaryJson::from(self).serialize(ser)
    }
}

/// A snapshot: a root tree plus where, when and what it was taken of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (RFC 3339 with nanoseconds, UTC).
    pub time: String,
    /// The root tree.
    pub tree: BlobId,
    /// Paths given to the backup (absolute).
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot used to skip unchanged files.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Some entries could not be read: the snapshot is incomplete.
    #[serde(default)]
    pub partial: bool,
    /// The snapshot this one was copied from (by `copy`), if any.
    #[serde(default)]
    pub original: Option<SnapshotId>,
    /// Counters.
    #[serde(default)]
    pub summary: SnapshotSummary,
    /// Set when the snapshot is a PostgreSQL base backup: the cluster and the WAL it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgBackupInfo>,
}

/// What a PostgreSQL base backup needs besides its files: where its WAL starts and stops,
/// and the `backup_label` a restore must write into the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgBackupInfo {
    /// The source name (`--source`): WAL objects live under `wal/<source>/`.
    pub source: String,
    /// `pg_control_system().system_identifier`: which cluster this is.
    pub system_id: String,
    /// `server_version_num` (150010 for 15.10).
    pub server_version: u32,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// WAL position where the backup starts (its checkpoint's redo point).
    pub start_lsn: lifeboat_types::Lsn,
    /// WAL position the cluster must reach for the backup to be consistent.
    pub stop_lsn: lifeboat_types::Lsn,
    /// When the backup started (RFC 3339).
    pub start_time: String,
    /// When it stopped (RFC 3339).
    pub stop_time: String,
    /// The cluster's `wal_segment_size` in bytes.
    pub segment_size: u64,
    /// The data directory that was backed up (the snapshot's single path).
    pub data_dir: String,
    /// Contents of `backup_label` as `pg_backup_stop` returned it.
    pub backup_label: String,
    /// Contents of `tablespace_map` (empty without tablespaces).
    #[serde(default)]
    pub tablespace_map: String,
}

impl Snapshot {
    /// The snapshot time as a timestamp (`None` when unparsable).
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            subtree: matches!(kind, NodeKind::Dir).then_some(BlobId([7; 32])),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            mtime_ns: 123_456_789,
            ctime: 1_700_000_000,
            ctime_ns: 1,
            inode: 42,
            dev: 1,
            nlink: 1,
            size: 3,
            sparse: false,
            content: vec![BlobId([1; 32])],
            delta: None,
            xattrs: vec![Xattr {
                name: b"user.a".to_vec(),
                value: vec![0, 255],
            }],
            error: None,
        }
    }

    /// The sealed snapshot keeps the summary's format-version names (old repositories and
    /// older releases read them), while `--json` shows the names of docs/json.md.
    #[test]
    fn summary_keeps_its_stored_names_and_shows_json_names() {
        let s = SnapshotSummary {
            read_bytes: 1,
            added_bytes: 2,
            stored_bytes: 3,
            duration_seconds: 1.5,
            ..SnapshotSummary::default()
        };
        let stored: ciborium::Value = from_cbor("summary", &to_cbor(&s)).unwrap();
        let keys: Vec<String> = stored
            .as_map()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_text().map(str::to_string))
            .collect();
        for k in ["bytes_read", "bytes_added", "bytes_stored", "duration_s"] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        let back: SnapshotSummary = from_cbor("summary", &to_cbor(&s)).unwrap();
        assert_eq!(back, s);
        let json = serde_json::to_value(SummaryJson::from(&s)).unwrap();
        assert_eq!(json["read_bytes"], 1);
        assert_eq!(json["added_bytes"], 2);
        assert_eq!(json["stored_bytes"], 3);
        assert_eq!(json["duration_seconds"], 1.5);
        assert!(json.get("bytes_stored").is_none(), "{json}");
    }

    #[test]
    fn tree_roundtrip_keeps_non_utf8_names() {
        let t = Tree {
            nodes: vec![
                node(b"a\xff\xfe", NodeKind::File),
                node(b"b", NodeKind::Dir),
                node(
                    b"c",
                    NodeKind::Symlink {
                        target: b"/nowhere\x80".to_vec(),
                    },
                ),
            ],
        };
        let bytes = to_cbor(&t);
        assert_eq!(Tree::decode(&bytes).unwrap(), t);
    }

    #[test]
    fn hostile_trees_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"x\0"] {
            let t = Tree {
                nodes: vec![node(bad, NodeKind::File)],
            };
            assert!(Tree::decode(&to_cbor(&t)).is_err(), "{bad:?}");
        }
        let unsorted = Tree {
            nodes: vec![node(b"b", NodeKind::File), node(b"a", NodeKind::File)],
        };
        assert!(Tree::decode(&to_cbor(&unsorted)).is_err());
        assert!(Tree::decode(b"\xff\x00garbage").is_err());
    }

    #[test]
    fn pack_trailer_bounds() {
        assert_eq!(pack_header_range(100, &10u32.to_le_bytes()), Ok((86, 10)));
        assert!(pack_header_range(10, &10u32.to_le_bytes()).is_err());
        assert!(pack_header_range(10, &[1, 2]).is_err());
        let e = PackEntry {
            kind: BlobKind::Data,
            id: BlobId([0; 32]),
            offset: 0,
            length: 10,
            raw_len: 5,
        };
        assert!(validate_pack_header(&[e], 10).is_ok());
        assert!(validate_pack_header(&[e], 9).is_err());
        assert!(validate_pack_header(&[e, e], 30).is_err(), "overlap");
    }
}
