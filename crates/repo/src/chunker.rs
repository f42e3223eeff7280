//! Content-defined chunking: FastCDC (2020) over a bounded streaming buffer.
//!
//! Lives here: [`Chunker`], which cuts a byte stream into chunks whose boundaries depend only
//! on content (and the repository's secret gear seed), so an insertion early in a file only
//! changes nearby chunks. Never here: hashing, storing or I/O other than reading the input.
//!
//! Memory: one buffer of twice the maximum chunk size per call, whatever the input size.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};

use crate::format::ChunkerParams;

/// Cuts streams into content-defined chunks.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    params: ChunkerParams,
}

impl Chunker {
    /// A chunker with validated `params` (see [`ChunkerParams::validate`]).
    pub fn new(params: ChunkerParams) -> Self {
        Chunker { params }
    }

    /// The minimum chunk size: inputs up to this size are always one chunk.
    pub fn min_size(&self) -> usize {
        self.params.min as usize
    }

    /// Reads `input` to its end and calls `emit` with each chunk in order. `buf` is reused
    /// across calls to avoid allocations. Returns the number of bytes read.
    ///
    /// # Errors
    /// The first error of `input` or `emit`.
    pub fn chunk<R: Read, E: From<std::io::Error>>(
        &self,
        input: R,
        buf: &mut Vec<u8>,
        emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.chunk_sized(input, None, buf, emit)
    }

    /// Like [`Chunker::chunk`], with the expected input size (a file's size) so that small
    /// inputs use a buffer of their own size instead of twice the maximum chunk size. The
    /// hint only sizes the buffer: inputs of any actual length are chunked correctly.
    ///
    /// # Errors
    /// The first error of `input` or `emit`.
    pub fn chunk_sized<R: Read, E: From<std::io::Error>>(
        &self,
        mut input: R,
        size_hint: Option<u64>,
        buf: &mut Vec<u8>,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let full = 2 * max;
        // A small input is read whole (plus one byte to see its end) into a small buffer;
        // anything larger, or unknown, gets the full buffer, released afterwards.
        let mut cap = match size_hint {
            Some(n) if (n as usize) < max => (n as usize + 1).max(4096),
            _ => full,
        };
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let result = self.chunk_inner(&mut input, buf, &mut cap, full, &mut emit);
        if buf.len() > max {
            *buf = Vec::new(); // keep at most one small buffer per thread
        }
        result
    }

    fn chunk_inner<R: Read, E: From<std::io::Error>>(
        &self,
        input: &mut R,
        buf: &mut Vec<u8>,
        cap: &mut usize,
        full: usize,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let mut len = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            if !eof && len == *cap && *cap < full {
                // The size hint was wrong (the file grew): switch to the full buffer.
                *cap = full;
                buf.resize(full, 0);
            }
            while !eof && len < *cap {
                match input.read(&mut buf[len..*cap]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        len += n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if len == 0 {
                return Ok(total);
            }
            let mut consumed = 0usize;
            let cdc = FastCDC::with_level_and_seed(
                &buf[..len],
                self.params.min,
                self.params.avg,
                self.params.max,
                Normalization::Level1,
                self.params.seed,
            );
            for c in cdc {
                let end = c.offset + c.length;
                if end == len && !eof && c.length < max {
                    break; // may be cut short by the buffer's end: read more first
                }
                emit(&buf[c.offset..end])?;
                consumed = end;
            }
            buf.copy_within(consumed..len, 0);
            len -= consumed;
            if eof && len == 0 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 2048,
            avg: 8192,
            max: 32768,
            seed: 7,
        }
    }

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, d: &[u8], read_size: usize) -> Vec<Vec<u8>> {
        struct Slow<'a>(&'a [u8], usize);
        impl Read for Slow<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(out.len()).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let mut buf = Vec::new();
        c.chunk::<_, std::io::Error>(Slow(d, read_size), &mut buf, |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes_and_match_whole_input_cdc() {
        let c = Chunker::new(params());
        let d = data(500_000, 1);
        let whole: Vec<Vec<u8>> =
            FastCDC::with_level_and_seed(&d, 2048, 8192, 32768, Normalization::Level1, 7)
                .map(|ch| d[ch.offset..ch.offset + ch.length].to_vec())
                .collect();
        for rs in [1000, 4096, 65536, 1 << 20] {
            assert_eq!(chunks(&c, &d, rs), whole, "read size {rs}");
        }
        assert_eq!(whole.concat(), d);
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let c = Chunker::new(params());
        let d = data(400_000, 2);
        let mut e = d.clone();
        e.splice(200_000..200_000, b"INSERTED".iter().copied());
        let a = chunks(&c, &d, 1 << 16);
        let b = chunks(&c, &e, 1 << 16);
        let same = a.iter().filter(|x| b.contains(x)).count();
        assert!(same + 3 >= a.len(), "{same} of {} chunks survive", a.len());
    }

    #[test]
    fn empty_and_small_inputs() {
        let c = Chunker::new(params());
        assert!(chunks(&c, &[], 10).is_empty());
        assert_eq!(chunks(&c, b"abc", 10), vec![b"abc".to_vec()]);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn chunks_concatenate_to_the_input_within_size_bounds(len in 0usize..300_000, seed in any::<u64>(), read in 1usize..70_000) {
            let p = ChunkerParams { min: 2048, avg: 8192, max: 32768, seed };
            let c = Chunker::new(p);
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 40) as u8 }).collect();
            struct R<'a>(&'a [u8], usize);
            impl std::io::Read for R<'_> {
                fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.1.min(out.len()).min(self.0.len());
                    out[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            let mut buf = Vec::new();
            let n = c.chunk::<_, std::io::Error>(R(&data, read), &mut buf, |ch| { chunks.push(ch.to_vec()); Ok(()) }).unwrap();
            prop_assert_eq!(n as usize, len);
            for (i, ch) in chunks.iter().enumerate() {
                prop_assert!(ch.len() <= 32768);
                if i + 1 < chunks.len() { prop_assert!(ch.len() >= 2048); }
            }
            prop_assert_eq!(chunks.concat(), data);
        }
    }
}
