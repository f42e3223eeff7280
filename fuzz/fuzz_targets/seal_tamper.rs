//! Seal valid data (stored or zstd), then damage it: every damage must be refused, never
//! panic, and the undamaged object must open to the original payload.
//!
//! Input: op (1), level (1), position (4, LE), mask (1), payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::{key, other_key};
use lifeboat_repo::crypto::{Compressor, OpenError, SEAL_OVERHEAD};
use lifeboat_repo::format::aad;

fuzz_target!(|data: &[u8]| {
    let Some((head, payload)) = data.split_first_chunk::<7>() else {
        return;
    };
    let [op, level, p0, p1, p2, p3, mask] = *head;
    let pos = u32::from_le_bytes([p0, p1, p2, p3]) as usize;
    let mask = if mask == 0 { 1 } else { mask };
    let k = key();
    let sealed = if level % 4 == 0 {
        k.seal_stored(aad::SNAPSHOT, payload)
    } else {
        let mut c = Compressor::new(i32::from(level % 4)).expect("zstd context");
        k.seal_compressed(aad::SNAPSHOT, payload, &mut c)
    };
    assert_eq!(k.open(aad::SNAPSHOT, &sealed).as_deref(), Ok(payload));

    let mut bad = sealed.clone();
    let result = match op % 7 {
        0 => {
            let i = pos % bad.len();
            bad[i] ^= mask;
            k.open(aad::SNAPSHOT, &bad)
        }
        1 => {
            bad.truncate(pos % bad.len());
            let r = k.open(aad::SNAPSHOT, &bad);
            if bad.len() < SEAL_OVERHEAD {
                assert_eq!(r, Err(OpenError::TooShort(bad.len())));
            }
            r
        }
        2 => {
            bad.extend_from_slice(&head[..1 + (pos % 7)]);
            k.open(aad::SNAPSHOT, &bad)
        }
        3 => {
            bad.remove(pos % bad.len());
            k.open(aad::SNAPSHOT, &bad)
        }
        4 => k.open(aad::INDEX, &bad),
        5 => other_key().open(aad::SNAPSHOT, &bad),
        _ => {
            // Swap two different bytes.
            let (i, j) = (pos % bad.len(), (pos / 7 + usize::from(mask)) % bad.len());
            if bad[i] == bad[j] {
                return;
            }
            bad.swap(i, j);
            k.open(aad::SNAPSHOT, &bad)
        }
    };
    match result {
        Err(OpenError::TooShort(_)) | Err(OpenError::Unauthentic) => {}
        other => panic!("damaged sealed bytes were not refused as unauthentic: {other:?}"),
    }
});
