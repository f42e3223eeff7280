//! Index files: CBOR → IndexFile, then building the in-memory index from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::{from_cbor, to_cbor, IndexFile};
use lifeboat_repo::Index;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = from_cbor::<IndexFile>("index", data) else {
        return;
    };
    assert_eq!(from_cbor::<IndexFile>("index", &to_cbor(&f)).as_ref(), Ok(&f));
    let mut index = Index::new();
    // Avoid the first pack, to exercise the preference logic too.
    index.avoid_packs(f.packs.first().map(|p| p.id));
    index.add_file(None, &f);
    for p in &f.packs {
        for b in &p.blobs {
            assert!(index.get(&b.id).is_some());
        }
    }
});
