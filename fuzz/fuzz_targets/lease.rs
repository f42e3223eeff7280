//! Lease files (JSON, unsealed: anyone with storage access can write them).
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::lease::LeaseInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(l) = serde_json::from_slice::<LeaseInfo>(data) else {
        return;
    };
    let _ = l.describe();
    let _ = l.is_live(1.7e9);
    let enc = serde_json::to_vec(&l).expect("encoding a lease");
    let back: LeaseInfo = serde_json::from_slice(&enc).expect("re-decoding a lease");
    assert_eq!((back.kind, &back.operation, &back.hostname, back.pid), (l.kind, &l.operation, &l.hostname, l.pid));
});
