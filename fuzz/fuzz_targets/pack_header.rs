//! Pack header read path: trailer → header range → open sealed header → CBOR → validate.
//!
//! Input: u64 LE data-area length, u32 LE fake trailer, then CBOR bytes of a header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::{key, seal_raw, take_u64};
use lifeboat_repo::format::{
    aad, from_cbor, pack_header_range, to_cbor, validate_pack_header, PackHeader,
    MAX_PACK_HEADER, PACK_TRAILER,
};

fuzz_target!(|data: &[u8]| {
    let (data_len, rest) = take_u64(data);
    let (trailer, cbor) = rest.split_at(rest.len().min(4));

    // 1. An arbitrary trailer on a pack of arbitrary length.
    if let Ok((start, hlen)) = pack_header_range(data_len, trailer) {
        assert!(hlen as usize <= MAX_PACK_HEADER);
        assert_eq!(start + hlen + PACK_TRAILER as u64, data_len);
    }

    // 2. The plaintext header on its own.
    let header = from_cbor::<PackHeader>("pack header", cbor);
    if let Ok(h) = &header {
        assert_eq!(from_cbor::<PackHeader>("pack header", &to_cbor(h)).as_ref(), Ok(h));
        if validate_pack_header(h, data_len).is_ok() {
            let mut end = 0u64;
            for e in h {
                assert!(e.length > 0 && u64::from(e.offset) >= end);
                end = u64::from(e.offset) + u64::from(e.length);
                assert!(end <= data_len);
            }
        }
    }

    // 3. The whole read path on a pack laid out as the writer does: data area, sealed
    //    header, u32 LE header length. Only the data area's length matters, so it is not
    //    materialised.
    let mut plain = vec![0u8]; // encoding byte: stored
    plain.extend_from_slice(cbor);
    let sealed = seal_raw(aad::PACK_HEADER, &plain);
    let Some(pack_len) = data_len.checked_add(sealed.len() as u64 + PACK_TRAILER as u64) else {
        return;
    };
    let trailer = (sealed.len() as u32).to_le_bytes();
    let (start, hlen) = pack_header_range(pack_len, &trailer).expect("writer-made trailer");
    assert_eq!((start, hlen), (data_len, sealed.len() as u64));
    let opened = key().open(aad::PACK_HEADER, &sealed).expect("authentic header");
    assert_eq!(opened, cbor);
    let again = from_cbor::<PackHeader>("pack header", &opened);
    assert_eq!(again, header);
    if let Ok(h) = again {
        let _ = validate_pack_header(&h, start);
    }
});
