//! Leases when processes cannot see each other or cannot write (issue 9, items 1, 2 and the
//! `.tmp` part of 8; docs/design/0001-concurrency.md), against the real `lifeboat` binary:
//!
//! - a prune that cannot examine a backup's process (`/proc` with `hidepid=2`, another user)
//!   must not take its lease for dead, and a backup must never commit a snapshot that names
//!   a pack that is gone;
//! - restore, dump, ls, diff and check work on a read-only repository (a read-only bind
//!   mount) and on one whose file system is 100 % full (a small tmpfs), bit for bit;
//! - no command but `init` creates anything where no repository is.
//!
//! Mounts happen in a private mount namespace (`unshare -m`) that the test keeps alive with
//! a `sleep` and enters with `nsenter`, so nothing is mounted on the host.
#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_tree, code, noise, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
const PASSWORD: &str = "leases-test";
const DEADLINE: Duration = Duration::from_secs(60);

/// `lifeboat` for `repo` (run through `sh` with umask 0, so that files it creates can be
/// changed by the unprivileged prune of the `hidepid` test).
fn lifeboat(repo: &Path) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "umask 0; exec \"$@\"", "sh", BIN])
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_INSECURE_KDF_FOR_TESTS", "1") // lets init use --kdf-memory 1MiB
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .env_remove("LIFEBOAT_LOG")
        .arg("--no-progress")
        .stdin(Stdio::null());
    c
}

fn ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "`{what}` failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(cmd: &mut Command, what: &str) -> serde_json::Value {
    let out = ok(cmd.arg("--json"), what);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `cond` until it holds; fails after `DEADLINE` naming `what`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        // Poll interval of a deadline wait, not a synchronisation.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pack files under `repo/data`.
fn packs(repo: &Path) -> Vec<PathBuf> {
    common::files_under(&repo.join("data"))
}

/// Kinds of the lease files in `repo/locks/` held by process `pid`.
fn leases_of(repo: &Path, pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(repo.join("locks")) else {
        return Vec::new();
    };
    dir.filter_map(|e| fs::read(e.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
        .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn snapshot_count(repo: &Path) -> usize {
    json(lifeboat(repo).arg("snapshots"), "snapshots")
        .as_array()
        .unwrap()
        .len()
}

/// A repository with one snapshot of a small tree, everything writable by everyone.
struct Fixture {
    tmp: tempfile::TempDir,
    repo: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let repo = tmp.path().join("repo");
        ok(
            lifeboat(&repo).args(["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"]),
            "init",
        );
        Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&repo)
            .status()
            .unwrap();
        Fixture { tmp, repo }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Starts `backup --stdin` of `head` and keeps it open; returns once it holds its write
    /// lease and has uploaded a pack more than the repository had before.
    fn start_stdin_backup(&self, head: &[u8]) -> (Child, std::process::ChildStdin) {
        let base = packs(&self.repo).len();
        let mut child = lifeboat(&self.repo)
            .args([
                "backup",
                "--stdin",
                "--stdin-filename",
                "dump.bin",
                "--json",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(head).unwrap();
        wait_until("the stdin backup's lease and a new pack", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the stdin backup ended early ({status})");
            }
            leases_of(&self.repo, pid).contains(&"write".to_string())
                && packs(&self.repo).len() > base
        });
        (child, stdin)
    }
}

/// Item 1: a prune running as `nobody` with `/proc` mounted `hidepid=2` cannot see the
/// backup's process (root's). Before the fix it took the backup's lease for dead, swept the
/// packs the open backup had written, and the backup still reported success.
#[test]
fn a_prune_that_cannot_see_the_backup_process_deletes_nothing_it_wrote() {
    let f = Fixture::new();
    let small = f.path("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("a"), noise(40_000, 1)).unwrap();
    ok(lifeboat(&f.repo).arg("backup").arg(&small), "backup");
    let data = noise(14_000_000, 2);
    // More than the chunker's buffer (2 x 4 MiB), so packs flow before the end.
    let (child, mut stdin) = f.start_stdin_backup(&data[..11_000_000]);
    let mid = packs(&f.repo);
    for _ in 0..2 {
        let out = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                "mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=nobody --regid=nogroup --clear-groups \"$@\"",
                "sh",
                BIN,
                "--no-progress",
                "--json",
                "forget",
                "--keep-last",
                "1",
                "--prune",
            ])
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_REPOSITORY", &f.repo)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prune as nobody under hidepid=2: {}",
            stderr(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            !v["prune"]["waiting_on"].as_array().unwrap().is_empty(),
            "the prune must wait for the backup it cannot see: {v}"
        );
        let gone: Vec<_> = mid.iter().filter(|p| !p.exists()).collect();
        assert!(
            gone.is_empty(),
            "the prune deleted packs of the running backup: {gone:?}"
        );
    }
    stdin.write_all(&data[11_000_000..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the backup: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["snapshot_id"].as_str().unwrap();
    ok(
        lifeboat(&f.repo).args(["check", "--read-data"]),
        "check --read-data",
    );
    let dumped = ok(
        lifeboat(&f.repo).args(["dump", &format!("{id}:dump.bin")]),
        "dump",
    );
    assert!(
        dumped.stdout == data,
        "the backup does not restore bit for bit"
    );
}

/// Item 1, second half: whatever deleted them, a backup whose packs (written by itself, or
/// those it deduplicated against) are gone at its commit fails loudly and writes no
/// snapshot. Before the fix it saved a snapshot naming the missing packs and exited 0.
#[test]
fn a_backup_whose_packs_vanished_commits_nothing() {
    let f = Fixture::new();
    // Longer than the chunker's largest chunk (4 MiB), so its first chunk is cut inside it
    // whatever the repository's chunker seed: the stream below shares at least that one.
    let old = noise(6_000_000, 3);
    let file = f.path("old.bin");
    fs::write(&file, &old).unwrap();
    ok(lifeboat(&f.repo).arg("backup").arg(&file), "backup");
    let before = packs(&f.repo);
    let snapshots = snapshot_count(&f.repo);

    // (a) Packs it deduplicated against: the stream starts with the bytes already stored.
    let mut head = old.clone();
    head.extend(noise(11_000_000, 4));
    let (child, stdin) = f.start_stdin_backup(&head);
    for p in &before {
        fs::remove_file(p).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_ne!(code(&out), 0, "a backup naming deleted packs committed");
    assert!(
        stderr(&out).contains("were deleted while it ran"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_count(&f.repo), snapshots, "a snapshot was written");

    // (b) Packs it wrote itself.
    let before = packs(&f.repo);
    let (child, stdin) = f.start_stdin_backup(&noise(11_000_000, 5));
    let mine: Vec<_> = packs(&f.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    fs::remove_file(&mine[0]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_ne!(code(&out), 0, "a backup naming a deleted pack committed");
    assert!(
        stderr(&out).contains("were deleted while it ran"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_count(&f.repo), snapshots, "a snapshot was written");
}

/// A private mount namespace kept alive by a `sleep`, set up by a shell script.
struct Namespace {
    keeper: Child,
}

impl Namespace {
    /// Runs `script` (with `args` as `$1`…) in a new mount namespace; returns once it has
    /// finished setting up.
    fn new(script: &str, args: &[&Path]) -> Namespace {
        let mut keeper = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                &format!("set -e; {script}; echo ready; exec sleep 3600"),
                "sh",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(keeper.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the namespace's setup failed");
        Namespace { keeper }
    }

    /// `lifeboat ARGS` inside the namespace, for `repo`; also returns how long it took.
    fn lifeboat(&self, repo: &Path, args: &[&str]) -> (Output, Duration) {
        let start = Instant::now();
        let out = Command::new("nsenter")
            .args(["-t", &self.keeper.id().to_string(), "-m", "--", BIN])
            .arg("--no-progress")
            .args(args)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_REPOSITORY", repo)
            .env_remove("LIFEBOAT_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out, start.elapsed())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
    }
}

/// Two snapshots of a small tree (the second with one file changed and one added).
fn repository_with_two_snapshots(f: &Fixture) -> (PathBuf, String) {
    let src = f.path("shop");
    fs::create_dir_all(src.join("images")).unwrap();
    fs::write(src.join("orders.csv"), common::text(300_000, 6)).unwrap();
    fs::write(src.join("images/a.jpg"), noise(2_500_000, 7)).unwrap();
    ok(lifeboat(&f.repo).arg("backup").arg(&src), "backup 1");
    fs::write(src.join("orders.csv"), common::text(310_000, 8)).unwrap();
    fs::write(src.join("images/b.jpg"), noise(700_000, 9)).unwrap();
    ok(lifeboat(&f.repo).arg("backup").arg(&src), "backup 2");
    let first = json(lifeboat(&f.repo).arg("snapshots"), "snapshots")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (src, first)
}

/// Every reading command on the repository at `repo` as seen inside `ns`: all succeed,
/// quickly, restore and dump bit for bit, each says once that it has no lease.
fn every_reader_works(f: &Fixture, ns: &Namespace, repo: &Path, src: &Path, first: &str) {
    let target = f.path(&format!("restored-{}", ns.keeper.id()));
    let t = target.to_str().unwrap();
    let dumped = |o: &Output| o.stdout.clone();
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("restore", vec!["restore", "latest", "--target", t]),
        ("dump", vec!["dump", "latest:shop/images/a.jpg"]),
        ("ls", vec!["ls", "latest"]),
        ("diff", vec!["diff", first, "latest"]),
        ("check", vec!["check", "--read-data"]),
    ];
    for (what, args) in runs {
        let (out, took) = ns.lifeboat(repo, &args);
        assert!(
            out.status.success(),
            "{what} exited {:?}: {}",
            out.status.code(),
            stderr(&out)
        );
        assert!(
            took < Duration::from_secs(10),
            "{what} took {took:?}: a permanent write error was retried"
        );
        let warned = stderr(&out).matches("cannot record a read lease").count();
        assert_eq!(
            warned,
            1,
            "{what} must say once that it reads without a lease: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("a prune running at the same time"),
            "{what} must name the risk: {}",
            stderr(&out)
        );
        if what == "dump" {
            assert!(dumped(&out) == fs::read(src.join("images/a.jpg")).unwrap());
        }
        if what == "ls" {
            assert!(String::from_utf8_lossy(&out.stdout).contains("/shop/images/b.jpg"));
        }
        if what == "diff" {
            assert!(String::from_utf8_lossy(&out.stdout).contains("images/b.jpg"));
        }
    }
    assert_same_tree(src, &target.join("shop"));
}

/// Item 2: a read-only bind mount of the repository (as a DR host with read-only access,
/// or a mounted snapshot of the backup disk). Before the fix `restore` retried its lease
/// write for ~21 s and exited 3.
#[test]
fn readers_work_on_a_read_only_repository() {
    let f = Fixture::new();
    let (src, first) = repository_with_two_snapshots(&f);
    let before = common::fingerprint(&f.repo);
    let ns = Namespace::new("mount --bind -o ro \"$1\" \"$1\"", &[&f.repo]);
    every_reader_works(&f, &ns, &f.repo, &src, &first);
    // A writer fails at once, with the cause.
    let (out, took) = ns.lifeboat(&f.repo, &["backup", src.to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(took < Duration::from_secs(10), "backup took {took:?}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // A copy out of it to a disaster-recovery repository (the sibling reader): succeeds,
    // and the copy restores bit for bit.
    let dr = f.path("dr");
    let (out, _) = ns.lifeboat(&f.repo, &["copy", "--to", dr.to_str().unwrap()]);
    assert!(out.status.success(), "copy: {}", stderr(&out));
    drop(ns);
    assert_eq!(
        common::fingerprint(&f.repo),
        before,
        "the repository changed"
    );
    let restored = f.path("from-dr");
    ok(
        lifeboat(&dr)
            .args(["restore", "latest", "--target"])
            .arg(&restored),
        "restore from the copy",
    );
    assert_same_tree(&src, &restored.join("shop"));
}

/// Item 2: the repository's file system is 100 % full (a 24 MiB tmpfs filled up). Before
/// the fix `restore` exited 3.
#[test]
fn readers_work_on_a_repository_whose_disk_is_full() {
    let f = Fixture::new();
    let (src, first) = repository_with_two_snapshots(&f);
    let mnt = f.path("full");
    fs::create_dir(&mnt).unwrap();
    let ns = Namespace::new(
        "mount -t tmpfs -o size=24m tmpfs \"$1\"; cp -a \"$2\" \"$1/repo\"; \
         dd if=/dev/zero of=\"$1/filler\" bs=64k 2>/dev/null || true; \
         if echo x > \"$1/probe\"; then echo 'not full'; exit 1; fi",
        &[&mnt, &f.repo],
    );
    every_reader_works(&f, &ns, &mnt.join("repo"), &src, &first);
}

/// Item 8 (part): no command but `init` creates anything where no repository is — neither
/// at a mistyped path nor in an empty directory (an unmounted mount point) — and each says
/// "no repository at PATH" with the fix. Before the fix each created `PATH/.tmp`.
#[test]
fn commands_create_nothing_where_no_repository_is() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let target = tmp.path().join("target");
    let empty = tmp.path().join("mnt");
    fs::create_dir(&empty).unwrap();
    let wal_dest = tmp.path().join("wal");
    for repo in [tmp.path().join("typo"), empty.clone()] {
        let r = repo.to_str().unwrap();
        let cases: Vec<(Vec<&str>, i32)> = vec![
            (vec!["snapshots"], 2),
            (vec!["backup", src.to_str().unwrap()], 2),
            (
                vec!["restore", "latest", "--target", target.to_str().unwrap()],
                2,
            ),
            (vec!["ls", "latest"], 2),
            (vec!["check"], 2),
            (vec!["prune"], 2),
            (vec!["forget", "--keep-last", "1"], 2),
            (
                vec![
                    "pg",
                    "wal-fetch",
                    "--source",
                    "orders",
                    "000000010000000000000001",
                    wal_dest.to_str().unwrap(),
                ],
                126,
            ),
        ];
        for (args, expected) in cases {
            let out = lifeboat(&repo).args(&args).output().unwrap();
            assert_eq!(code(&out), expected, "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!(
                    "no repository at {r} (fix: check --repo / LIFEBOAT_REPOSITORY, or run `lifeboat init`)"
                )),
                "{args:?}: {}",
                stderr(&out)
            );
            if repo == empty {
                assert_eq!(
                    fs::read_dir(&repo).unwrap().count(),
                    0,
                    "{args:?} wrote into {r}"
                );
            } else {
                assert!(!repo.exists(), "{args:?} created {r}");
            }
        }
    }
    assert!(!target.exists());
    // `init` still creates the directory.
    let repo = tmp.path().join("new/repo");
    ok(
        lifeboat(&repo).args(["init", "--kdf-memory", "1MiB"]),
        "init",
    );
    ok(lifeboat(&repo).arg("snapshots"), "snapshots");
}

/// Item 2 for PostgreSQL: `pg restore` from a read-only repository (a read-only bind mount)
/// and from one on a full file system, then recovery whose `wal-fetch` reads a repository
/// the cluster owner cannot write; `wal-fetch` itself in both namespaces returns the same
/// bytes as from the writable repository. Before the fix `pg restore` failed on its lease.
#[test]
fn pg_restore_and_wal_fetch_work_on_a_read_only_or_full_repository() {
    use common::pg::{ids, Shop, SOURCE};
    use lifeboat_testkit::postgres::owner_tempdir;
    use lifeboat_testkit::PgServer;

    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2);
    shop.insert(3);
    let segment = shop.archive_now();
    let repo = shop.repo();
    let key = shop.key();
    let reference = owner_tempdir("lifeboat-wal-").unwrap();
    let fetched = reference.path().join("reference");
    shop.lb_ok(&[
        "pg",
        "wal-fetch",
        "--source",
        SOURCE,
        &segment,
        fetched.to_str().unwrap(),
    ]);
    let expected = fs::read(&fetched).unwrap();

    let mnt = shop.dir.path().join("full");
    fs::create_dir(&mnt).unwrap();
    let namespaces = [
        (
            "read-only",
            Namespace::new("mount --bind -o ro \"$1\" \"$1\"", &[&repo]),
        ),
        (
            "full",
            Namespace::new(
                "mount -t tmpfs -o size=64m tmpfs \"$2\"; cp -a \"$1\" \"$2/repo\"; \
                 dd if=/dev/zero of=\"$2/filler\" bs=64k 2>/dev/null || true; \
                 if echo x > \"$2/probe\"; then echo 'not full'; exit 1; fi; \
                 mount --bind \"$2/repo\" \"$1\"",
                &[&repo, &mnt],
            ),
        ),
    ];
    // The cluster owner may read the repository but not write it (read-only credentials).
    assert!(Command::new("chown")
        .args(["-R", "root:root"])
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("chmod")
        .args(["-R", "a-w,go+rX"])
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    for (what, ns) in &namespaces {
        let as_owner = |args: &[&str]| {
            Command::new("nsenter")
                .args(["-t", &ns.keeper.id().to_string(), "-m", "--"])
                .args(["runuser", "-u", "postgres", "--", BIN, "--repo"])
                .arg(&repo)
                .arg("--password-file")
                .arg(&key)
                .args(args)
                .env_remove("LIFEBOAT_PASSWORD")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let wal = reference.path().join(format!("fetched-{what}"));
        let out = as_owner(&[
            "pg",
            "wal-fetch",
            "--source",
            SOURCE,
            &segment,
            wal.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{what}: wal-fetch: {}", stderr(&out));
        assert!(
            fs::read(&wal).unwrap() == expected,
            "{what}: wal-fetch is not bit-exact"
        );

        let target = owner_tempdir("lifeboat-restore-").unwrap();
        let data = target.path().join("data");
        let start = Instant::now();
        let out = as_owner(&[
            "pg",
            "restore",
            "--source",
            SOURCE,
            "--target",
            data.to_str().unwrap(),
            "--latest",
        ]);
        assert!(out.status.success(), "{what}: pg restore: {}", stderr(&out));
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: pg restore was slow"
        );
        assert_eq!(
            stderr(&out).matches("cannot record a read lease").count(),
            1,
            "{what}: {}",
            stderr(&out)
        );
        // Recovery fetches WAL (`pg wal-fetch` as the owner) from the repository it cannot
        // write.
        let server = PgServer::adopt(&data, &["archive_mode = off"]).unwrap();
        common::pg::wait_until("recovery to finish", || {
            server
                .sql("select pg_is_in_recovery()")
                .is_ok_and(|s| s == "f")
        });
        assert_eq!(ids(&server), "1,2,3", "{what}");
    }
}
