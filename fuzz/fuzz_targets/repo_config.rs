//! The repository config: CBOR → RepoConfig, chunker validation, and chunking with
//! parameters that passed validation (FastCDC asserts on out-of-range sizes).
#![no_main]
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::{from_cbor, to_cbor, RepoConfig};
use lifeboat_repo::Chunker;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fuzz_target!(|data: &[u8]| {
    // Input: u16 LE length n, n bytes of config CBOR, then bytes to chunk.
    let Some((len, data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (cbor, rest) = data.split_at(data.len().min(usize::from(u16::from_le_bytes(*len))));
    let Ok(c) = from_cbor::<RepoConfig>("config", cbor) else {
        return;
    };
    assert_eq!(from_cbor::<RepoConfig>("config", &to_cbor(&c)).as_ref(), Ok(&c));
    if c.chunker.validate().is_err() {
        return;
    }
    let max = c.chunker.max as usize;
    let mut total = 0usize;
    BUF.with_borrow_mut(|buf| {
        Chunker::new(c.chunker)
            .chunk(rest, buf, |chunk| {
                assert!(!chunk.is_empty() && chunk.len() <= max);
                total += chunk.len();
                Ok::<(), std::io::Error>(())
            })
            .expect("chunking a slice");
    });
    assert_eq!(total, rest.len());
});
