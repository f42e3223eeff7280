//! What an authentic sealed object may contain: arbitrary encoding byte and payload (e.g.
//! hostile zstd frames written by someone holding the key). Opening must never panic and
//! never return more than MAX_PLAIN bytes.
//!
//! Input: the plaintext, encoding byte first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::{key, seal_raw};
use lifeboat_repo::crypto::{OpenError, ENC_STORED, ENC_ZSTD, MAX_PLAIN};
use lifeboat_repo::format::aad;

fuzz_target!(|plain: &[u8]| {
    let sealed = seal_raw(aad::INDEX, plain);
    let r = key().open(aad::INDEX, &sealed);
    match plain.first() {
        None => assert_eq!(r, Err(OpenError::TooShort(sealed.len()))),
        Some(&ENC_STORED) => assert_eq!(r.as_deref(), Ok(&plain[1..])),
        Some(&ENC_ZSTD) => match r {
            Ok(out) => assert!(out.len() <= MAX_PLAIN),
            Err(e) => assert!(matches!(e, OpenError::Decompress(_)), "{e:?}"),
        },
        Some(&other) => assert_eq!(r, Err(OpenError::UnknownEncoding(other))),
    }
});
