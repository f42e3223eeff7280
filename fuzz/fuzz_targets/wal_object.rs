//! WAL objects (`wal/<source>/<name>`, docs/format §13) as read from storage: arbitrary
//! bytes, and objects whose sealed header is authentic but whose content is hostile (what
//! someone holding the key could write). Decoding must never panic, and never return more
//! than the plaintext length the header claims.
//!
//! Input: first byte 0 = raw object bytes; otherwise the rest is split at the second byte:
//! the header's CBOR plaintext, then bytes appended as "pieces".
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::{key, seal_raw};
use lifeboat_repo::crypto::ENC_STORED;
use lifeboat_repo::wal::{aad_header, decode_header, decode_object, WAL_MAGIC, WAL_MAX_PLAIN};

const SOURCE: &str = "orders";
const NAME: &str = "000000010000000000000003";

fuzz_target!(|data: &[u8]| {
    let object = match data.split_first() {
        None => return,
        Some((0, raw)) => raw.to_vec(),
        Some((_, rest)) => {
            let split = rest.first().map_or(0, |b| *b as usize).min(rest.len());
            let (header, pieces) = rest.split_at(split);
            let mut plain = vec![ENC_STORED];
            plain.extend_from_slice(header);
            let sealed = seal_raw(&aad_header(SOURCE, NAME), &plain);
            let mut o = WAL_MAGIC.to_vec();
            o.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
            o.extend_from_slice(&sealed);
            o.extend_from_slice(pieces);
            o
        }
    };
    if let Ok((h, _)) = decode_header(key(), SOURCE, NAME, &object) {
        assert!(h.plain_len <= WAL_MAX_PLAIN);
        if let Ok(plain) = decode_object(key(), SOURCE, NAME, &object, 1) {
            assert_eq!(plain.len() as u64, h.plain_len);
        }
    }
});
