//! Files stored as XOR layers over their previous version (ADR 0016): every version of a
//! file that changes in place, grows, shrinks and grows again, or stays the same, restores
//! and dumps byte for byte, while a version that changed a few bytes per page stores a
//! small fraction of the file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lifeboat_repo::{InitOptions, KdfParams, Repository};
use lifeboat_sources::backup::{backup, BackupOptions};
use lifeboat_sources::restore::{dump, restore, RestoreOptions, Selection};
use lifeboat_sources::Progress;
use lifeboat_storage::{Location, Storage, StorageOptions};

fn repo(dir: &Path) -> Repository {
    repo_of_version(dir, lifeboat_repo::format::FORMAT_VERSION)
}

fn repo_of_version(dir: &Path, format_version: u32) -> Repository {
    let storage = Storage::create(
        &Location::Local(dir.to_path_buf()),
        &StorageOptions::default(),
    )
    .unwrap();
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        format_version,
        ..InitOptions::default()
    };
    Repository::init(storage, b"pw", &opts).unwrap()
}

/// Restores a whole snapshot (root tree `tree`) into `target`.
fn restore_all(
    r: &Repository,
    index: &lifeboat_repo::Index,
    tree: &lifeboat_types::BlobId,
    target: &Path,
) -> lifeboat_repo::Result<lifeboat_sources::restore::RestoreReport> {
    let sel = Selection {
        tree,
        subpath: b"",
        snapshot: "s",
    };
    restore(
        r,
        index,
        sel,
        target,
        &RestoreOptions::default(),
        &Progress::default(),
    )
}

fn is_table(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "table")
}

/// Pseudo-random, compressible-ish bytes (like pages of rows).
fn pages(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            if i % 97 < 60 {
                b' '
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            }
        })
        .collect()
}

/// Changes a few bytes in every 8 KiB page (what an UPDATE of 5 % of rows spread over a
/// table does to its pages).
fn touch_every_page(data: &mut [u8], round: u8) {
    for (p, page) in data.chunks_mut(8192).enumerate() {
        for k in 0..12 {
            let i = (p * 131 + k * 613 + usize::from(round) * 37) % page.len();
            page[i] = page[i].wrapping_add(round | 1);
        }
    }
}

fn stored_bytes(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let md = e.metadata().unwrap();
                        if md.is_dir() {
                            walk(&e.path())
                        } else {
                            md.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("data"))
}

#[test]
fn every_version_of_a_layered_file_restores_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let table: PathBuf = src.join("table");
    let opts = BackupOptions {
        delta_files: Some(is_table),
        force: true, // like `pg backup`: every file is read
        ..BackupOptions::default()
    };

    let mut data = pages(6 << 20, 7);
    let mut versions: Vec<(lifeboat_types::SnapshotId, Vec<u8>)> = Vec::new();
    let mut growth = Vec::new();
    // 0: base; 1–2: pages touched; 3: unchanged; 4: shrunk; 5: grown again past the base;
    // 6: touched once more (the fifth layer: stored whole again); 7: touched.
    for round in 0u8..8 {
        match round {
            0 | 3 => {}
            4 => data.truncate(4 << 20),
            5 => data.extend(pages(3 << 20, 99)),
            _ => touch_every_page(&mut data, round),
        }
        std::fs::write(&table, &data).unwrap();
        let before = stored_bytes(&tmp.path().join("repo"));
        let rep = backup(&r, std::slice::from_ref(&src), &opts, &Progress::default()).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        growth.push(stored_bytes(&tmp.path().join("repo")) - before);
        versions.push((rep.snapshot_id, data.clone()));
    }
    let full = growth[0];
    // A few bytes per page changed: the layer costs a small fraction of the file.
    for (round, g) in growth.iter().enumerate().take(3).skip(1) {
        assert!(
            *g * 10 < full,
            "round {round} stored {g} of a {full}-byte full backup"
        );
    }
    assert!(
        growth[3] * 50 < full,
        "an unchanged file stored {}",
        growth[3]
    );

    let index = r.load_index().unwrap();
    for (i, (id, want)) in versions.iter().enumerate() {
        let (_, snap) = r.find_snapshot(&id.to_hex()).unwrap();
        let target = tmp.path().join(format!("restore-{i}"));
        let rep = restore_all(&r, &index, &snap.tree, &target).unwrap();
        assert!(rep.errors.is_empty(), "version {i}: {:?}", rep.errors);
        let got = std::fs::read(target.join("src/table")).unwrap();
        assert!(
            got == *want,
            "version {i} restored differently ({} bytes)",
            got.len()
        );
        let mut out = Vec::new();
        dump(&r, &index, &snap.tree, b"src/table", "s", &mut out).unwrap();
        assert!(out == *want, "version {i} dumped differently");
    }
}

#[test]
fn a_damaged_base_fails_the_restore_of_that_file_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let table = src.join("table");
    let opts = BackupOptions {
        delta_files: Some(is_table),
        force: true,
        ..BackupOptions::default()
    };
    let mut data = pages(3 << 20, 3);
    let _ = &data;
    std::fs::write(&table, &data).unwrap();
    backup(&r, std::slice::from_ref(&src), &opts, &Progress::default()).unwrap();
    touch_every_page(&mut data, 1);
    std::fs::write(&table, &data).unwrap();
    std::fs::write(src.join("other"), b"fine").unwrap();
    let rep = backup(&r, std::slice::from_ref(&src), &opts, &Progress::default()).unwrap();
    // Damage every pack (the base's and the layer's): the file must not come back wrong.
    let packs = tmp.path().join("repo/data");
    for d in std::fs::read_dir(&packs).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let mut b = std::fs::read(f.path()).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            std::fs::write(f.path(), b).unwrap();
        }
    }
    let index = r.load_index().unwrap();
    let (_, snap) = r.find_snapshot(&rep.snapshot_id.to_hex()).unwrap();
    let target = tmp.path().join("restore");
    let res = restore_all(&r, &index, &snap.tree, &target);
    match res {
        Ok(rep) => {
            assert!(
                rep.errors.iter().any(|e| e.path.ends_with("table")),
                "{:?}",
                rep.errors
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn a_version_1_repository_gets_whole_files_until_it_is_migrated() {
    // Version-1 binaries would read a delta file's blobs as its data: no deltas there.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let mut r = repo_of_version(&dir, 1);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let opts = BackupOptions {
        delta_files: Some(is_table),
        force: true,
        ..BackupOptions::default()
    };
    let mut data = pages(4 << 20, 5);
    let mut step = |r: &Repository, round: u8| {
        touch_every_page(&mut data, round);
        std::fs::write(src.join("table"), &data).unwrap();
        let before = stored_bytes(&dir);
        backup(r, std::slice::from_ref(&src), &opts, &Progress::default()).unwrap();
        stored_bytes(&dir) - before
    };
    let full = step(&r, 0);
    let v1 = step(&r, 1);
    assert!(
        v1 * 2 > full,
        "version 1 stored {v1} of {full}: a delta was written"
    );
    assert_eq!(r.migrate().unwrap(), 1);
    assert_eq!(r.config().version, lifeboat_repo::format::FORMAT_VERSION);
    // Reopened, it says version 2; the next changed version is a small layer.
    let storage = Storage::open(&Location::Local(dir.clone()), &StorageOptions::default()).unwrap();
    let r2 = Repository::open(storage, b"pw").unwrap();
    assert!(r2.supports_deltas());
    let v2 = step(&r2, 2);
    assert!(v2 * 10 < full, "after migrate: {v2} of {full}");
    assert_eq!(r.migrate().unwrap(), lifeboat_repo::format::FORMAT_VERSION);
}

#[test]
fn copy_refuses_a_target_older_than_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo(&tmp.path().join("a"));
    let storage = Storage::create(
        &Location::Local(tmp.path().join("b")),
        &StorageOptions::default(),
    )
    .unwrap();
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        format_version: 1,
        ..InitOptions::default()
    };
    let dst = Repository::init_like(storage, b"pw", &opts, &src).unwrap();
    let err = lifeboat_repo::copy::copy(&src, &dst, &[], &Default::default(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("lifeboat migrate"), "{err}");
}
