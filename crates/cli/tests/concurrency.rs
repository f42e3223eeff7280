//! Concurrency: backups, prunes and forgets running at the same time against one repository
//! (docs/design/0001-concurrency.md). Real `lifeboat` processes; overlap is arranged by
//! waiting for observable conditions (a lease file in `locks/`, a new pack in `data/`) with
//! deadlines, and, where an exact interleaving matters, by stopping a process with SIGSTOP
//! at such a point and continuing it with SIGCONT.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustix::process::{kill_process, Pid, Signal};

const PASSWORD: &str = "concurrency-test";
const DEADLINE: Duration = Duration::from_secs(60);

fn lifeboat(repo: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_INSECURE_KDF_FOR_TESTS", "1") // --kdf-memory 1MiB
        .env("LIFEBOAT_REPOSITORY", repo)
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

fn spawn(cmd: &mut Command) -> Child {
    cmd.arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and returns its JSON output; it must have succeeded.
fn finish(child: Child, what: &str) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "`{what}` failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Whether `child` is still running (not exited); it must not have exited yet.
fn assert_running(child: &mut Child, what: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("{what} already ended ({status}); the test needs it still running");
    }
}

/// The kinds of the lease files in `repo/locks/` held by process `pid`.
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

fn count_packs(repo: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        fs::read_dir(d).map_or(0, |rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&repo.join("data"))
}

fn signal(child: &Child, sig: Signal) {
    kill_process(Pid::from_child(child), sig).unwrap();
}

/// Files of partly random, partly compressible bytes: `files` of `min..max` bytes.
fn fill(dir: &Path, rng: &mut StdRng, files: usize, min: usize, max: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        let len = rng.random_range(min..max);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if i % 3 == 0 {
            // Compressible: a repeated pattern over the second half.
            for (j, b) in bytes.iter_mut().enumerate().skip(len / 2) {
                *b = b"lifeboat "[j % 9];
            }
        }
        let p = dir.join(format!("sub{}/f{i:04}", i % 7));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &bytes).unwrap();
        let mode = [0o644, 0o600, 0o755][i % 3];
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Asserts that `restored` holds exactly what `source` holds: names, kinds, sizes, modes
/// and bytes.
fn assert_same_tree(source: &Path, restored: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (a, b) = (names(source), names(restored));
    assert_eq!(a, b, "entries of {} differ", restored.display());
    for n in a {
        let (s, r) = (source.join(&n), restored.join(&n));
        let (sm, rm) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&r).unwrap(),
        );
        assert_eq!(sm.file_type(), rm.file_type(), "kind of {}", r.display());
        if sm.is_dir() {
            assert_same_tree(&s, &r);
        } else {
            assert_eq!(sm.len(), rm.len(), "size of {}", r.display());
            assert_eq!(
                sm.permissions().mode() & 0o7777,
                rm.permissions().mode() & 0o7777,
                "mode of {}",
                r.display()
            );
            assert!(
                fs::read(&s).unwrap() == fs::read(&r).unwrap(),
                "contents of {} differ",
                r.display()
            );
        }
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    rng: StdRng,
}

impl Fixture {
    fn new(seed: u64) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        ok(
            lifeboat(&repo).args(["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"]),
            "init",
        );
        Fixture {
            tmp,
            repo,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn backup(&self, dir: &Path) -> String {
        let v = json(lifeboat(&self.repo).arg("backup").arg(dir), "backup");
        v["snapshot_id"].as_str().unwrap().to_string()
    }

    fn check(&self) {
        ok(
            lifeboat(&self.repo).args(["check", "--read-data"]),
            "check --read-data",
        );
    }

    /// Restores snapshot `id` and compares it with `source` (backed up as one path).
    fn assert_restores(&self, id: &str, source: &Path) {
        let out = self.path("restore");
        let _ = fs::remove_dir_all(&out);
        ok(
            lifeboat(&self.repo)
                .args(["restore", id, "--target"])
                .arg(&out),
            "restore",
        );
        assert_same_tree(source, &out.join(source.file_name().unwrap()));
        fs::remove_dir_all(&out).unwrap();
    }

    fn snapshot_ids(&self) -> Vec<String> {
        json(lifeboat(&self.repo).arg("snapshots"), "snapshots")
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Starts a backup of `dir` and waits until it has written its lease and uploaded a
    /// pack (so it has loaded the index and is mid-way).
    fn start_backup(&self, dir: &Path, args: &[&str]) -> Child {
        let base = count_packs(&self.repo);
        let mut child = spawn(lifeboat(&self.repo).arg("backup").args(args).arg(dir));
        let pid = child.id();
        wait_until("the backup's lease and first pack", || {
            assert_running(&mut child, "the backup");
            leases_of(&self.repo, pid).contains(&"write".to_string())
                && count_packs(&self.repo) > base
        });
        child
    }
}

fn two_backups_at_once(same_dir: bool) {
    let mut f = Fixture::new(if same_dir { 2 } else { 1 });
    let (a, b) = (f.path("alpha"), f.path("beta"));
    fill(&a, &mut f.rng, 40, 100_000, 900_000);
    fill(&b, &mut f.rng, 40, 100_000, 900_000);
    let b = if same_dir { a.clone() } else { b };
    // Both mid-way at the same time: the first is stopped until the second has a pack out.
    let first = f.start_backup(&a, &[]);
    signal(&first, Signal::STOP);
    let second = f.start_backup(&b, &[]);
    signal(&first, Signal::CONT);
    let (ra, rb) = (finish(first, "backup A"), finish(second, "backup B"));
    let (ia, ib) = (
        ra["snapshot_id"].as_str().unwrap(),
        rb["snapshot_id"].as_str().unwrap(),
    );
    assert_ne!(ia, ib);
    f.check();
    f.assert_restores(ia, &a);
    f.assert_restores(ib, &b);
    // Duplicates the two stored side by side are garbage for prune; both still restore.
    ok(lifeboat(&f.repo).arg("prune"), "prune");
    f.check();
    f.assert_restores(ia, &a);
    f.assert_restores(ib, &b);
}

#[test]
fn two_backups_of_different_dirs_at_once_both_restore() {
    two_backups_at_once(false);
}

#[test]
fn two_backups_of_the_same_dir_at_once_both_restore() {
    two_backups_at_once(true);
}

/// While a long backup runs, other snapshots are made, forgotten and pruned over and over.
/// The backup's source shares data with a snapshot forgotten in the first round, and its
/// own packs are not indexed until it ends: prune must hold all of that back.
#[test]
fn prune_beside_a_long_backup_never_deletes_what_it_uses() {
    let mut f = Fixture::new(3);
    let (long, shared, small) = (f.path("long"), f.path("long/a-shared"), f.path("small"));
    fill(&shared, &mut f.rng, 20, 200_000, 600_000);
    f.backup(&shared);
    fill(&long.join("b-new"), &mut f.rng, 160, 500_000, 1_500_000);
    let mut backup = f.start_backup(&long, &["--tag", "long"]);
    let (mut rounds, mut waited) = (0, 0);
    while backup.try_wait().unwrap().is_none() {
        rounds += 1;
        fill(&small, &mut f.rng, 3, 1_000, 50_000);
        f.backup(&small);
        let v = json(
            lifeboat(&f.repo).args([
                "forget",
                "--keep-last",
                "1",
                "--keep-tag",
                "long",
                "--prune",
            ]),
            "forget --prune",
        );
        if !v["prune"]["waiting_on"].as_array().unwrap().is_empty() {
            waited += 1;
        }
    }
    let done = finish(backup, "the long backup");
    eprintln!("{rounds} forget+prune rounds beside the backup, {waited} held packs back for it");
    assert!(
        waited > 0,
        "no prune ran beside the backup ({rounds} rounds); make the backup longer"
    );
    // A prune after the backup sweeps what was held back, keeping what it uses.
    ok(lifeboat(&f.repo).arg("prune"), "prune");
    f.check();
    f.assert_restores(done["snapshot_id"].as_str().unwrap(), &long);
}

/// The resurrection path: a backup that loaded the index before a prune condemned packs
/// builds on blobs in those packs (its data equals that of the only snapshot that used them,
/// which is forgotten meanwhile). The sweep must find the new snapshot and keep the packs.
#[test]
fn a_backup_that_reuses_condemned_packs_keeps_them_alive() {
    let mut f = Fixture::new(4);
    let (data, other) = (f.path("data"), f.path("other"));
    fill(&data.join("a-old"), &mut f.rng, 20, 200_000, 600_000);
    f.backup(&data);
    // Something newer, so that `forget --keep-last 1` forgets the snapshot of `data`.
    fill(&other, &mut f.rng, 2, 1_000, 2_000);
    let keep = f.backup(&other);
    // New data after the old, so the backup is still running when it has a pack out.
    fill(&data.join("b-new"), &mut f.rng, 12, 500_000, 1_000_000);
    let backup = f.start_backup(&data, &[]);
    signal(&backup, Signal::STOP);
    // The backup has loaded the index: the old snapshot's packs are usable to it.
    let v = json(
        lifeboat(&f.repo).args(["forget", "--keep-last", "1", "--prune"]),
        "forget --prune",
    );
    let p = &v["prune"];
    assert!(p["packs_condemned"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["packs_deleted"].as_u64(), Some(0), "{p}");
    assert!(!p["waiting_on"].as_array().unwrap().is_empty(), "{p}");
    signal(&backup, Signal::CONT);
    let done = finish(backup, "backup");
    let id = done["snapshot_id"].as_str().unwrap();
    let v = json(lifeboat(&f.repo).arg("prune"), "prune");
    assert!(
        v["packs_resurrected"].as_u64().unwrap() > 0,
        "the sweep should have kept condemned packs the new snapshot uses: {v}"
    );
    f.check();
    f.assert_restores(id, &data);
    f.assert_restores(&keep, &other);
    // Resurrected packs are ordinary packs again: a later prune keeps them too.
    ok(lifeboat(&f.repo).arg("prune"), "prune");
    f.check();
    f.assert_restores(id, &data);
}

/// Two prunes at once: one refuses with a clear message and a non-zero exit code, the other
/// completes, and nothing is damaged.
#[test]
fn two_prunes_at_once_one_refuses() {
    let mut f = Fixture::new(5);
    let data = f.path("data");
    let garbage = |f: &mut Fixture| {
        fill(&data, &mut f.rng, 10, 100_000, 400_000);
        f.backup(&data);
        ok(
            lifeboat(&f.repo).args(["forget", "--keep-last", "1"]),
            "forget",
        );
    };
    garbage(&mut f);
    garbage(&mut f);
    // Exact interleaving: the first holds its lease (stopped) while the second starts.
    let mut first = spawn(lifeboat(&f.repo).arg("prune"));
    let pid = first.id();
    wait_until("the first prune's lease", || {
        assert_running(&mut first, "the first prune");
        leases_of(&f.repo, pid).contains(&"prune".to_string())
    });
    signal(&first, Signal::STOP);
    let second = lifeboat(&f.repo).arg("prune").output().unwrap();
    signal(&first, Signal::CONT);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("another prune is running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    let report = finish(first, "the first prune");
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    f.check();
    // Started together, unsynchronised: never both refuse, a refusal is the clear one.
    for _ in 0..4 {
        garbage(&mut f);
        let (a, b) = (
            spawn(lifeboat(&f.repo).arg("prune")),
            spawn(lifeboat(&f.repo).arg("prune")),
        );
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        assert!(
            outs.iter().any(|o| o.status.success()),
            "both prunes refused:\n{}\n---\n{}",
            String::from_utf8_lossy(&outs[0].stderr),
            String::from_utf8_lossy(&outs[1].stderr)
        );
        for o in outs.iter().filter(|o| !o.status.success()) {
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{e}");
            assert!(e.contains("another prune is running"), "{e}");
        }
        f.check();
    }
    let last = f.snapshot_ids().pop().unwrap();
    f.assert_restores(&last, &data);
}

/// Deterministic form of the test above: the test itself holds a `backup --stdin` open in
/// the middle of its stream, so prunes certainly run while it is mid-way with packs no index
/// names yet; they must condemn them but not delete them, and the backup must restore.
#[test]
fn prune_beside_a_stdin_backup_held_open_deletes_nothing_it_wrote() {
    use std::io::Write;
    let mut f = Fixture::new(11);
    let small = f.path("small");
    fill(&small, &mut f.rng, 3, 1_000, 50_000);
    f.backup(&small);
    let mut data = vec![0u8; 14_000_000];
    f.rng.fill_bytes(&mut data);
    let base = count_packs(&f.repo);
    let mut child = lifeboat(&f.repo)
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
    // More than the chunker's buffer (2 x 4 MiB), so chunks and packs flow before the end.
    stdin.write_all(&data[..11_000_000]).unwrap();
    wait_until("the stdin backup's lease and first packs", || {
        assert_running(&mut child, "the stdin backup");
        leases_of(&f.repo, pid).contains(&"write".to_string()) && count_packs(&f.repo) > base
    });
    let mid_packs = count_packs(&f.repo);
    for _ in 0..3 {
        let v = json(
            lifeboat(&f.repo).args(["forget", "--keep-last", "1", "--prune"]),
            "forget --prune",
        );
        assert!(
            !v["prune"]["waiting_on"].as_array().unwrap().is_empty(),
            "prune must wait for the open backup: {v}"
        );
        assert!(
            count_packs(&f.repo) >= mid_packs,
            "prune deleted packs of the open backup"
        );
    }
    stdin.write_all(&data[11_000_000..]).unwrap();
    drop(stdin);
    let done = finish(child, "the stdin backup");
    let id = done["snapshot_id"].as_str().unwrap();
    // The next prune may sweep now; the backup's packs are used and must stay.
    ok(lifeboat(&f.repo).arg("prune"), "prune");
    f.check();
    let out = lifeboat(&f.repo)
        .args(["dump", &format!("{id}:dump.bin")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == data,
        "the stdin backup does not restore bit-identically"
    );
}
