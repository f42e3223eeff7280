//! Shared helpers of the fuzz targets: a fixed repository key, a raw sealer that lets a
//! target choose the plaintext of an *authentic* sealed object (encoding byte included), and
//! the Argon2 cost budget under which the key-file target unwraps.
//!
//! Nothing here is used by Lifeboat itself.

use std::sync::OnceLock;

use lifeboat_repo::crypto::{KeyMaterial, MasterKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// The fixed AES-256-GCM key of the fuzz repository.
pub const ENC_KEY: [u8; 32] = [0x11; 32];
/// The fixed blob-id key of the fuzz repository.
pub const ID_KEY: [u8; 32] = [0x22; 32];
/// The password the key-file target tries.
pub const PASSWORD: &[u8] = b"fuzz-password";

/// Largest Argon2 memory cost (KiB) the key-file target will actually run. `KeyFile::decode`
/// accepts up to 4 GiB × 64 passes, far beyond a fuzzer's time and memory budget.
pub const FUZZ_MAX_M_COST: u32 = 1024;
/// Largest Argon2 pass count the key-file target will actually run.
pub const FUZZ_MAX_T_COST: u32 = 2;

/// The fuzz repository's master key.
pub fn key() -> &'static MasterKey {
    static K: OnceLock<MasterKey> = OnceLock::new();
    K.get_or_init(|| {
        MasterKey::new(KeyMaterial {
            enc: ENC_KEY,
            id: ID_KEY,
        })
    })
}

/// Another key (same id key, different encryption key).
pub fn other_key() -> &'static MasterKey {
    static K: OnceLock<MasterKey> = OnceLock::new();
    K.get_or_init(|| {
        MasterKey::new(KeyMaterial {
            enc: [0x33; 32],
            id: ID_KEY,
        })
    })
}

/// Seals `plaintext` (which must already start with the encoding byte) under [`ENC_KEY`]
/// exactly as `MasterKey` lays sealed bytes out: nonce (12) || ciphertext || tag (16).
pub fn seal_raw(aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    #[allow(clippy::unwrap_used)]
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &ENC_KEY).unwrap());
    let nonce = [7u8; 12];
    let mut body = plaintext.to_vec();
    #[allow(clippy::unwrap_used)]
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Splits a little-endian u64 off the front of `data` (missing bytes are zero).
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(b), &data[n..])
}
