//! Prune's condemned-pack records (JSON, unsealed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::prune::Condemned;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = serde_json::from_slice::<Condemned>(data) else {
        return;
    };
    let enc = serde_json::to_vec(&c).expect("encoding a record");
    let back: Condemned = serde_json::from_slice(&enc).expect("re-decoding a record");
    assert_eq!(back.packs, c.packs);
});
