//! Prints the worked example of docs/format/README.md: a tiny pack holding one data blob
//! (`hello\n`, stored), sealed with the fuzz key [0x11; 32] / id key [0x22; 32] and the
//! fixed nonce 07 × 12 (real writers use random nonces), plus the CBOR of the header.
//! Built by `cargo fuzz build`; run target/.../release/format_example

use lifeboat_fuzz::{key, seal_raw};
use lifeboat_repo::format::{
    aad, from_cbor, pack_header_range, to_cbor, validate_pack_header, BlobKind, PackEntry,
    PackHeader,
};

fn dump(label: &str, base: usize, bytes: &[u8]) {
    println!("{label}");
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        println!("  {:08x}  {}", base + i * 16, hex.join(" "));
    }
}

fn main() {
    let k = key();
    let data = b"hello\n";
    let id = k.blob_id(data);
    let mut plain = vec![0u8];
    plain.extend_from_slice(data);
    let blob = seal_raw(&aad::blob(BlobKind::Data, &id), &plain);
    let entries = vec![PackEntry {
        kind: BlobKind::Data,
        id,
        offset: 0,
        length: blob.len() as u32,
        raw_len: data.len() as u32,
    }];
    let cbor = to_cbor(&entries);
    let mut hplain = vec![0u8];
    hplain.extend_from_slice(&cbor);
    let header = seal_raw(aad::PACK_HEADER, &hplain);
    let mut pack = blob.clone();
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());

    println!("blob id (keyed BLAKE3) = {id}");
    println!("blob AAD = {}", hex::encode(aad::blob(BlobKind::Data, &id)));
    dump("header CBOR (plaintext after the encoding byte):", 0, &cbor);
    dump("pack file:", 0, &pack);
    println!("pack size {} = blob {} + sealed header {} + trailer 4", pack.len(), blob.len(), header.len());
    println!("pack id (file name) = {}", hex::encode(blake3::hash(&pack).as_bytes()));

    // Read it back the way Repository does.
    let n = pack.len() as u64;
    let (start, len) = pack_header_range(n, &pack[pack.len() - 4..]).expect("trailer");
    let opened = k.open(aad::PACK_HEADER, &pack[start as usize..(start + len) as usize]).expect("open");
    let h: PackHeader = from_cbor("pack header", &opened).expect("cbor");
    validate_pack_header(&h, start).expect("valid");
    let b = k.open(&aad::blob(h[0].kind, &h[0].id), &pack[..h[0].length as usize]).expect("blob");
    assert_eq!(b, data);
    assert_eq!(k.blob_id(&b), h[0].id);
    println!("read back OK");
}
