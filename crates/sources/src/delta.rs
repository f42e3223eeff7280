//! Files stored as XOR layers over an earlier version of themselves (ADR 0016, format §6):
//! [`Rebuild`] reads a stored file back (plain or delta) as a stream, and [`XorReader`]
//! turns a file on disk into the next layer over its previous version.
//!
//! Lives here: the byte-level rules of `lifeboat_repo::format::Delta`. Never here: which
//! files get deltas (the backup decides), writing to the repository, or anything that
//! trusts a tree's lengths without checking them against the index.

use std::collections::HashMap;
use std::io::Read;

use lifeboat_repo::format::{Delta, DeltaLayer, Node, MAX_DELTA_LAYERS};
use lifeboat_repo::{Error, Index, Repository, Result};
use lifeboat_types::BlobId;

/// Layers a delta may have before the backup stores the whole file again: each layer makes a
/// restore read the file's data once more.
pub const MAX_LAYERS: usize = 4;
const _: () = assert!(MAX_LAYERS <= MAX_DELTA_LAYERS);

/// How much [`Rebuild`] produces per step.
const WINDOW: usize = 1 << 20;

/// One run of blobs read in order (the base or a layer); zeros past its end.
struct Stream<'a> {
    blobs: &'a [BlobId],
    next: usize,
    cur: Vec<u8>,
    /// `cur` stands for this many zero bytes instead of holding them.
    cur_zeros: usize,
    pos: usize,
}

impl<'a> Stream<'a> {
    fn new(blobs: &'a [BlobId]) -> Self {
        Stream {
            blobs,
            next: 0,
            cur: Vec::new(),
            cur_zeros: 0,
            pos: 0,
        }
    }

    fn cur_len(&self) -> usize {
        if self.cur_zeros > 0 {
            self.cur_zeros
        } else {
            self.cur.len()
        }
    }

    /// XORs the stream's next `out.len()` bytes into `out` (zeros past the end change
    /// nothing; all-zero blobs are not even read).
    fn xor_into(&mut self, ctx: &mut Blobs<'_>, out: &mut [u8]) -> Result<()> {
        let mut o = 0;
        while o < out.len() {
            if self.pos == self.cur_len() {
                let Some(id) = self.blobs.get(self.next) else {
                    return Ok(()); // past the end
                };
                self.next += 1;
                self.pos = 0;
                self.cur_zeros = ctx.load_into(id, &mut self.cur)?;
                if self.cur_len() == 0 {
                    continue;
                }
            }
            let n = (out.len() - o).min(self.cur_len() - self.pos);
            if self.cur_zeros == 0 {
                for (a, b) in out[o..o + n]
                    .iter_mut()
                    .zip(&self.cur[self.pos..self.pos + n])
                {
                    *a ^= b;
                }
            }
            o += n;
            self.pos += n;
        }
        Ok(())
    }
}

/// Blob access for rebuilding: the index, and which blob ids are runs of zeros (an unchanged
/// page XORs to zeros, and those chunks all share one id per length).
struct Blobs<'a> {
    repo: &'a Repository,
    index: &'a Index,
    zero_ids: HashMap<u32, BlobId>,
}

impl Blobs<'_> {
    fn raw_len(&self, id: &BlobId) -> Result<u32> {
        self.index
            .get(id)
            .map(|l| l.raw_len)
            .ok_or(Error::BlobMissing { id: *id })
    }

    /// Loads blob `id` into `buf` and returns 0, or, for a run of zeros, clears `buf` and
    /// returns its length without reading it.
    fn load_into(&mut self, id: &BlobId, buf: &mut Vec<u8>) -> Result<usize> {
        let len = self.raw_len(id)?;
        let key = self.repo.key();
        let zero = *self
            .zero_ids
            .entry(len)
            .or_insert_with(|| key.blob_id(&vec![0u8; len as usize]));
        if zero == *id {
            buf.clear();
            return Ok(len as usize);
        }
        // The plaintext is checked against the id (and so its length against the index).
        self.repo.read_blob_to(self.index, id, buf)?;
        Ok(0)
    }
}

/// Reads a stored file's content back, plain or delta, as a stream of its `size` bytes.
pub struct Rebuild<'a> {
    blobs: Blobs<'a>,
    base: Stream<'a>,
    base_len: u64,
    layers: Vec<(DeltaLayer, Stream<'a>)>,
    size: u64,
    off: u64,
}

impl<'a> Rebuild<'a> {
    /// Prepares to read `node`'s content. Checks first that every blob is indexed and that
    /// the base and each layer are exactly as long as the node says.
    ///
    /// # Errors
    /// A blob in no index; lengths that do not add up (a damaged or hostile tree).
    pub fn new(repo: &'a Repository, index: &'a Index, node: &'a Node) -> Result<Self> {
        let blobs = Blobs {
            repo,
            index,
            zero_ids: HashMap::new(),
        };
        let sum = |ids: &[BlobId]| -> Result<u64> {
            ids.iter()
                .try_fold(0u64, |n, id| Ok(n + u64::from(blobs.raw_len(id)?)))
        };
        let damaged = |what: &str| {
            Error::Invalid(format!(
                "{}: the {what} is not as long as the tree says (damaged tree)",
                node.display_name()
            ))
        };
        let (base_len, base_blobs, layer_list): (u64, usize, &[DeltaLayer]) = match &node.delta {
            None => (node.size, node.content.len(), &[]),
            Some(d) => {
                d.validate(node.content.len(), node.size)
                    .map_err(|r| Error::Invalid(format!("{}: {r}", node.display_name())))?;
                (d.base_len, d.base_blobs as usize, &d.layers)
            }
        };
        let (base_ids, mut rest) = node.content.split_at(base_blobs.min(node.content.len()));
        if sum(base_ids)? != base_len {
            return Err(damaged("base"));
        }
        let mut layers = Vec::with_capacity(layer_list.len());
        for l in layer_list {
            let (ids, r) = rest.split_at((l.blobs as usize).min(rest.len()));
            rest = r;
            if sum(ids)? != l.len {
                return Err(damaged("delta layer"));
            }
            layers.push((*l, Stream::new(ids)));
        }
        Ok(Rebuild {
            blobs,
            base: Stream::new(base_ids),
            base_len,
            layers,
            size: node.size,
            off: 0,
        })
    }

    /// Fills `out` with the next `out.len()` bytes of the file (at most one window; the
    /// caller keeps within the size).
    fn step(&mut self, out: &mut [u8]) -> Result<()> {
        out.fill(0);
        self.base.xor_into(&mut self.blobs, out)?;
        let mut prev_len = self.base_len;
        for (layer, stream) in &mut self.layers {
            // Cut to the previous length (what lies beyond it is gone, and comes back as
            // zeros if the file grows again), then XOR the layer.
            if prev_len < self.off + out.len() as u64 {
                let keep = prev_len.saturating_sub(self.off) as usize;
                out[keep..].fill(0);
            }
            stream.xor_into(&mut self.blobs, out)?;
            prev_len = layer.len;
        }
        self.off += out.len() as u64;
        Ok(())
    }
}

impl Read for Rebuild<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size - self.off).min(buf.len().min(WINDOW) as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.step(&mut buf[..n]).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

/// The next layer of a file over its previous version: reads the file on disk and XORs
/// each byte with the previous version's byte at the same offset (zeros past its end).
/// Unchanged pages come out as zeros, which the chunker cuts into chunks that all share one
/// blob id.
pub struct XorReader<'a, R> {
    new: R,
    old: Rebuild<'a>,
    old_size: u64,
    off: u64,
    scratch: Vec<u8>,
    changed: Option<&'a std::cell::Cell<bool>>,
}

impl<'a, R: Read> XorReader<'a, R> {
    /// XORs `new` with the content `old` rebuilds.
    pub fn new(new: R, old: Rebuild<'a>) -> Self {
        let old_size = old.size;
        XorReader {
            new,
            old,
            old_size,
            off: 0,
            scratch: Vec::new(),
            changed: None,
        }
    }

    /// Sets `flag` once any byte differs from the old version (or lies past its end).
    pub fn watch_changes(mut self, flag: &'a std::cell::Cell<bool>) -> Self {
        self.changed = Some(flag);
        self
    }
}

impl<R: Read> Read for XorReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.new.read(buf)?;
        let m = (self.old_size.saturating_sub(self.off)).min(n as u64) as usize;
        if m > 0 {
            self.scratch.resize(m, 0);
            self.old.read_exact(&mut self.scratch)?;
            let mut any = 0u8;
            for (a, b) in buf[..m].iter_mut().zip(&self.scratch) {
                *a ^= b;
                any |= *a;
            }
            if let Some(flag) = self.changed {
                if any != 0 || m < n {
                    flag.set(true);
                }
            }
        } else if n > 0 {
            if let Some(flag) = self.changed {
                flag.set(true);
            }
        }
        self.off += n as u64;
        Ok(n)
    }
}

/// The delta of a new layer over `parent` (whose blobs come first in the new content), or
/// `None` when the parent has as many layers as a file may have.
pub fn next_delta(parent: &Node, new_len: u64, new_blobs: u32) -> Option<Delta> {
    let layer = DeltaLayer {
        len: new_len,
        blobs: new_blobs,
    };
    match &parent.delta {
        None => Some(Delta {
            base_len: parent.size,
            base_blobs: u32::try_from(parent.content.len()).ok()?,
            layers: vec![layer],
        }),
        Some(d) if d.layers.len() < MAX_LAYERS => {
            let mut d = d.clone();
            d.layers.push(layer);
            Some(d)
        }
        Some(_) => None,
    }
}

/// Whether a new version of a file can be stored as a layer over `parent`.
pub fn can_layer(parent: &Node) -> bool {
    parent.error.is_none()
        && !parent.sparse
        && parent
            .delta
            .as_ref()
            .is_none_or(|d| d.layers.len() < MAX_LAYERS)
        && u32::try_from(parent.content.len()).is_ok()
}
