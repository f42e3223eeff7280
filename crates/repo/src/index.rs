//! The in-memory index: where every blob lives.
//!
//! Lives here: [`Index`], built from index files, answering "which pack, which bytes" for a
//! blob id, and which packs to avoid building on (damaged, missing or condemned).
//! Never here: I/O; `Repository::load_index` reads the files.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use lifeboat_types::{BlobId, IndexId, PackId};

use crate::format::{BlobKind, IndexFile, PackEntry};

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLoc {
    /// The pack holding it.
    pub pack: PackId,
    /// Blob kind.
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    kind: BlobKind,
    offset: u32,
    length: u32,
    raw_len: u32,
}

/// Blob locations from all index files of a repository.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_sizes: Vec<u64>,
    /// Per pack, the length of its data area (the end of its last sealed blob): the pack's
    /// size less its header and trailer. A maximum, so an index file read twice (duplicate
    /// entries after a crashed prune) changes nothing.
    pack_data_lens: Vec<u64>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, Slot>,
    avoid: HashSet<u32>,
    files: Vec<IndexId>,
    /// One bit per pack of `packs` (as they were when [`Index::track_use`] was called):
    /// set when [`Index::has_usable`] vouched for a blob in it. Empty when not tracking.
    used: Vec<AtomicU64>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks packs that must not be built on: their blobs are used only when no other copy
    /// exists, and [`Index::has_usable`] reports them as absent. Call before adding files.
    pub fn avoid_packs(&mut self, packs: impl IntoIterator<Item = PackId>) {
        for p in packs {
            let pos = self.pack_slot(p, 0);
            self.avoid.insert(pos);
        }
    }

    fn pack_slot(&mut self, id: PackId, size: u64) -> u32 {
        if let Some(&p) = self.pack_pos.get(&id) {
            if size > 0 {
                self.pack_sizes[p as usize] = size;
            }
            return p;
        }
        let p = self.packs.len() as u32;
        self.packs.push(id);
        self.pack_sizes.push(size);
        self.pack_data_lens.push(0);
        self.pack_pos.insert(id, p);
        p
    }

    /// Adds the contents of one index file.
    pub fn add_file(&mut self, id: Option<IndexId>, file: &IndexFile) {
        if let Some(id) = id {
            self.files.push(id);
        }
        for ip in &file.packs {
            self.add_pack(ip.id, ip.size, &ip.blobs);
        }
    }

    /// Adds the blobs of one pack.
    pub fn add_pack(&mut self, pack: PackId, size: u64, blobs: &[PackEntry]) {
        let p = self.pack_slot(pack, size);
        let new_avoided = self.avoid.contains(&p);
        for e in blobs {
            let end = u64::from(e.offset) + u64::from(e.length);
            let data_len = &mut self.pack_data_lens[p as usize];
            *data_len = (*data_len).max(end);
            let slot = Slot {
                pack: p,
                kind: e.kind,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
            };
            match self.blobs.get(&e.id) {
                Some(old) if !self.avoid.contains(&old.pack) || new_avoided => {}
                _ => {
                    self.blobs.insert(e.id, slot);
                }
            }
        }
    }

    /// Where a blob lives (preferring packs not avoided).
    pub fn get(&self, id: &BlobId) -> Option<BlobLoc> {
        self.blobs.get(id).map(|s| BlobLoc {
            pack: self.packs[s.pack as usize],
            kind: s.kind,
            offset: s.offset,
            length: s.length,
            raw_len: s.raw_len,
        })
    }

    /// Whether the blob is stored in a pack that new snapshots may build on. When tracking
    /// ([`Index::track_use`]), a `true` answer records its pack as used.
    pub fn has_usable(&self, id: &BlobId) -> bool {
        match self.blobs.get(id) {
            Some(s) if !self.avoid.contains(&s.pack) => {
                if let Some(word) = self.used.get(s.pack as usize / 64) {
                    word.fetch_or(1 << (s.pack % 64), Ordering::Relaxed);
                }
                true
            }
            _ => false,
        }
    }

    /// Starts recording which packs [`Index::has_usable`] vouches for: a writer builds
    /// on exactly those (and on the packs it writes), so it can check they still exist
    /// before it commits. Call after the last file is added.
    pub fn track_use(&mut self) {
        self.used = (0..self.packs.len().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
    }

    /// The packs [`Index::has_usable`] vouched for since [`Index::track_use`].
    pub fn used_packs(&self) -> Vec<PackId> {
        let mut out = Vec::new();
        for (w, word) in self.used.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(p) = self.packs.get(w * 64 + b) {
                    out.push(*p);
                }
            }
        }
        out
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether there are no blobs.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// The index files this index was built from.
    pub fn files(&self) -> &[IndexId] {
        &self.files
    }

    /// Every pack named by the index, with its recorded size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs
            .iter()
            .zip(&self.pack_sizes)
            .filter(|(_, s)| **s > 0)
            .map(|(p, s)| (*p, *s))
    }

    /// The length of a pack's data area: the bytes of all its sealed blobs (used or not,
    /// including copies of blobs that live elsewhere too), without the pack's header and
    /// trailer. 0 for a pack the index does not name.
    pub fn pack_data_len(&self, pack: &PackId) -> u64 {
        self.pack_pos
            .get(pack)
            .map_or(0, |&p| self.pack_data_lens[p as usize])
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> impl Iterator<Item = (BlobId, BlobLoc)> + '_ {
        self.blobs.iter().map(|(id, s)| {
            (
                *id,
                BlobLoc {
                    pack: self.packs[s.pack as usize],
                    kind: s.kind,
                    offset: s.offset,
                    length: s.length,
                    raw_len: s.raw_len,
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::IndexPack;

    fn entry(id: u8) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([id; 32]),
            offset: 0,
            length: 10,
            raw_len: 10,
        }
    }

    #[test]
    fn prefers_healthy_copies_and_hides_avoided_ones_from_dedup() {
        let (bad, good) = (PackId([1; 32]), PackId([2; 32]));
        let mut idx = Index::new();
        idx.avoid_packs([bad]);
        idx.add_file(
            None,
            &IndexFile {
                packs: vec![IndexPack {
                    id: bad,
                    size: 100,
                    blobs: vec![entry(1), entry(2)],
                }],
                supersedes: vec![],
            },
        );
        assert_eq!(idx.get(&BlobId([1; 32])).unwrap().pack, bad);
        assert!(!idx.has_usable(&BlobId([1; 32])));
        idx.add_pack(good, 50, &[entry(1)]);
        assert_eq!(idx.get(&BlobId([1; 32])).unwrap().pack, good);
        assert!(idx.has_usable(&BlobId([1; 32])));
        assert!(!idx.has_usable(&BlobId([2; 32])));
        assert_eq!(idx.packs().count(), 2);
    }
}
