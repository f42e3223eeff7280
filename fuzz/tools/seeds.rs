//! Writes small valid encodings as seed corpora: `seeds corpus` (a bin built by `cargo fuzz build`)
//! creates `corpus/<target>/seed-<n>` for every fuzz target (not committed; fuzz/run.sh
//! runs this when a target's corpus directory is missing).

use std::path::Path;

use lifeboat_fuzz::{key, seal_raw, PASSWORD};
use lifeboat_repo::crypto::{Compressor, KeyMaterial};
use lifeboat_repo::format::{
    aad, to_cbor, BlobKind, ChunkerParams, Delta, DeltaLayer, IndexFile, IndexPack, Node,
    NodeKind, PackEntry, RepoConfig, Snapshot, SnapshotSummary, Tree, Xattr, FORMAT_VERSION,
};
use lifeboat_repo::keys::KeyFile;
use lifeboat_repo::lease::LeaseInfo;
use lifeboat_repo::prune::Condemned;
use lifeboat_repo::KdfParams;
use lifeboat_types::{BlobId, IndexId, PackId, SnapshotId};

fn entries() -> Vec<PackEntry> {
    vec![
        PackEntry { kind: BlobKind::Data, id: BlobId([1; 32]), offset: 0, length: 40, raw_len: 11 },
        PackEntry { kind: BlobKind::Tree, id: BlobId([2; 32]), offset: 40, length: 100, raw_len: 71 },
    ]
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        subtree: matches!(kind, NodeKind::Dir).then_some(BlobId([7; 32])),
        kind,
        mode: 0o4755,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        mtime_ns: 123_456_789,
        ctime: 1_700_000_001,
        ctime_ns: 1,
        inode: 42,
        dev: 2049,
        nlink: 1,
        size: 3,
        sparse: false,
        content: vec![],
        delta: None,
        xattrs: vec![],
        error: None,
    }
}

fn tree() -> Tree {
    let mut file = node(b"a\xff\xfe", NodeKind::File);
    file.content = vec![BlobId([1; 32]), BlobId([3; 32])];
    file.sparse = true;
    file.xattrs = vec![Xattr { name: b"user.k".to_vec(), value: vec![0, 255] }];
    // A table file stored as two XOR layers over its base (ADR 0016).
    let mut layered = node(b"16384", NodeKind::File);
    layered.content = vec![BlobId([1; 32]), BlobId([3; 32]), BlobId([4; 32]), BlobId([5; 32])];
    layered.size = 24_576;
    layered.delta = Some(Delta {
        base_len: 16_384,
        base_blobs: 2,
        layers: vec![
            DeltaLayer { len: 8_192, blobs: 1 },
            DeltaLayer { len: 24_576, blobs: 1 },
        ],
    });
    let mut broken = node(b"broken", NodeKind::File);
    broken.error = Some("permission denied".into());
    Tree {
        nodes: vec![
            layered,
            file,
            node(b"b", NodeKind::Dir),
            node(b"blk", NodeKind::BlockDev { rdev: 0x0801 }),
            broken,
            node(b"c", NodeKind::Symlink { target: b"../t\x80".to_vec() }),
            node(b"chr", NodeKind::CharDev { rdev: 0x0103 }),
            node(b"fifo", NodeKind::Fifo),
            node(b"sock", NodeKind::Socket),
        ],
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        time: "2026-01-02T03:04:05.123456789Z".into(),
        tree: BlobId([9; 32]),
        paths: vec!["/home".into(), "/etc".into()],
        hostname: "h".into(),
        username: "u".into(),
        tags: vec!["daily".into()],
        parent: Some(SnapshotId([5; 32])),
        partial: true,
        original: None,
        summary: SnapshotSummary { files: 3, started: "2026-01-02T03:04:05Z".into(), duration_seconds: 1.5, ..Default::default() },
        postgres: None,
    }
}

/// A PostgreSQL base backup's snapshot (the optional `postgres` map present).
fn pg_snapshot() -> Snapshot {
    Snapshot {
        postgres: Some(lifeboat_repo::format::PgBackupInfo {
            source: "orders".into(),
            system_id: "7442000000000000001".into(),
            server_version: 150018,
            timeline: 2,
            start_lsn: lifeboat_types::Lsn(0x300_0028),
            stop_lsn: lifeboat_types::Lsn(0x300_0100),
            start_time: "2026-01-02T03:04:05Z".into(),
            stop_time: "2026-01-02T03:04:06Z".into(),
            segment_size: 16 << 20,
            data_dir: "/var/lib/postgresql/15/main".into(),
            backup_label: "START WAL LOCATION: 0/3000028\nSTART TIMELINE: 2\n".into(),
            tablespace_map: String::new(),
        }),
        ..snapshot()
    }
}

fn config() -> RepoConfig {
    RepoConfig {
        version: FORMAT_VERSION,
        id: "00".repeat(32),
        chunker: ChunkerParams { min: 64, avg: 256, max: 1024, seed: 7 },
        compression: 1,
        pack_size: 16 << 20,
    }
}

fn write(root: &Path, target: &str, seeds: Vec<Vec<u8>>) -> std::io::Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s)?;
    }
    Ok(())
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let root = Path::new(&root);

    let header = to_cbor(&entries());
    write(root, "pack_header", vec![
        cat(&[&140u64.to_le_bytes(), &(header.len() as u32).to_le_bytes(), &header]),
        cat(&[&0u64.to_le_bytes(), &[0; 4], &to_cbor(&Vec::<PackEntry>::new())]),
    ])?;

    let index = IndexFile {
        packs: vec![IndexPack { id: PackId([4; 32]), size: 200, blobs: entries() }],
        supersedes: vec![IndexId([6; 32])],
    };
    write(root, "index_file", vec![to_cbor(&index), to_cbor(&IndexFile::default())])?;
    write(root, "snapshot", vec![to_cbor(&snapshot()), to_cbor(&pg_snapshot())])?;
    write(root, "tree", vec![to_cbor(&tree()), to_cbor(&Tree::default())])?;

    let material = KeyMaterial { enc: [0xaa; 32], id: [0xbb; 32] };
    let kf = KeyFile::wrap(&material, PASSWORD, KdfParams::insecure_for_tests(), "h", "u")?;
    let other = KeyFile::wrap(&material, b"other", KdfParams::insecure_for_tests(), "h", "u")?;
    write(root, "key_file", vec![kf.encode(), other.encode()])?;

    let cfg = to_cbor(&config());
    write(root, "repo_config", vec![cat(&[&(cfg.len() as u16).to_le_bytes(), &cfg, &[0x5a; 3000]])])?;

    let k = key();
    let mut c = Compressor::new(3)?;
    let text = b"lifeboat ".repeat(50);
    write(root, "open_sealed", vec![
        cat(&[&[0], &k.seal_stored(aad::CONFIG, &cfg)]),
        cat(&[&[1], &k.seal_compressed(aad::INDEX, &to_cbor(&index), &mut c)]),
        cat(&[&[2], &k.seal_compressed(aad::SNAPSHOT, &text, &mut c)]),
        cat(&[&[3], &k.seal_stored(aad::PACK_HEADER, &header)]),
    ])?;
    write(root, "seal_tamper", vec![
        cat(&[&[0, 0, 5, 0, 0, 0, 0x80], b"payload"]),
        cat(&[&[1, 1, 40, 0, 0, 0, 1], &text]),
        cat(&[&[6, 3, 9, 1, 0, 0, 3], &text]),
    ])?;
    let z = zstd::bulk::compress(&text, 3)?;
    write(root, "open_authentic", vec![
        cat(&[&[0], b"stored"]),
        cat(&[&[1], &z]),
        cat(&[&[1], &z, &z]),
        cat(&[&[1], &zstd::bulk::compress(&[0u8; 100_000], 3)?]),
        seal_raw(b"x", b"\x01")[..1].to_vec(),
    ])?;

    // Built from JSON so that fields added later (optional ones) need no change here.
    let lease: LeaseInfo = serde_json::from_str(
        r#"{"kind":"write","operation":"backup","hostname":"h","pid":4242,"created":1.7e9,"refreshed":1700000200.5,"ttl_s":600.0}"#,
    )?;
    write(root, "lease", vec![serde_json::to_vec(&lease)?])?;
    let rec = Condemned { created: 1.7e9, packs: vec![PackId([4; 32]), PackId([0xfe; 32])] };
    write(root, "condemned", vec![serde_json::to_vec(&rec)?])?;

    // Issue 9: what servers, peers and users send.
    write(root, "user_inputs", [
        "2026-11-30 14:03:27+01", "2026-11-30 14:03:27.25+0130", "2026-11-30T13:03:27Z",
        "2026-11-30 14:03:27+1é1", "0/16B3748", "FFFFFFFF/FFFFFFFF", "7382", "latest", "3",
        "before_migration", "19MiB", "16 mib", "10%", "2.5", "250ms", "1.5s", "2m",
        "host=db password=hunter2", "postgresql://app:pw@db/shop?sslmode=disable",
    ].iter().map(|s| s.as_bytes().to_vec()).collect())?;
    write(root, "config_toml", vec![
        b"[cluster]\nname = \"orders\"\npassword = \"${SET}\"\n\n[[cluster.member]]\nname = \"db1\"\nhost = \"10.0.1.10\"\nport = 5432\ndata_dir = \"/srv/pg1\"\n\n[[cluster.member]]\nname = \"db2\"\nhost = \"10.0.2.10\"\nport = 5432\ndata_dir = \"/srv/pg2\"\n\n[health]\ninterval = \"250ms\"\ntimeout = \"0.2s\"\nfall = 3\ncommand = [\"/bin/true\", \"{host}\"]\n\n[coordinator]\nurl = \"etcd://10.0.1.5:2379,10.0.2.5:2379\"\n\n[proxy]\nlisten = \"0.0.0.0:6432\"\n\n[api]\nlisten = \"127.0.0.1:8008\"\ntoken = \"${SET}\"\n".to_vec(),
        b"[cluster]\nname = \"x\"\nreplication = \"async\"\n[[cluster.member]]\nname = \"a\"\nhost = \"h\"\nport = 1\ndata_dir = \"/d\"\n[api]\ntoken = \"0123456789abcdef\"\n".to_vec(),
    ])?;
    write(root, "pg_server_files", vec![
        b"4242\n/var/lib/postgresql/15/main\n1764500000\n5432\n/var/run/postgresql\n127.0.0.1\n  5432001   32769\nready   \n".to_vec(),
        b"pg_control version number:            1300\nDatabase cluster state:               in production\nwal_level setting:                    replica\n".to_vec(),
    ])?;
    write(root, "health_row", vec![
        "f\x000/3000148\x00\x01\x00\x01\x0000000002\x00\x01\x00\x01\x00\x01\x00\x01\x00\x01\x00[[\"walreceiver\", \"streaming\", \"sync\", \"0/3000148\", \"0/3000060\"]]\x00walreceiver\x007\x000/3000148".as_bytes().to_vec(),
        "t\x00\x01\x000/3000148\x000/3000060\x00\x01\x00streaming\x0010.0.0.1\x005432\x002\x001764500000.25\x00\x01\x00\x00\x01\x00\x01".as_bytes().to_vec(),
    ])?;
    let frame = |tag: u8, body: &[u8]| cat(&[&[tag], &(body.len() as u32 + 4).to_be_bytes(), body]);
    write(root, "replication_frames", vec![
        frame(b'd', &cat(&[b"w", &[0; 24], b"WAL bytes"])),
        frame(b'd', &cat(&[b"k", &[0; 16], &[1]])),
        cat(&[&frame(b'E', b"SERROR\0C42P01\0Mno such slot\0\0"), &frame(b'Z', b"I")]),
        frame(b'D', &cat(&[&1u16.to_be_bytes(), &3u32.to_be_bytes(), b"abc"])),
    ])?;
    write(root, "etcd_values", vec![
        br#"{"at":1764500000000,"report":{"role":"standby","lsn":50331720,"fenced":false}}"#.to_vec(),
        br#"{"to":"db2","requested_at":1764500000000,"generation":7,"approved_at":null}"#.to_vec(),
        br#"{"at":1764500000000,"event":{"kind":"failover","from":"db1","to":"db2"}}"#.to_vec(),
    ])?;
    write(root, "delta_rebuild", vec![
        vec![0, 0, 2, 3, 6, 2, 1, 4, 2, 5, 0, 7, 3],
        vec![0, 1, 3, 3, 6, 2],
        vec![1, 0, 2, 3, 6, 10, 20, 1, 2, 4, 5, 30, 40, 7],
    ])?;
    Ok(())
}
