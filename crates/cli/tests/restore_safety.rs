//! Issue 9 (hardening), the restore lane: a restore never writes outside its target whatever
//! the target already holds or gains during the restore (item 5), a restore by another user
//! than root does not recreate setuid/setgid bits on files it now owns (item 6), and restored
//! files and prune's deletions are durable before the command reports success (item 4).
//! Every test runs the real `lifeboat` binary; the durability tests read its system calls
//! with `strace`.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Everything a restore could change outside its target: per entry (by path, not following
/// symlinks) kind and mode, owner, group, size and a hash of the contents; the root
/// directory included.
fn outside_state(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64, Option<u64>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = md.is_file().then(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            h.finish()
        });
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.insert(p, (md.mode(), md.uid(), md.gid(), md.size(), content));
    }
    out
}

/// A place outside every restore target: a directory, a file in it (root-owned, 0600, as
/// in the issue), and a second file a planted hard link points to.
fn outside(env: &Env) -> PathBuf {
    let o = env.path("outside");
    std::fs::create_dir(&o).unwrap();
    std::fs::set_permissions(&o, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(o.join("victim"), b"root's secret\n").unwrap();
    std::fs::set_permissions(o.join("victim"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(o.join("hard"), b"linked from the target\n").unwrap();
    std::fs::set_permissions(o.join("hard"), std::fs::Permissions::from_mode(0o640)).unwrap();
    o
}

/// The shop tree of the reproduction: uploads with a setuid file, a file of several
/// blobs, a file of one blob, a nested directory.
fn shop(src: &Path) {
    std::fs::create_dir_all(src.join("site/uploads/deep")).unwrap();
    std::fs::write(src.join("site/uploads/evil.txt"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        src.join("site/uploads/evil.txt"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(src.join("site/uploads/deep/big.bin"), noise(6_000_000, 7)).unwrap();
    std::fs::write(src.join("site/index.html"), text(10_000, 3)).unwrap();
    std::fs::write(src.join("site/data.bin"), noise(5_000_000, 9)).unwrap();
    std::fs::set_permissions(
        src.join("site/uploads"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

/// Issue 9 item 5: with `target/site/uploads -> /outside` (and files of the target that are
/// symlinks or hard links to files outside), a root restore wrote `/outside/evil.txt` with
/// its setuid bit and chmodded `/outside` to 0700. Now the planted links are replaced by what
/// the snapshot has and nothing outside changes.
#[test]
fn r9_restore_replaces_planted_symlinks_and_never_writes_through_them() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    shop(&src);
    env.ok(&["backup", src.join("site").to_str().unwrap()]);
    let out = outside(&env);
    let before = outside_state(&out);

    let target = env.path("target");
    std::fs::create_dir_all(target.join("site")).unwrap();
    std::os::unix::fs::symlink(&out, target.join("site/uploads")).unwrap();
    std::os::unix::fs::symlink(out.join("victim"), target.join("site/index.html")).unwrap();
    std::fs::hard_link(out.join("hard"), target.join("site/data.bin")).unwrap();

    // A target that holds something is refused unless overwriting was asked for.
    let o = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    let o = env.run(&[
        "restore",
        "latest",
        "--overwrite",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        outside_state(&out),
        before,
        "the restore changed files outside its target"
    );
    // The snapshot's entries stand where the links were.
    assert_same_tree(&src.join("site"), &target.join("site"));
    let md = std::fs::symlink_metadata(target.join("site/uploads")).unwrap();
    assert!(md.is_dir() && !md.file_type().is_symlink());
    assert_eq!(md.mode() & 0o7777, 0o700);
}

/// Issue 9 item 5: a racing user swaps restored files and directories for symlinks to a
/// root-owned file (and directory) outside while the restore runs. The restore may report
/// those entries, but nothing outside the target changes: contents, modes, owners.
#[test]
fn r9_symlinks_swapped_in_during_a_restore_are_never_followed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    shop(&src);
    // Many entries of every shape, so that the racer hits some while they are in use.
    for d in 0..12 {
        let dir = src.join(format!("site/d{d}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in 0..25 {
            std::fs::write(dir.join(format!("f{f}")), text(3_000, d * 100 + f)).unwrap();
        }
        std::fs::write(dir.join("sub/multi.bin"), noise(3_000_000, d)).unwrap();
        std::os::unix::fs::symlink("f1", dir.join("link")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    env.ok(&["backup", src.join("site").to_str().unwrap()]);
    let out = outside(&env);
    let before = outside_state(&out);

    for round in 0..3 {
        let target = env.path(&format!("target{round}"));
        std::fs::create_dir(&target).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let racer = {
            let (done, target, out) = (done.clone(), target.clone(), out.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !done.load(Ordering::Relaxed) {
                    swaps += swap_everything_for_symlinks(&target, &out);
                }
                swaps
            })
        };
        let o = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        done.store(true, Ordering::Relaxed);
        let swaps = racer.join().unwrap();
        assert!(swaps > 0, "the racer never got to swap anything");
        assert!(
            matches!(code(&o), 0 | 1),
            "restore crashed: {:?} {}",
            o.status,
            stderr(&o)
        );
        assert_eq!(
            outside_state(&out),
            before,
            "round {round}: the restore changed files outside its target ({swaps} swaps)"
        );
    }
}

/// One pass of the racer: every entry below `target` becomes a symlink to `out/victim`
/// (files) or `out` (directories). Returns how many it swapped.
fn swap_everything_for_symlinks(target: &Path, out: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![target.to_path_buf()];
    while let Some(d) = stack.pop() {
        // The racer itself must not walk into the links it planted.
        if !std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.file_type().is_symlink() {
                continue;
            }
            if md.is_dir() {
                // Every other directory: moved aside and replaced by a link outside.
                let aside = p.with_extension("aside");
                if n % 2 == 0 && std::fs::rename(&p, &aside).is_ok() {
                    stack.push(aside);
                    if std::os::unix::fs::symlink(out, &p).is_ok() {
                        n += 1;
                    }
                } else {
                    stack.push(p);
                }
                continue;
            }
            if std::fs::remove_file(&p).is_ok()
                && std::os::unix::fs::symlink(out.join("victim"), &p).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// Issue 9 item 6: a restore by another user than root recreated `-rwsr-xr-x nobody`. Now
/// set-id bits are dropped where the owner could not be restored, and the summary (human and
/// `--json`) names those files.
#[test]
fn r9_a_restore_by_another_user_drops_setid_bits_and_says_so() {
    assert!(
        is_root(),
        "this test switches to the user nobody: run it as root"
    );
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o755)] {
        std::fs::write(src.join("bin").join(name), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.join("bin").join(name),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }
    std::fs::create_dir(src.join("bin/shared")).unwrap();
    std::fs::set_permissions(
        src.join("bin/shared"),
        std::fs::Permissions::from_mode(0o3775),
    )
    .unwrap();
    env.ok(&["backup", src.join("bin").to_str().unwrap()]);
    // The user nobody reads the repository and owns the target.
    let nobody = 65534;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::process::Command::new("chown")
        .args(["-R", "65534:65534", env.repo.to_str().unwrap()])
        .status()
        .unwrap();
    let run_as_nobody = |args: &[&str]| {
        let mut c = env.cmd();
        c.args(args)
            .uid(nobody)
            .gid(nobody)
            .env("HOME", env.dir.path());
        c.output().unwrap()
    };
    for (i, json) in [(0, false), (1, true)] {
        let target = env.path(&format!("t{i}"));
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::chown(&target, Some(nobody), Some(nobody)).unwrap();
        let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let o = run_as_nobody(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let mode = |p: &str| std::fs::symlink_metadata(target.join(p)).unwrap().mode() & 0o7777;
        let owner = |p: &str| std::fs::symlink_metadata(target.join(p)).unwrap().uid();
        assert_eq!(owner("bin/suid"), nobody);
        assert_eq!(mode("bin/suid"), 0o755, "setuid kept on a file nobody owns");
        assert_eq!(
            mode("bin/sgid"),
            0o755,
            "setgid kept on a file of nobody's group"
        );
        assert_eq!(mode("bin/plain"), 0o755);
        // Directories keep setgid and sticky: they grant nothing.
        assert_eq!(mode("bin/shared"), 0o3775);
        if json {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["setid_dropped"],
                serde_json::json!(["bin/sgid", "bin/suid"]),
                "{v}"
            );
        } else {
            let err = stderr(&o);
            assert!(
                err.contains("bin/suid") && err.contains("bin/sgid"),
                "{err}"
            );
            assert!(
                err.contains("2 file(s) restored without setuid/setgid"),
                "{err}"
            );
        }
    }
    // Root restores owners, so the bits stay.
    let t = env.path("as-root");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(
        std::fs::symlink_metadata(t.join("bin/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
}

/// Runs `lifeboat args` under `strace -f -y` for the given system calls; returns the
/// command's exit code and the trace.
fn traced(env: &Env, calls: &str, args: &[&str]) -> (i32, String) {
    let log = env.path(&format!("strace-{}.log", args[0]));
    let status = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "200", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", &env.repo)
        .env("LIFEBOAT_PASSWORD", "correct horse battery staple")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("strace: {e}; install it: apt-get install -y strace"));
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap(),
    )
}

/// Issue 9 item 4: file restore never fsynced, so a crash after "restored" could lose what
/// it wrote. Now the restored tree is flushed (`syncfs` of the target's file system) before
/// the summary is printed.
#[test]
fn r9_restore_makes_the_tree_durable_before_it_reports_success() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    shop(&src);
    env.ok(&["backup", src.join("site").to_str().unwrap()]);
    let target = env.path("target");
    let (code, trace) = traced(
        &env,
        "syncfs,fsync,fdatasync,write",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{trace}");
    let lines: Vec<&str> = trace.lines().collect();
    let summary = lines
        .iter()
        .position(|l| l.contains("write(1") && l.contains("restored snapshot"))
        .unwrap_or_else(|| panic!("no summary in the trace:\n{trace}"));
    let target = target.to_str().unwrap();
    let synced = lines[..summary]
        .iter()
        .any(|l| l.contains("syncfs(") && l.contains(target) && l.ends_with("= 0"));
    assert!(
        synced,
        "the summary was printed before the restored files were synced:\n{}",
        lines[..summary]
            .iter()
            .filter(|l| l.contains("sync"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Issue 9 item 4: prune's deletions on a local repository were not directory-fsynced, so
/// after a power loss deleted packs and index files could reappear. Now every directory that
/// lost an entry is fsynced after the deletion, before prune reports.
#[test]
fn r9_prune_fsyncs_every_directory_it_deleted_from() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for round in 0..4u64 {
        std::fs::write(src.join("data.bin"), noise(2_000_000, round)).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    env.ok(&["forget", "--keep-last", "1"]);
    let (code, trace) = traced(
        &env,
        "unlink,unlinkat,fsync,fdatasync,syncfs",
        &["prune", "--json"],
    );
    assert_eq!(code, 0, "{trace}");
    let repo = std::fs::canonicalize(&env.repo).unwrap();
    let repo = repo.to_str().unwrap();
    let quoted = |l: &str| -> Option<String> {
        let start = l.find('"')? + 1;
        let end = start + l[start..].find('"')?;
        Some(l[start..end].to_string())
    };
    let lines: Vec<&str> = trace.lines().collect();
    let mut deleted = 0;
    for (i, l) in lines.iter().enumerate() {
        if !(l.contains("unlink") && l.ends_with("= 0")) {
            continue;
        }
        // `unlinkat(3</repo/data/ab>, "abcd…", 0)` or `unlink("/repo/data/ab/abcd…")`.
        let Some(name) = quoted(l) else { continue };
        let dir = if name.starts_with('/') {
            Path::new(&name)
                .parent()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        } else {
            let a = l.find('<').unwrap() + 1;
            l[a..a + l[a..].find('>').unwrap()].to_string()
        };
        if !dir.starts_with(repo) || dir.starts_with(&format!("{repo}/.tmp")) {
            continue; // temp files of the repository's own writes
        }
        deleted += 1;
        let synced = lines[i + 1..]
            .iter()
            .any(|s| s.contains("fsync(") && s.contains(&format!("<{dir}>")) && s.ends_with("= 0"));
        assert!(
            synced,
            "{name} was deleted from {dir}, which was never fsynced after"
        );
    }
    assert!(deleted > 0, "prune deleted nothing:\n{trace}");
}
