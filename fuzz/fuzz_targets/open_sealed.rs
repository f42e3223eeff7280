//! Opening arbitrary bytes as a sealed object with a fixed key, for every kind of AAD.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::key;
use lifeboat_repo::crypto::{OpenError, MAX_PLAIN, SEAL_OVERHEAD};
use lifeboat_repo::format::{aad, BlobKind};
use lifeboat_types::BlobId;

fuzz_target!(|data: &[u8]| {
    let Some((&which, sealed)) = data.split_first() else {
        return;
    };
    let blob_aad;
    let a: &[u8] = match which % 7 {
        0 => aad::CONFIG,
        1 => aad::INDEX,
        2 => aad::SNAPSHOT,
        3 => aad::PACK_HEADER,
        4 => aad::KEY,
        5 => {
            blob_aad = aad::blob(BlobKind::Data, &BlobId([0; 32]));
            &blob_aad
        }
        _ => {
            blob_aad = aad::blob(BlobKind::Tree, &BlobId([0; 32]));
            &blob_aad
        }
    };
    match key().open(a, sealed) {
        Ok(plain) => assert!(plain.len() <= MAX_PLAIN),
        Err(OpenError::TooShort(n)) => assert!(n < SEAL_OVERHEAD && n == sealed.len()),
        Err(_) => assert!(sealed.len() >= SEAL_OVERHEAD),
    }
    let mut buf = sealed.to_vec();
    let _ = key().open_in_place(a, &mut buf);
});
