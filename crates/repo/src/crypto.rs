//! Sealing: zstd compression with an incompressibility probe, then AES-256-GCM.
//!
//! Lives here: [`MasterKey`] (the random per-repository keys), [`MasterKey::seal`] /
//! [`MasterKey::open`], keyed BLAKE3 blob ids, and the compression probe.
//! Never here: storage I/O, file layout, or anything that could log key material.
//!
//! Sealed bytes are `nonce (12) || ciphertext || tag (16)`; the plaintext starts with one
//! byte that says how the rest is encoded (0 = stored, 1 = zstd). See docs/format/.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use lifeboat_types::BlobId;

/// Bytes added by sealing (nonce, encoding byte, tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 1 + 16;

/// Encoding byte: the payload is stored as is.
pub const ENC_STORED: u8 = 0;
/// Encoding byte: the payload is one zstd frame.
pub const ENC_ZSTD: u8 = 1;

/// Blobs smaller than this are compressed without probing first.
const PROBE_MIN: usize = 64 * 1024;
/// Size of the sample compressed to decide whether a large blob is compressible.
const PROBE_LEN: usize = 16 * 1024;

/// Upper bound on a decompressed payload; anything larger is treated as damage, never
/// allocated.
pub const MAX_PLAIN: usize = 64 << 20;

/// The secret material of a repository: an encryption key and a key for blob ids. Random,
/// created by `init`, stored only wrapped by password-derived keys.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    /// AES-256-GCM key.
    #[serde(with = "serde_bytes")]
    pub enc: [u8; 32],
    /// BLAKE3 key for blob ids (shared by repositories that copy between each other).
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(***)")
    }
}

impl KeyMaterial {
    /// Fresh random key material.
    ///
    /// # Errors
    /// When the system random generator fails.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let mut m = KeyMaterial {
            enc: [0; 32],
            id: [0; 32],
        };
        rng.fill(&mut m.enc)?;
        rng.fill(&mut m.id)?;
        Ok(m)
    }
}

/// Why unsealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Too short to be sealed bytes.
    #[error("too short to be sealed data ({0} bytes)")]
    TooShort(usize),
    /// The authentication tag does not match: damaged, or sealed with another key.
    #[error("authentication failed: the bytes were altered or sealed with another key")]
    Unauthentic,
    /// The encoding byte is unknown.
    #[error("unknown encoding {0}")]
    UnknownEncoding(u8),
    /// The zstd payload does not decompress.
    #[error("corrupt compressed payload: {0}")]
    Decompress(String),
}

/// A repository's keys, ready to seal and open.
pub struct MasterKey {
    material: KeyMaterial,
    aead: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Makes a key from its material.
    pub fn new(material: KeyMaterial) -> Self {
        // 32 bytes is always a valid AES-256 key length.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, &material.enc).expect("32-byte AES-256 key");
        MasterKey {
            material,
            aead: LessSafeKey::new(unbound),
        }
    }

    /// The key material (to wrap it in a key file or share the id key with a copy target).
    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    /// The id of a blob: BLAKE3 of its plaintext, keyed with the repository's id key.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.material.id, data).as_bytes())
    }

    /// A keyed BLAKE3 hasher giving the same result as [`MasterKey::blob_id`] over the
    /// bytes fed to it, for data that arrives in pieces.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.material.id)
    }

    /// Starts a sealed buffer whose payload the caller appends in steps (a WAL piece
    /// compressed while it is read); [`SealBuilder::finish`] encrypts it. `capacity` is the
    /// expected payload size (reserved, touched only as written).
    pub fn seal_builder(&self, capacity: usize) -> SealBuilder {
        let mut buf = Vec::with_capacity(capacity + SEAL_OVERHEAD);
        let nonce = Self::push_nonce(&mut buf);
        buf.push(ENC_ZSTD);
        SealBuilder { nonce, buf }
    }

    /// Seals `payload` as it is (no compression).
    pub fn seal_stored(&self, aad: &[u8], payload: &[u8]) -> Vec<u8> {
        self.seal_encoded(aad, ENC_STORED, payload)
    }

    /// Compresses `data` with zstd at `level` when that pays (probing large inputs first),
    /// then seals it. `compressor` is reused across calls for speed.
    pub fn seal_compressed(&self, aad: &[u8], data: &[u8], compressor: &mut Compressor) -> Vec<u8> {
        self.seal_compressed_into(aad, data, compressor, Vec::new())
    }

    /// Like [`MasterKey::seal_compressed`], reusing the allocation of `out` (its contents are
    /// discarded): the write pipeline recycles large buffers instead of mapping fresh pages.
    pub fn seal_compressed_into(
        &self,
        aad: &[u8],
        data: &[u8],
        compressor: &mut Compressor,
        mut out: Vec<u8>,
    ) -> Vec<u8> {
        // Compress straight into the sealed buffer: one copy of the data fewer per blob.
        out.clear();
        out.reserve(data.len() + SEAL_OVERHEAD);
        let nonce = Self::push_nonce(&mut out);
        out.push(ENC_ZSTD);
        if !compressor.compress_into(data, &mut out) {
            out.truncate(NONCE_LEN);
            out.push(ENC_STORED);
            out.extend_from_slice(data);
        }
        self.seal_tail(aad, nonce, out)
    }

    fn push_nonce(out: &mut Vec<u8>) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 96-bit nonces from the thread-local CSPRNG (ChaCha12, seeded and reseeded
        // from the OS): one getrandom syscall per blob cost ~4 % of a backup's time.
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        out.extend_from_slice(&nonce);
        nonce
    }

    fn seal_encoded(&self, aad: &[u8], enc: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        let nonce = Self::push_nonce(&mut out);
        out.push(enc);
        out.extend_from_slice(payload);
        self.seal_tail(aad, nonce, out)
    }

    /// Encrypts `out[NONCE_LEN..]` (encoding byte and payload) in place and appends the tag.
    fn seal_tail(&self, aad: &[u8], nonce: [u8; NONCE_LEN], mut out: Vec<u8>) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM sealing of in-memory data");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens sealed bytes, checks their authenticity and decompresses them.
    ///
    /// # Errors
    /// [`OpenError`] when the bytes are damaged, were sealed with another key or `aad`, or
    /// decompress to more than [`MAX_PLAIN`] bytes.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        self.open_in_place(aad, &mut buf)
    }

    /// Like [`MasterKey::open`], consuming a buffer the caller owns (saves a copy).
    ///
    /// # Errors
    /// As [`MasterKey::open`].
    pub fn open_in_place(&self, aad: &[u8], sealed: &mut Vec<u8>) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort(sealed.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let plain_len = self
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| OpenError::Unauthentic)?
            .len();
        let enc = sealed[NONCE_LEN];
        let payload = &sealed[NONCE_LEN + 1..NONCE_LEN + plain_len];
        match enc {
            ENC_STORED => {
                sealed.truncate(NONCE_LEN + plain_len);
                sealed.drain(..NONCE_LEN + 1);
                Ok(std::mem::take(sealed))
            }
            ENC_ZSTD => decompress(payload),
            other => Err(OpenError::UnknownEncoding(other)),
        }
    }
}

impl MasterKey {
    /// Opens sealed bytes in place (`sealed` is overwritten) and puts the plaintext into
    /// `out` (cleared first), reusing both buffers: no allocation per blob once `out` has
    /// grown, which saves restore and check a page fault storm.
    ///
    /// # Errors
    /// As [`MasterKey::open`].
    pub fn open_to(
        &self,
        aad: &[u8],
        sealed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        out.clear();
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort(sealed.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let plain = self
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| OpenError::Unauthentic)?;
        let (enc, payload) = match plain.split_first() {
            Some((e, p)) => (*e, p),
            None => return Err(OpenError::TooShort(0)),
        };
        match enc {
            ENC_STORED => {
                out.extend_from_slice(payload);
                Ok(())
            }
            ENC_ZSTD => decompress_into(payload, out),
            other => Err(OpenError::UnknownEncoding(other)),
        }
    }
}

/// Like [`decompress`], into a reused buffer.
fn decompress_into(payload: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
    let size = zstd::zstd_safe::get_frame_content_size(payload)
        .map_err(|_| OpenError::Decompress("not a zstd frame".into()))?;
    match zstd::zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => {}
        _ => return Err(OpenError::Decompress("not exactly one zstd frame".into())),
    }
    let n = match size {
        Some(n) if n as usize <= MAX_PLAIN => n as usize,
        Some(n) => return Err(OpenError::Decompress(format!("frame claims {n} bytes"))),
        None => return Err(OpenError::Decompress("frame without content size".into())),
    };
    out.reserve(n);
    // One decompression context per thread: creating one per blob cost ~8 % of a restore.
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let written = DCTX
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            match slot.as_mut() {
                Some(d) => d.decompress_to_buffer(payload, out),
                None => Err(std::io::Error::other("no zstd context")),
            }
        })
        .map_err(|e| OpenError::Decompress(e.to_string()))?;
    if written != n || out.len() != n {
        return Err(OpenError::Decompress("frame size mismatch".into()));
    }
    Ok(())
}

/// Decompresses exactly one zstd frame, refusing frames that claim more than
/// [`MAX_PLAIN`] bytes and payloads with anything after the frame (a second frame would
/// otherwise be decoded without a size limit).
fn decompress(payload: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut out = Vec::new();
    decompress_into(payload, &mut out)?;
    Ok(out)
}

/// A sealed buffer built in steps (see [`MasterKey::seal_builder`]): nonce and encoding
/// byte first, then the payload the caller appends, encrypted in place by `finish`.
#[derive(Debug)]
pub struct SealBuilder {
    nonce: [u8; NONCE_LEN],
    buf: Vec<u8>,
}

impl SealBuilder {
    /// The buffer the zstd-compressed payload is appended to (its first bytes are the
    /// nonce and the encoding byte: append only).
    pub fn compressed_payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes of payload appended so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - NONCE_LEN - 1
    }

    /// Drops the payload appended so far and switches to storing the data as it is
    /// (compression did not pay); append the plaintext with [`SealBuilder::push_stored`].
    pub fn restart_stored(&mut self) {
        self.buf.truncate(NONCE_LEN);
        self.buf.push(ENC_STORED);
    }

    /// Appends plaintext after [`SealBuilder::restart_stored`].
    pub fn push_stored(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Encrypts the payload with `key` under `aad` and returns the sealed bytes.
    pub fn finish(self, key: &MasterKey, aad: &[u8]) -> Vec<u8> {
        key.seal_tail(aad, self.nonce, self.buf)
    }
}

/// One zstd frame being written in steps by [`Compressor::begin_frame`].
pub struct FrameWriter<'a> {
    cctx: &'a mut zstd::zstd_safe::CCtx<'static>,
    out: &'a mut Vec<u8>,
}

impl FrameWriter<'_> {
    /// Compresses `data` into the frame.
    ///
    /// # Errors
    /// A zstd error (as `std::io::Error`).
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut input = zstd::zstd_safe::InBuffer::around(data);
        while input.pos() < data.len() {
            self.step(
                &mut input,
                zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
            )?;
        }
        Ok(())
    }

    /// Ends the frame.
    ///
    /// # Errors
    /// A zstd error (as `std::io::Error`).
    pub fn finish(mut self) -> std::io::Result<()> {
        let mut input = zstd::zstd_safe::InBuffer::around(&[]);
        while self.step(
            &mut input,
            zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
        )? != 0
        {}
        Ok(())
    }

    fn step(
        &mut self,
        input: &mut zstd::zstd_safe::InBuffer<'_>,
        op: zstd::zstd_safe::zstd_sys::ZSTD_EndDirective,
    ) -> std::io::Result<usize> {
        // Room for at least one block of output.
        if self.out.capacity() - self.out.len() < zstd::zstd_safe::CCtx::out_size() {
            self.out.reserve(zstd::zstd_safe::CCtx::out_size());
        }
        let pos = self.out.len();
        let mut output = zstd::zstd_safe::OutBuffer::around_pos(&mut *self.out, pos);
        self.cctx
            .compress_stream2(&mut output, input, op)
            .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))
    }
}

/// A reusable zstd compressor with the incompressibility probe.
pub struct Compressor {
    inner: zstd::bulk::Compressor<'static>,
    level: i32,
}

impl Compressor {
    /// A compressor at zstd `level` (0 disables compression; negative levels are zstd's
    /// fast modes).
    ///
    /// # Errors
    /// When zstd cannot allocate its context.
    pub fn new(level: i32) -> std::io::Result<Self> {
        // Negative levels are zstd's fast modes; 0 (off) still needs a valid context.
        let mut inner = zstd::bulk::Compressor::new(if level < 0 { level } else { level.max(1) })?;
        inner.include_contentsize(true)?;
        inner.include_checksum(false)?;
        Ok(Compressor { inner, level })
    }

    /// A compressor at a fast (negative) zstd `level` that still entropy-codes literals:
    /// zstd's fast modes skip Huffman coding of literals, which on WAL (mostly literals)
    /// doubles the output; forcing it back keeps most of level 1's ratio at a fraction of
    /// its match-finding cost (docs/decisions/0013-wal-objects.md).
    ///
    /// # Errors
    /// When zstd cannot allocate its context.
    pub fn fast_with_literals(level: i32) -> std::io::Result<Self> {
        let mut c = Self::new(level)?;
        c.inner
            .set_parameter(zstd::zstd_safe::CParameter::LiteralCompressionMode(
                zstd::zstd_safe::ParamSwitch::Enable,
            ))?;
        Ok(c)
    }

    /// Starts one zstd frame of exactly `len` bytes, appended to `out` as data is written
    /// to the returned writer: the input need not be in memory at once (a WAL piece is
    /// compressed from small reads, not from a 4 MiB buffer mapped fresh for each call).
    ///
    /// # Errors
    /// A zstd error (as `std::io::Error`).
    pub fn begin_frame<'a>(
        &'a mut self,
        len: u64,
        out: &'a mut Vec<u8>,
    ) -> std::io::Result<FrameWriter<'a>> {
        let cctx = self.inner.context_mut();
        cctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
            .and_then(|_| cctx.set_pledged_src_size(Some(len)))
            .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
        Ok(FrameWriter { cctx, out })
    }

    /// Appends the compressed `data` to `out` and returns `true`, or appends nothing and
    /// returns `false` when storing it as is is better (same rules as
    /// [`Compressor::compress`]).
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        if self.level == 0 || data.len() < 64 {
            return false;
        }
        if data.len() >= PROBE_MIN {
            let start = (data.len() / 2).saturating_sub(PROBE_LEN / 2);
            let sample = &data[start..start + PROBE_LEN];
            match self.inner.compress(sample) {
                Ok(z) if z.len() * 100 <= sample.len() * 97 => {}
                _ => return false,
            }
        }
        let before = out.len();
        // Room for a frame no larger than the input; anything bigger is not worth keeping.
        out.reserve(data.len());
        // A cursor at the end: zstd writes after what `out` already holds.
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(before as u64);
        match self.inner.compress_to_buffer(data, &mut cursor) {
            Ok(n) if n + 8 < data.len() => true,
            _ => {
                out.truncate(before);
                false
            }
        }
    }

    /// Compresses `data`, or returns `None` when storing it as is is better (compression
    /// disabled, the probe says incompressible, or the result would not be smaller).
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if self.level == 0 || data.len() < 64 {
            return None;
        }
        if data.len() >= PROBE_MIN {
            let start = (data.len() / 2).saturating_sub(PROBE_LEN / 2);
            let sample = &data[start..start + PROBE_LEN];
            let z = self.inner.compress(sample).ok()?;
            // Less than 3 % saving on the sample: store as is.
            if z.len() * 100 > sample.len() * 97 {
                return None;
            }
        }
        let z = self.inner.compress(data).ok()?;
        if z.len() + 8 >= data.len() {
            None
        } else {
            Some(z)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::new(KeyMaterial::random().unwrap())
    }

    #[test]
    fn seal_open_roundtrip_compressible_and_not() {
        let k = key();
        let mut c = Compressor::new(1).unwrap();
        let text = b"order 1234 paid; ".repeat(10_000);
        let sealed = k.seal_compressed(b"blob", &text, &mut c);
        assert!(sealed.len() < text.len() / 10, "text must compress");
        assert_eq!(k.open(b"blob", &sealed).unwrap(), text);

        let mut noise = vec![0u8; 200_000];
        SystemRandom::new().fill(&mut noise).unwrap();
        let sealed = k.seal_compressed(b"blob", &noise, &mut c);
        assert_eq!(
            sealed.len(),
            noise.len() + SEAL_OVERHEAD,
            "noise stored as is"
        );
        assert_eq!(k.open(b"blob", &sealed).unwrap(), noise);
    }

    #[test]
    fn any_flipped_bit_or_wrong_aad_or_key_is_refused() {
        let k = key();
        let sealed = k.seal_stored(b"a", b"payload");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert_eq!(k.open(b"a", &bad), Err(OpenError::Unauthentic), "byte {i}");
        }
        assert_eq!(k.open(b"b", &sealed), Err(OpenError::Unauthentic));
        assert_eq!(key().open(b"a", &sealed), Err(OpenError::Unauthentic));
        assert!(matches!(
            k.open(b"a", &sealed[..10]),
            Err(OpenError::TooShort(10))
        ));
    }

    #[test]
    fn open_to_matches_open_and_refuses_the_same_damage() {
        let k = key();
        let mut c = Compressor::new(2).unwrap();
        let mut out = Vec::new();
        for data in [b"order ".repeat(50_000), vec![7u8; 10], Vec::new()] {
            let sealed = k.seal_compressed(b"a", &data, &mut c);
            let mut buf = sealed.clone();
            k.open_to(b"a", &mut buf, &mut out).unwrap();
            assert_eq!(out, data);
            let mut bad = sealed.clone();
            bad[20] ^= 1;
            assert_eq!(
                k.open_to(b"a", &mut bad, &mut out),
                Err(OpenError::Unauthentic)
            );
        }
    }

    #[test]
    fn a_second_zstd_frame_is_refused_not_decoded() {
        // Fuzzing finding: only the first frame's size was checked, then every frame decoded.
        let k = key();
        let mut payload = zstd::bulk::compress(b"a", 1).unwrap();
        payload.extend(zstd::bulk::compress(&vec![0u8; 1 << 20], 1).unwrap());
        let sealed = k.seal_encoded(b"x", ENC_ZSTD, &payload);
        assert!(matches!(
            k.open(b"x", &sealed),
            Err(OpenError::Decompress(_))
        ));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let (a, b) = (key(), key());
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = key();
        let s = format!("{k:?} {:?}", k.material());
        assert!(!s.contains(&hex::encode(k.material().enc)));
        assert!(s.contains("***"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn seal_open_roundtrips_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200_000), level in 0i32..4) {
            let k = MasterKey::new(KeyMaterial::random().unwrap());
            let mut c = Compressor::new(level).unwrap();
            let sealed = k.seal_compressed(b"x", &data, &mut c);
            prop_assert!(sealed.len() <= data.len() + SEAL_OVERHEAD, "never larger than stored");
            prop_assert_eq!(k.open(b"x", &sealed).unwrap(), data);
        }
    }
}
