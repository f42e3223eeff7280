//! One behaviour suite, run against every backend a repository can live on: memory, the
//! local file system and a real S3-compatible server (Garage, started by the testkit).
//! A missing Garage binary fails the test with the install command; it is never skipped.

// Tests may unwrap: a panic is the failure report (STYLE.md §7 allows it in tests).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use lifeboat_storage::{ErrorKind, ListEntry, Location, Storage, StorageOptions};
use lifeboat_testkit::GarageServer;

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sorted(mut l: Vec<ListEntry>) -> Vec<ListEntry> {
    l.sort_by(|a, b| a.path.cmp(&b.path));
    l
}

fn basic_objects(s: &Storage) {
    assert_eq!(
        s.stat("data/ab/ab01").unwrap(),
        None,
        "fresh storage is empty"
    );
    let e = s.get("data/ab/ab01").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.is_not_found() && !e.is_transient());
    assert!(
        e.to_string().contains("data/ab/ab01"),
        "error names the object: {e}"
    );

    s.put("data/ab/ab01", b"hello world".to_vec()).unwrap();
    assert_eq!(s.get("data/ab/ab01").unwrap(), b"hello world");
    assert_eq!(s.stat("data/ab/ab01").unwrap(), Some(11));
    assert_eq!(s.get_range("data/ab/ab01", 0, 5).unwrap(), b"hello");
    assert_eq!(s.get_range("data/ab/ab01", 6, 5).unwrap(), b"world");
    let short = s.get_range("data/ab/ab01", 6, 50).unwrap_err();
    assert!(
        matches!(short.kind(), ErrorKind::Truncated),
        "reading past the end is Truncated, got {:?}: {short}",
        short.kind()
    );

    // put replaces; put_new refuses and leaves the old content.
    s.put("data/ab/ab01", b"replaced".to_vec()).unwrap();
    assert_eq!(s.get("data/ab/ab01").unwrap(), b"replaced");
    let e = s.put_new("data/ab/ab01", b"x".to_vec()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("data/ab/ab01"));
    assert_eq!(s.get("data/ab/ab01").unwrap(), b"replaced");
    s.put_new("data/cd/cd02", vec![7; 3]).unwrap();
    assert_eq!(s.get("data/cd/cd02").unwrap(), vec![7; 3]);

    // Empty objects exist and are empty.
    s.put("keys/empty", Vec::new()).unwrap();
    assert_eq!(s.stat("keys/empty").unwrap(), Some(0));
    assert_eq!(s.get("keys/empty").unwrap(), Vec::<u8>::new());

    assert_eq!(
        sorted(s.list("data").unwrap()),
        vec![
            ListEntry {
                path: "data/ab/ab01".into(),
                size: 8
            },
            ListEntry {
                path: "data/cd/cd02".into(),
                size: 3
            },
        ]
    );
    assert_eq!(
        s.list("data/cd/").unwrap().len(),
        1,
        "trailing slash is the same dir"
    );
    assert!(
        s.list("nothing").unwrap().is_empty(),
        "missing dir lists empty"
    );
    let all: BTreeSet<String> = s.list("").unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(
        all,
        ["data/ab/ab01", "data/cd/cd02", "keys/empty"]
            .map(String::from)
            .into(),
        "listing the root shows objects only (no temp files)"
    );

    s.delete("data/ab/ab01").unwrap();
    s.delete("data/ab/ab01").unwrap();
    assert_eq!(
        s.get("data/ab/ab01").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.stat("data/ab/ab01").unwrap(), None);
    s.put_new("data/ab/ab01", b"again".to_vec()).unwrap();
    assert_eq!(s.get("data/ab/ab01").unwrap(), b"again");
}

fn large_object(s: &Storage) {
    const LEN: usize = 20 << 20;
    let data = pattern(LEN, 20);
    s.put("packs/big", data.clone()).unwrap();
    assert_eq!(s.stat("packs/big").unwrap(), Some(LEN as u64));
    let back = s.get("packs/big").unwrap();
    assert!(back == data, "20 MiB object reads back byte for byte");
    let mid = (LEN / 2) as u64;
    assert_eq!(
        s.get_range("packs/big", mid, 4096).unwrap(),
        data[LEN / 2..LEN / 2 + 4096]
    );
    assert_eq!(
        s.get_range("packs/big", (LEN - 10) as u64, 10).unwrap(),
        data[LEN - 10..]
    );
    s.delete("packs/big").unwrap();
}

fn concurrent_puts(s: &Storage) {
    const THREADS: u64 = 6;
    const EACH: u64 = 8;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for i in 0..EACH {
                    let data = pattern(1000 + (t * EACH + i) as usize, t * 100 + i);
                    s.put(&format!("conc/{t}/{i}"), data).unwrap();
                }
            });
        }
    });
    let listed = s.list("conc").unwrap();
    assert_eq!(listed.len() as u64, THREADS * EACH);
    for t in 0..THREADS {
        for i in 0..EACH {
            let want = pattern(1000 + (t * EACH + i) as usize, t * 100 + i);
            assert!(
                s.get(&format!("conc/{t}/{i}")).unwrap() == want,
                "conc/{t}/{i}"
            );
        }
    }

    if !s.create_is_atomic() {
        // Garage 2.x ignores If-None-Match: racing creators may all "win" (documented on
        // `create_is_atomic`); the sequential refusal is covered in `basic_objects`.
        return;
    }
    // Several writers race to create one name: exactly one wins, and its bytes are whole.
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    s.put_new("locks/exclusive", pattern(4096, t))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<u64> = (0..THREADS)
        .filter(|&t| results[t as usize].is_ok())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one put_new wins: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.kind(), ErrorKind::AlreadyExists, "{r}");
    }
    assert_eq!(s.get("locks/exclusive").unwrap(), pattern(4096, winners[0]));
}

fn suite(s: &Storage) {
    basic_objects(s);
    large_object(s);
    concurrent_puts(s);
}

#[test]
fn memory_conforms() {
    let s = Storage::memory().unwrap();
    assert!(s.create_is_atomic());
    suite(&s);
}

#[test]
fn local_fs_conforms_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let s = Storage::create(&Location::Local(root.clone()), &StorageOptions::default()).unwrap();
    assert!(s.create_is_atomic());
    suite(&s);
    let leftovers: Vec<_> = std::fs::read_dir(root.join(".tmp")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

#[test]
fn local_fs_rejects_paths_escaping_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(
        &Location::Local(dir.path().join("repo")),
        &StorageOptions::default(),
    )
    .unwrap();
    let e = s.put_new("../outside", vec![1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(!dir.path().join("outside").exists());
}

#[test]
fn garage_s3_conforms() {
    let garage = GarageServer::start().unwrap_or_else(|e| panic!("{e}"));
    let env = |k: &str| garage.env(k);
    let url = format!("s3://{}/conformance/run1", garage.bucket());
    let s = Storage::open(
        &Location::parse(&url, &env).unwrap(),
        &StorageOptions::default(),
    )
    .unwrap();
    assert_eq!(s.describe(), url);
    assert!(
        !s.create_is_atomic(),
        "Garage {} now honours If-None-Match on PUT: update create_is_atomic's docs and ADR 0002",
        "2.5"
    );
    suite(&s);

    // The prefix is honoured: a storage on another prefix of the same bucket sees nothing.
    let other = Location::parse(&format!("s3://{}/elsewhere", garage.bucket()), &env).unwrap();
    let other = Storage::open(&other, &StorageOptions::default()).unwrap();
    assert!(other.list("").unwrap().is_empty());
    assert_eq!(other.stat("data/cd/cd02").unwrap(), None);
}
