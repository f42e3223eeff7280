//! Issue 10: `restore` into a directory that already holds something. Today's default must
//! never overwrite what someone edited there: a non-empty target is refused (exit 2) before
//! anything is written, `--overwrite` replaces what the snapshot has and leaves the rest,
//! `--overwrite --delete` makes the target the snapshot. Every test runs the real binary.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use common::*;

/// A snapshot of `src` with `a.txt`, `same.bin` and `sub/b.txt`.
fn snapshot(env: &Env) -> std::path::PathBuf {
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"snapshot a\n").unwrap();
    std::fs::write(src.join("same.bin"), noise(300_000, 5)).unwrap();
    std::fs::write(src.join("sub/b.txt"), b"snapshot b\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    src
}

/// The restored copy of `src` below `target` (restore puts the backed-up directory there
/// under its own name).
fn copy_of(target: &std::path::Path, src: &std::path::Path) -> std::path::PathBuf {
    target.join(src.file_name().unwrap())
}

#[test]
fn r10_a_non_empty_target_is_refused_and_left_untouched() {
    let env = Env::new();
    let src = snapshot(&env);
    let target = env.path("target");
    let mine = copy_of(&target, &src);
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("a.txt"), b"edited by the operator\n").unwrap();
    let before = fingerprint(&target);

    let o = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(target.to_str().unwrap()),
        "names the target: {err}"
    );
    assert!(err.contains("not empty"), "{err}");
    assert!(
        err.contains("--overwrite") && err.contains("--delete"),
        "says the fix: {err}"
    );
    assert_eq!(
        fingerprint(&target),
        before,
        "a refused restore wrote something"
    );

    // --delete alone is a usage error: it only makes sense when overwriting.
    let o = env.run(&[
        "restore",
        "latest",
        "--delete",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(fingerprint(&target), before);

    // An empty directory and a missing one are both fine.
    let empty = env.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    env.ok(&["restore", "latest", "--target", empty.to_str().unwrap()]);
    assert_same_tree(&src, &copy_of(&empty, &src));
    let missing = env.path("missing/deeper");
    env.ok(&["restore", "latest", "--target", missing.to_str().unwrap()]);
    assert_same_tree(&src, &copy_of(&missing, &src));
}

#[test]
fn r10_overwrite_replaces_what_the_snapshot_has_and_keeps_the_rest() {
    let env = Env::new();
    let src = snapshot(&env);
    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let mine = copy_of(&target, &src);
    std::fs::write(mine.join("a.txt"), b"edited by the operator\n").unwrap();
    std::fs::write(mine.join("sub/notes.txt"), b"not in the snapshot\n").unwrap();

    let report = env.json(&[
        "restore",
        "latest",
        "--overwrite",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(mine.join("a.txt")).unwrap(),
        b"snapshot a\n",
        "the edited file is the snapshot's again"
    );
    assert_eq!(
        std::fs::read(mine.join("sub/notes.txt")).unwrap(),
        b"not in the snapshot\n",
        "--overwrite alone deletes nothing"
    );
    assert_eq!(
        std::fs::read(mine.join("same.bin")).unwrap(),
        noise(300_000, 5)
    );
    assert!(
        report["files_kept"].as_u64().unwrap() >= 2,
        "files that already matched are kept, not rewritten: {report}"
    );

    // --delete too: the target becomes the snapshot.
    let o = env.ok(&[
        "restore",
        "latest",
        "--overwrite",
        "--delete",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(o.contains("deleted"), "says what went: {o}");
    assert!(!mine.join("sub/notes.txt").exists());
    assert_same_tree(&src, &mine);
}
