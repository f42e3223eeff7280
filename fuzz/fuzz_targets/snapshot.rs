//! Snapshot files: CBOR → Snapshot.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::{from_cbor, to_cbor, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = from_cbor::<Snapshot>("snapshot", data) else {
        return;
    };
    let _ = s.timestamp();
    // Floats (summary.duration_seconds) may be NaN, so compare encodings, not values.
    let enc = to_cbor(&s);
    let s2: Snapshot = from_cbor("snapshot", &enc).expect("re-decoding an encoded snapshot");
    assert_eq!(to_cbor(&s2), enc);
});
