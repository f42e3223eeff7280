//! The page-delta rebuild (`lifeboat_sources::delta::Rebuild`, ADR 0016): a file stored as
//! XOR layers over an earlier version of itself, read back from a tree whose lengths and
//! blob counts an attacker (or damage) chose. `Rebuild::new` must refuse every node whose
//! lengths do not add up, never panic, and a node it accepts must read back exactly as the
//! format says (docs/format §6), whatever buffer sizes the reader uses.
#![no_main]
use std::io::Read;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::{BlobKind, Delta, DeltaLayer, Node, NodeKind};
use lifeboat_repo::{BlobWriter, Index, InitOptions, KdfParams, Repository, WriterOptions};
use lifeboat_sources::delta::Rebuild;
use lifeboat_storage::Storage;
use lifeboat_types::BlobId;

/// A memory repository holding a few blobs (runs of zeros among them: unchanged pages).
struct World {
    repo: Repository,
    index: Index,
    blobs: Vec<(BlobId, Vec<u8>)>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        #[allow(clippy::unwrap_used)]
        let repo = Repository::init(
            Storage::memory().unwrap(),
            b"fuzz",
            &InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..InitOptions::default()
            },
        )
        .unwrap();
        let pattern = |n: usize, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
        };
        let datas = vec![
            vec![0u8; 7],
            vec![0u8; 300],
            b"abcde".to_vec(),
            pattern(1000, 1),
            pattern(64, 2),
            vec![0xff],
            pattern(4096, 3),
            vec![0u8; 4096],
        ];
        #[allow(clippy::unwrap_used)]
        let index = Arc::new(repo.load_index().unwrap());
        #[allow(clippy::unwrap_used)]
        let writer = BlobWriter::new(&repo, index, &WriterOptions::default()).unwrap();
        let mut blobs = Vec::new();
        for d in datas {
            let id = repo.key().blob_id(&d);
            if writer.claim(&id) {
                #[allow(clippy::unwrap_used)]
                writer.save(BlobKind::Data, id, d.clone()).unwrap();
            }
            blobs.push((id, d));
        }
        #[allow(clippy::unwrap_used)]
        writer.finish().unwrap();
        #[allow(clippy::unwrap_used)]
        let index = repo.load_index().unwrap();
        World { repo, index, blobs }
    })
}

fn node(content: Vec<BlobId>, size: u64, delta: Option<Delta>) -> Node {
    Node {
        name: b"16384".to_vec(),
        kind: NodeKind::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_ns: 0,
        ctime: 0,
        ctime_ns: 0,
        inode: 0,
        dev: 0,
        nlink: 1,
        size,
        sparse: false,
        content,
        delta,
        subtree: None,
        xattrs: vec![],
        error: None,
    }
}

/// The file as the format defines it, computed the plain way (whole buffers, no windows).
fn model(w: &World, n: &Node) -> Vec<u8> {
    let data = |ids: &[BlobId]| -> Vec<u8> {
        ids.iter()
            .flat_map(|id| {
                w.blobs
                    .iter()
                    .find(|(b, _)| b == id)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let size = n.size as usize;
    let Some(d) = &n.delta else {
        return data(&n.content);
    };
    let (base, mut rest) = n.content.split_at(d.base_blobs as usize);
    let mut out = vec![0u8; size];
    for (o, b) in out.iter_mut().zip(data(base)) {
        *o = b;
    }
    let mut prev = d.base_len as usize;
    for l in &d.layers {
        let (ids, r) = rest.split_at(l.blobs as usize);
        rest = r;
        for o in out.iter_mut().skip(prev) {
            *o = 0;
        }
        for (o, b) in out.iter_mut().zip(data(ids)) {
            *o ^= b;
        }
        prev = l.len as usize;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let w = world();
    let mut bytes = input.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let honest = next() & 1 == 0;
    let pick = |b: u8| &w.blobs[usize::from(b) % w.blobs.len()];
    let len_of = |ids: &[BlobId]| -> u64 {
        ids.iter()
            .map(|id| w.blobs.iter().find(|(b, _)| b == id).map_or(0, |(_, d)| d.len() as u64))
            .sum()
    };
    let with_delta = next() & 1 == 0;
    let base_n = usize::from(next() % 6);
    let mut content: Vec<BlobId> = (0..base_n).map(|_| pick(next()).0).collect();
    let wild = |a: u8, b: u8| u64::from(u16::from_le_bytes([a, b]));
    let node = if with_delta {
        let base_len = if honest { len_of(&content) } else { wild(next(), next()) };
        let n_layers = usize::from(next() % 5);
        let mut layers = Vec::new();
        for _ in 0..n_layers {
            let k = usize::from(next() % 4);
            let ids: Vec<BlobId> = (0..k).map(|_| pick(next()).0).collect();
            let len = if honest { len_of(&ids) } else { wild(next(), next()) };
            content.extend_from_slice(&ids);
            layers.push(DeltaLayer { len, blobs: if honest { k as u32 } else { u32::from(next()) } });
        }
        let size = match (honest, layers.last()) {
            (true, Some(l)) => l.len,
            _ => wild(next(), next()),
        };
        node(
            content,
            size,
            Some(Delta { base_len, base_blobs: if honest { base_n as u32 } else { u32::from(next()) }, layers }),
        )
    } else {
        let size = if honest { len_of(&content) } else { wild(next(), next()) };
        node(content, size, None)
    };
    let Ok(mut rebuild) = Rebuild::new(&w.repo, &w.index, &node) else {
        return;
    };
    // Accepted: it reads back as the format says, in pieces of any size.
    let mut got = Vec::new();
    loop {
        let step = usize::from(next()).max(1) * 37;
        let mut buf = vec![0u8; step];
        match rebuild.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("an accepted node failed to read: {e}"),
        }
        assert!(got.len() as u64 <= node.size, "read past the file's size");
    }
    assert_eq!(got.len() as u64, node.size);
    assert_eq!(got, model(w, &node), "rebuild differs from the format's definition");
});
