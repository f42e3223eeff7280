//! Tree blobs: CBOR → Tree, validated (restore trusts validated names).
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::{from_cbor, to_cbor, NodeKind, Tree};

fuzz_target!(|data: &[u8]| {
    let raw = from_cbor::<Tree>("tree", data);
    let decoded = Tree::decode(data);
    // decode = from_cbor + validate.
    assert_eq!(
        decoded.is_ok(),
        raw.as_ref().is_ok_and(|t| t.validate().is_ok())
    );
    let Ok(t) = decoded else {
        return;
    };
    assert_eq!(Tree::decode(&to_cbor(&t)).as_ref(), Ok(&t));
    let mut prev: Option<&[u8]> = None;
    for n in &t.nodes {
        let _ = n.display_name();
        assert!(!n.name.is_empty() && n.name != b"." && n.name != b"..");
        assert!(!n.name.contains(&b'/') && !n.name.contains(&0));
        assert!(prev.is_none_or(|p| p < n.name.as_slice()));
        assert_eq!(matches!(n.kind, NodeKind::Dir), n.subtree.is_some());
        // A delta only on a plain file, its counts adding up (restore relies on both).
        if let Some(d) = &n.delta {
            assert!(matches!(n.kind, NodeKind::File) && !n.sparse);
            assert!(d.validate(n.content.len(), n.size).is_ok());
        }
        prev = Some(&n.name);
    }
});
