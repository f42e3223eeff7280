//! End-to-end tests of the `lifeboat` command: what a user runs, what they get back, and the
//! exit codes their scripts rely on.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;

use common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A source tree with every kind of entry a restore must reproduce.
fn rich_tree(root: &std::path::Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("shop/media")).unwrap();
    std::fs::create_dir_all(p("shop/empty/deeper")).unwrap();
    std::fs::write(p("shop/orders.json"), text(200_000, 1)).unwrap();
    std::fs::write(p("shop/media/hero.jpg"), noise(3_000_000, 2)).unwrap();
    std::fs::write(p("shop/empty-file"), b"").unwrap();
    std::os::unix::fs::symlink("media/hero.jpg", p("shop/link")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", p("shop/dangling")).unwrap();
    std::fs::hard_link(p("shop/orders.json"), p("shop/orders-hardlink.json")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("shop/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let weird = root
        .join("shop")
        .join(OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    std::fs::write(&weird, b"not utf-8 name").unwrap();
    // Sparse: 64 MiB with 4 KiB of data in the middle.
    let f = std::fs::File::create(p("shop/sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[7u8; 4096], 32 << 20).unwrap();
    drop(f);
    // Special modes.
    std::fs::write(p("shop/setuid-tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        p("shop/setuid-tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::create_dir(p("shop/shared")).unwrap();
    std::fs::set_permissions(p("shop/shared"), std::fs::Permissions::from_mode(0o3775)).unwrap();
    std::fs::set_permissions(p("shop/empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // xattr (tmpfs and ext4 support user.* xattrs).
    xattr::set(p("shop/orders.json"), "user.checksum", b"abc123").unwrap();
    // Nanosecond mtime.
    let t = rustix::fs::Timespec {
        tv_sec: 1_600_000_000,
        tv_nsec: 123_456_789,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p("shop/orders.json"),
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p("shop/null-dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::lchown(p("shop/orders.json"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(p("shop/dangling"), Some(4321), Some(8765)).unwrap();
    }
}

#[test]
fn backup_and_restore_reproduce_every_kind_of_entry() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    rich_tree(&src);
    let out = env.json(&["backup", src.join("shop").to_str().unwrap()]);
    assert_eq!(out["errors"].as_array().unwrap().len(), 0);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let (a, b) = (src.join("shop"), target.join("shop"));
    assert_same_tree(&a, &b);

    let md = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap();
    // Hard links stay hard links.
    assert_eq!(
        md(&b.join("orders.json")).ino(),
        md(&b.join("orders-hardlink.json")).ino()
    );
    // Sparse stays sparse: 64 MiB logical, only a few blocks allocated.
    let s = md(&b.join("sparse.img"));
    assert_eq!(s.size(), 64 << 20);
    assert!(
        s.blocks() * 512 < 1 << 20,
        "sparse file was filled: {} blocks",
        s.blocks()
    );
    // Nanosecond mtime, xattrs, special modes, FIFO.
    let o = md(&b.join("orders.json"));
    assert_eq!((o.mtime(), o.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!(
        xattr::get(b.join("orders.json"), "user.checksum")
            .unwrap()
            .as_deref(),
        Some(&b"abc123"[..])
    );
    assert_eq!(md(&b.join("setuid-tool")).mode() & 0o7777, 0o4755);
    assert_eq!(md(&b.join("shared")).mode() & 0o7777, 0o3775);
    assert_eq!(md(&b.join("empty")).mode() & 0o7777, 0o1777);
    assert!(md(&b.join("empty/deeper")).is_dir());
    use std::os::unix::fs::FileTypeExt;
    assert!(md(&b.join("fifo")).file_type().is_fifo());
    assert_eq!(
        std::fs::read_link(b.join("dangling")).unwrap().as_os_str(),
        "/does/not/exist"
    );
    assert!(b.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")).exists());
    // Directory mtimes survive the restore of their contents.
    assert_eq!(md(&b.join("media")).mtime(), md(&a.join("media")).mtime());
    if is_root() {
        let d = md(&b.join("null-dev"));
        assert!(d.file_type().is_char_device());
        assert_eq!(d.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!((o.uid(), o.gid()), (1234, 5678));
        let l = md(&b.join("dangling"));
        assert_eq!((l.uid(), l.gid()), (4321, 8765));
    }
}

#[test]
fn unchanged_files_are_skipped_and_changes_are_found() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(src.join("a")).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("a/f{i}")), text(10_000 + i, i as u64)).unwrap();
    }
    let first = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(first["summary"]["files_read"], 50);
    std::fs::write(src.join("a/f3"), b"changed").unwrap();
    std::fs::write(src.join("a/new"), b"new file").unwrap();
    std::fs::remove_file(src.join("a/f4")).unwrap();
    let second = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(second["summary"]["files_read"], 2, "{second}");
    assert_eq!(second["summary"]["files_unchanged"], 48);
    assert_eq!(second["parent"], first["snapshot_id"]);
    let d = env.json(&[
        "diff",
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    ]);
    assert_eq!(d["added"], serde_json::json!(["/data/a/new"]));
    assert_eq!(d["removed"], serde_json::json!(["/data/a/f4"]));
    assert_eq!(d["modified"], serde_json::json!(["/data/a/f3"]));
    // Restoring the first snapshot by unique prefix still gives the old data.
    let prefix = &first["snapshot_id"].as_str().unwrap()[..10];
    let t = env.path("old");
    env.ok(&[
        "restore",
        &format!("{prefix}:data/a"),
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(t.join("a/f3")).unwrap(), text(10_003, 3));
    assert!(t.join("a/f4").exists());
}

#[test]
fn stdin_backup_streams_and_dump_returns_the_bytes() {
    let env = Env::new();
    env.init();
    let dump_bytes = text(5_000_000, 9);
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "shop.sql",
            "--tag",
            "db",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&dump_bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["bytes"], 5_000_000);
    let o = env.run(&["dump", "latest:shop.sql"]);
    assert!(o.status.success());
    assert!(o.stdout == dump_bytes, "dump differs");
    let snaps = env.json(&["snapshots", "--tag", "db"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["db"]));
}

#[test]
fn exit_codes_and_messages_are_what_scripts_expect() {
    let env = Env::new();
    // No repository yet: usage error (2), one clear line.
    let o = env.run(&["snapshots"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("lifeboat init"), "{}", stderr(&o));
    env.init();
    // Init twice: usage error.
    assert_eq!(code(&env.run(&["init", "--kdf-memory", "1MiB"])), 2);
    // Wrong password: 2, no panic, no stack trace, no password echoed.
    let o = env
        .cmd()
        .env("LIFEBOAT_PASSWORD", "hunter2")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(
        e.starts_with("error: ") && e.contains("wrong password"),
        "{e}"
    );
    assert!(
        !e.contains("panicked") && !e.contains("hunter2") && !e.contains("RUST_BACKTRACE"),
        "{e}"
    );
    // No password at all.
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("LIFEBOAT_PASSWORD"));
    // Bad arguments and bad values.
    assert_eq!(code(&env.run(&["backup", "--no-such-flag", "."])), 2);
    assert_eq!(
        code(&env.run(&["forget"])),
        2,
        "forget without a policy must refuse"
    );
    assert_eq!(code(&env.run(&["check", "--read-data-subset", "lots"])), 2);
    assert_eq!(
        code(&env.run(&["restore", "nosuchsnap", "--target", "/tmp/x"])),
        2
    );
    // A source that does not exist is the caller's mistake (issue 10): 2, not 3.
    assert_eq!(code(&env.run(&["backup", "/definitely/not/here"])), 2);
    let o = env
        .cmd()
        .env("LIFEBOAT_REPOSITORY", "ftp://example/x")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("s3://BUCKET/PREFIX"));
    // A healthy check: 0.
    assert_eq!(code(&env.run(&["check", "--read-data"])), 0);
}

#[test]
fn unreadable_files_are_reported_skipped_and_make_the_snapshot_partial() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    // /proc/self/mem stats as a regular file but every read at offset 0 fails (EIO), for
    // root too: a real unreadable file that needs no privileges to stage.
    let o = env.run(&["backup", src.to_str().unwrap(), "/proc/self/mem", "--json"]);
    assert_eq!(code(&o), 3, "partial snapshot must exit 3: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["errors"], 1);
    assert!(v["errors"][0]["path"].as_str().unwrap().ends_with("mem"));
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["partial"], true);
    // Everything else was saved; restore says which file is incomplete (exit 1).
    let t = env.path("t");
    let o = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("mem: was not backed up completely"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(t.join("src/ok.txt")).unwrap(), b"fine");
}

#[test]
fn keys_can_be_added_listed_and_removed() {
    let env = Env::new();
    env.init();
    let pwfile = env.path("ops-password");
    std::fs::write(&pwfile, "second secret\n").unwrap();
    let added = env.json(&[
        "key",
        "add",
        "--new-password-file",
        pwfile.to_str().unwrap(),
        "--kdf-memory",
        "1MiB",
    ]);
    let new_id = added["added"].as_str().unwrap().to_string();
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    // The new password opens the repository (through --password-file).
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["snapshots", "--password-file", pwfile.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Removing the key in use is refused; removing the other works.
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args([
            "key",
            "remove",
            &new_id[..12],
            "--password-file",
            pwfile.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    env.ok(&["key", "remove", &new_id[..12]]);
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["snapshots", "--password-file", pwfile.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        code(&o),
        2,
        "removed password must no longer open the repository"
    );
}

#[test]
fn forget_keeps_what_the_policy_says_and_prune_frees_space() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for round in 0..4u64 {
        std::fs::write(src.join("data.bin"), noise(2_000_000, round)).unwrap();
        env.ok(&[
            "backup",
            src.to_str().unwrap(),
            "--tag",
            if round == 0 { "keep-forever" } else { "daily" },
        ]);
    }
    let dry = env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "keep-forever",
        "--dry-run",
    ]);
    assert_eq!(dry["remove"].as_array().unwrap().len(), 2);
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        4,
        "dry run removes nothing"
    );
    let before = env.json(&["stats"])["stored_bytes"].as_u64().unwrap();
    let v = env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "keep-forever",
        "--prune",
    ]);
    assert_eq!(v["remove"].as_array().unwrap().len(), 2);
    assert!(v["prune"]["packs_deleted"].as_u64().unwrap() > 0, "{v}");
    let after = env.json(&["stats"])["stored_bytes"].as_u64().unwrap();
    assert!(
        after < before * 6 / 10,
        "prune freed too little: {before} -> {after}"
    );
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(code(&env.run(&["check", "--read-data"])), 0);
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(t.join("src/data.bin")).unwrap(),
        noise(2_000_000, 3)
    );
}

#[test]
fn copy_replicates_incrementally_and_verifies() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), text(1_000_000, 1)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let dr = env.path("dr");
    let first = env.json(&["copy", "--to", dr.to_str().unwrap()]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1);
    std::fs::write(src.join("b"), noise(500_000, 2)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let second = env.json(&["copy", "--to", dr.to_str().unwrap()]);
    assert_eq!(second["copied"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["already_present"].as_array().unwrap().len(), 1);
    // Only the new file's data travelled: far less than the first copy.
    let sent = second["copied"][0]["stored_bytes"].as_u64().unwrap();
    assert!(sent < 700_000, "incremental copy sent {sent} bytes");
    let third = env.json(&["copy", "--to", dr.to_str().unwrap()]);
    assert_eq!(third["copied"].as_array().unwrap().len(), 0);
    // The DR copy restores on its own.
    let drenv = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: dr.clone(),
    };
    assert_eq!(code(&drenv.run(&["check", "--read-data"])), 0);
    let t = env.path("t");
    drenv.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("src"));
    // An unrelated repository is refused with the fix.
    let other = Env::new();
    other.init();
    let o = env.run(&["copy", "--to", other.repo.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--copy-params-from"));
}

#[test]
fn excludes_ls_stats_and_json_documents() {
    let env = Env::new();
    env.init();
    let src = env.path("site");
    std::fs::create_dir_all(src.join("cache")).unwrap();
    std::fs::write(src.join("index.html"), b"<html>").unwrap();
    std::fs::write(src.join("cache/page.tmp"), b"tmp").unwrap();
    std::fs::write(src.join("keep.tmp"), b"tmp").unwrap();
    let o = env.run(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude",
        "**/cache",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("ETA"),
        "no progress bar when not on a terminal"
    );
    let ls = env.json(&["ls", "latest"]);
    let paths: Vec<&str> = ls["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["/site", "/site/index.html"]);
    let ls = env.json(&["ls", "latest:site/index.html"]);
    assert_eq!(ls["nodes"][0]["type"], "file");
    assert_eq!(ls["nodes"][0]["size"], 6);
    let st = env.json(&["stats"]);
    assert_eq!(st["snapshots"], 1);
    assert!(st["stored_bytes"].as_u64().unwrap() > 0);
    let ck = env.json(&["check"]);
    assert_eq!(ck["errors"].as_array().unwrap().len(), 0);
    let snaps = env.json(&["snapshots"]);
    for field in [
        "id", "short_id", "time", "hostname", "paths", "tags", "summary", "partial",
    ] {
        assert!(
            snaps[0].get(field).is_some(),
            "snapshots --json lacks {field}"
        );
    }
    // A missing path inside a snapshot is a usage error naming the path.
    let o = env.run(&["ls", "latest:site/nope"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("site/nope"));
}

#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    let env = Env::new();
    env.init();
    let src = env.path("many");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("file-with-a-long-name-{i:05}")), b"x").unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let mut child = env
        .cmd()
        .args(["ls", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn demo_runs_the_main_job_on_embedded_defaults_and_verifies_it() {
    let env = Env::new();
    let work = env.path("demo");
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_REPOSITORY")
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["demo", "--workdir", work.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("files identical to the source"), "{out}");
    assert!(out.contains("no errors"), "{out}");
    assert!(work.join("repo/config").exists());
    assert_same_tree(
        &work.join("sample-shop"),
        &work.join("restored/sample-shop"),
    );
}

#[test]
fn an_interrupted_init_can_be_completed_and_opens_reliably() {
    // Regression (found by the crash tests): a key left by an init that died before writing
    // the config made `open` report a damaged config when it was tried first.
    let env = Env::new();
    env.init();
    std::fs::remove_file(env.repo.join("config")).unwrap();
    let o = env.run(&["snapshots"]);
    assert_eq!(code(&o), 1, "a missing config is damage: {}", stderr(&o));
    assert!(stderr(&o).contains("config"));
    env.init();
    for _ in 0..5 {
        env.ok(&["snapshots"]);
    }
}

#[test]
fn a_terminal_gets_a_progress_bar_with_bytes_rate_eta_and_files() {
    // `script` (util-linux) runs the command on a pseudo-terminal.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20u64 {
        std::fs::write(src.join(format!("f{i}")), noise(3_000_000, i)).unwrap();
    }
    let cmd = format!(
        "{} backup {}",
        env!("CARGO_BIN_EXE_lifeboat"),
        src.display()
    );
    let mut c = std::process::Command::new("script");
    c.env("LIFEBOAT_REPOSITORY", &env.repo)
        .env("LIFEBOAT_PASSWORD", "correct horse battery staple")
        .args(["-qec", &cmd, "/dev/null"]);
    let o = c
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(screen.contains("backup ["), "no bar drawn: {screen}");
    assert!(
        screen.contains("ETA") && screen.contains("files") && screen.contains("/s"),
        "{screen}"
    );
}

#[test]
fn identical_files_share_blobs_and_all_restore() {
    // One blob used by several files (and twice in one file) is decrypted once per pack.
    let env = Env::new();
    env.init();
    let src = env.path("dups");
    std::fs::create_dir_all(&src).unwrap();
    let small = text(30_000, 5);
    let big = noise(3_000_000, 6);
    for i in 0..5 {
        std::fs::write(src.join(format!("copy{i}.json")), &small).unwrap();
        std::fs::write(src.join(format!("image{i}.jpg")), &big).unwrap();
    }
    let mut twice = big.clone();
    twice.extend_from_slice(&big);
    std::fs::write(src.join("twice.bin"), &twice).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("dups"));
}

/// Runs `lifeboat ARGS --json` with a deadline (a deadlock would otherwise hang the test
/// run) and returns its JSON document.
fn json_within(env: &Env, args: &[&str], secs: u64) -> serde_json::Value {
    let mut child = env
        .cmd()
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("lifeboat {args:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Small files travel to the readers in batches and are sealed there; large ones are chunked
/// and sealed in parallel. A directory wider than the walker's event queue (4096) mixes both,
/// with duplicates inside one batch; then one changed file is followed by thousands of
/// unchanged ones (events the tree builder must get past while that file's batch is still
/// being collected). Both backups must finish and restore every byte.
#[test]
fn a_wide_directory_of_small_and_large_files_restores_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("src/wide");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5000u64 {
        // Every 7th file repeats an earlier one's content: deduplicated within a batch.
        let body = text(
            200 + (i as usize % 13) * 300,
            if i % 7 == 0 { 1 } else { i },
        );
        std::fs::write(src.join(format!("order-{i:05}.json")), body).unwrap();
        if i % 1000 == 500 {
            std::fs::write(src.join(format!("order-{i:05}.pdf")), noise(900_000, i)).unwrap();
        }
    }
    std::fs::write(src.join("zz-dump.sql"), text(6_000_000, 9)).unwrap();
    let v = json_within(&env, &["backup", src.to_str().unwrap()], 120);
    assert_eq!(v["summary"]["files"], 5006);
    assert_eq!(v["summary"]["errors"], 0);

    std::fs::write(src.join("order-00000.json"), b"changed").unwrap();
    let v = json_within(&env, &["backup", src.to_str().unwrap()], 120);
    assert_eq!(v["summary"]["files_read"], 1);
    assert_eq!(v["summary"]["files_unchanged"], 5005);

    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join("wide"));
    let check = env.run(&["check", "--read-data"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
}

#[test]
fn config_validate_reports_every_mistake_with_its_line_and_exits_2() {
    let env = Env::new();
    let good = env.path("lifeboat.toml");
    std::fs::write(env.path("api.token"), "a-token-of-24-characters\n").unwrap();
    std::fs::write(
        &good,
        "[cluster]\nname = \"orders\"\n\n\
         [[cluster.member]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = 5432\ndata_dir = \"/srv/pg1\"\n\n\
         [[cluster.member]]\nname = \"db2\"\nhost = \"127.0.0.1\"\nport = 5433\ndata_dir = \"/srv/pg2\"\n\n\
         [api]\ntoken_file = \"api.token\"\n",
    )
    .unwrap();
    let out = env.ok(&["config", "validate", "--config", good.to_str().unwrap()]);
    assert!(out.contains("valid") && out.contains("2 member"), "{out}");
    let v = env.json(&["config", "validate", "--config", good.to_str().unwrap()]);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["members"], serde_json::json!(["db1", "db2"]), "{v}");

    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[cluster]\nname = \"orders\"\nreplication = \"semi\"\n\n\
         [[cluster.member]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = \"5432\"\ndata_dir = \"/srv/pg1\"\n\n\
         [health]\nintervall = \"1s\"\n",
    )
    .unwrap();
    let o = env.run(&["config", "validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    let f = bad.display().to_string();
    for (line, key) in [
        (3, "cluster.replication"),
        (8, "cluster.member[1].port"),
        (12, "health.intervall"),
        (1, "api"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{f}:{line}:")) && l.contains(key)),
            "no {key} at line {line}:\n{err}"
        );
    }
    assert!(err.contains("did you mean `interval`?"), "{err}");
    let o = env.run(&[
        "--json",
        "config",
        "validate",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 4, "{v}");
}
