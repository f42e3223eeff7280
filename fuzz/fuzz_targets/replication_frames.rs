//! Bytes a server (or anything posing as one) sends on a replication connection: the
//! framing, `CopyData` bodies (XLogData, keepalives), error and notice fields, data rows,
//! SASL mechanism lists (`lifeboat_postgres::replication::decode_frames`). Nothing may
//! panic, and no frame may claim more bytes than the input holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_postgres::replication::decode_frames;

fuzz_target!(|data: &[u8]| {
    let frames = decode_frames(data);
    // Every frame takes at least its 5-byte header.
    assert!(frames * 5 <= data.len());
    // The same bytes behind a valid CopyData frame header decode as well.
    let mut framed = vec![b'd'];
    framed.extend_from_slice(&(u32::try_from(data.len() + 4).unwrap_or(u32::MAX)).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = decode_frames(&framed);
});
