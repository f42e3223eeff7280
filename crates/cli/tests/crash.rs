//! Crash safety: `backup`, `prune` and `copy` are killed with SIGKILL at randomized points.
//!
//! After each kill the repository must pass `check --read-data`, accept a new backup, keep
//! every snapshot that existed before the kill, and restore each of them bit for bit (file
//! contents, sizes, modes, symlink targets, the exact set of entries). Copy kills also
//! check the DR repository the same way: a snapshot it shows must restore completely.
//!
//! Kill delays are fractions of the command's run time, measured first (and re-measured
//! whenever a command finishes before its kill), spread from early to late.
//!
//! Replay: every test prints its seed; `LIFEBOAT_CRASH_SEED=<seed>` reruns the same data
//! and the same kill fractions (the absolute delays follow this machine's speed).
//! `LIFEBOAT_CRASH_KILLS=<n>` changes the number of kills per test.
//!
//! The expected contents of every snapshot are kept as hard links: every version of every
//! file is written once into `store/<version>` and linked into the backed-up tree, and the
//! tree is only ever changed by replacing files, so `store/` still holds what each snapshot
//! saw.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

const PASSWORD: &str = "crash-test";

/// What a path in the backed-up tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A regular file: its contents and mode are those of `store/<version>`.
    File(u64),
    Dir,
    Link(String),
}

/// The contents of the backed-up tree, by path relative to its root.
type Manifest = BTreeMap<String, Entry>;

/// How a run that was to be killed ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ran {
    Killed,
    Finished(Duration),
}

/// One test's world: source tree, repositories, expected snapshot contents.
struct World {
    _tmp: tempfile::TempDir,
    name: &'static str,
    seed: u64,
    rng: StdRng,
    repo: PathBuf,
    dr: PathBuf,
    data: PathBuf,
    store: PathBuf,
    scratch: PathBuf,
    tree: Manifest,
    next_version: u64,
    /// Expected contents by snapshot id (source ids; DR snapshots point to them).
    expected: HashMap<String, Manifest>,
    kills: Vec<(f64, Duration)>,
    finished_early: usize,
}

fn seed_for(name: &str) -> u64 {
    match std::env::var("LIFEBOAT_CRASH_SEED") {
        Ok(s) => s.parse().expect("LIFEBOAT_CRASH_SEED must be an integer"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (name.len() as u64) << 56
        }
    }
}

fn kills_wanted(default: usize) -> usize {
    std::env::var("LIFEBOAT_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn lifeboat(repo: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_INSECURE_KDF_FOR_TESTS", "1") // --kdf-memory 1MiB
        .env("LIFEBOAT_REPOSITORY", repo)
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .env_remove("LIFEBOAT_TO_PASSWORD")
        .env_remove("LIFEBOAT_TO_PASSWORD_FILE")
        .env_remove("LIFEBOAT_LOG")
        .arg("--no-progress")
        .stdin(Stdio::null());
    c
}

/// Bytes that are partly random, partly compressible text.
fn content(rng: &mut StdRng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lifeboat", "backup", "snapshot", "pack", "index", "restore", "prune", "lease", "copy",
        "region", "disaster", "recovery", "\n",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = rng.random_range(4096..65536).min(len - out.len());
        if rng.random_bool(0.5) {
            let start = out.len();
            out.resize(start + run, 0);
            rng.fill_bytes(&mut out[start..]);
        } else {
            let end = out.len() + run;
            while out.len() < end {
                let w = WORDS[rng.random_range(0..WORDS.len())].as_bytes();
                let n = w.len().min(end - out.len());
                out.extend_from_slice(&w[..n]);
                if out.len() < end {
                    out.push(b' ');
                }
            }
        }
    }
    out
}

const MODES: &[u32] = &[0o644, 0o600, 0o640, 0o755, 0o444];

impl World {
    fn new(name: &'static str) -> World {
        let seed = seed_for(name);
        eprintln!("{name}: seed {seed} (replay with LIFEBOAT_CRASH_SEED={seed})");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["src/data", "store", "scratch"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut w = World {
            name,
            seed,
            rng: StdRng::seed_from_u64(seed),
            repo: root.join("repo"),
            dr: root.join("dr"),
            data: root.join("src/data"),
            store: root.join("store"),
            scratch: root.join("scratch"),
            _tmp: tmp,
            tree: Manifest::new(),
            next_version: 0,
            expected: HashMap::new(),
            kills: Vec::new(),
            finished_early: 0,
        };
        w.ok(
            lifeboat(&w.repo).args(["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"]),
            "init",
        );
        w.populate();
        w
    }

    fn ok(&self, cmd: &mut Command, what: &str) -> Output {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{} (seed {}): `{what}` failed with {}:\n{}{}",
            self.name,
            self.seed,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn json(&self, cmd: &mut Command, what: &str) -> serde_json::Value {
        let out = self.ok(cmd.arg("--json"), what);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", out.stdout))
    }

    // ---- the source tree ----------------------------------------------------------------

    /// Writes a new version of the file `rel` (replacing any old one).
    fn put_file(&mut self, rel: &str, bytes: &[u8], mode: u32) {
        let v = self.next_version;
        self.next_version += 1;
        let stored = self.store.join(v.to_string());
        fs::write(&stored, bytes).unwrap();
        fs::set_permissions(&stored, fs::Permissions::from_mode(mode)).unwrap();
        let target = self.data.join(rel);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let link = self.scratch.join("new-link");
        let _ = fs::remove_file(&link);
        fs::hard_link(&stored, &link).unwrap();
        fs::rename(&link, &target).unwrap();
        self.tree.insert(rel.to_string(), Entry::File(v));
        let mut dir = Path::new(rel).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            self.tree
                .insert(d.to_string_lossy().into_owned(), Entry::Dir);
            dir = d.parent();
        }
    }

    fn small_file(&mut self, rel: &str) {
        let len = match self.rng.random_range(0..10) {
            0 => 0,
            1..=6 => self.rng.random_range(1..8192),
            _ => self.rng.random_range(8192..65536),
        };
        let bytes = content(&mut self.rng, len);
        let mode = MODES[self.rng.random_range(0..MODES.len())];
        self.put_file(rel, &bytes, mode);
    }

    fn big_file(&mut self, rel: &str) {
        let len = self.rng.random_range(3 << 20..6 << 20);
        let bytes = content(&mut self.rng, len);
        self.put_file(rel, &bytes, 0o644);
    }

    /// About 25 MB: 16 directories of 20 small files, four files of 3–6 MB, symlinks and an
    /// empty directory.
    fn populate(&mut self) {
        for d in 0..16 {
            for f in 0..20 {
                self.small_file(&format!("d{d:02}/f{f:03}"));
            }
        }
        for b in 0..4 {
            self.big_file(&format!("big/b{b}"));
        }
        symlink("d00/f000", self.data.join("link-rel")).unwrap();
        self.tree
            .insert("link-rel".into(), Entry::Link("d00/f000".into()));
        symlink("/nonexistent/target", self.data.join("d01/dangling")).unwrap();
        self.tree.insert(
            "d01/dangling".into(),
            Entry::Link("/nonexistent/target".into()),
        );
        fs::create_dir_all(self.data.join("empty")).unwrap();
        self.tree.insert("empty".into(), Entry::Dir);
    }

    /// Changes the tree as a day of work would: one big file rewritten, small files
    /// changed, added, removed and chmod-ed.
    fn mutate(&mut self) {
        let b = self.rng.random_range(0..4);
        self.big_file(&format!("big/b{b}"));
        let files: Vec<String> = self
            .tree
            .iter()
            .filter(|(p, e)| matches!(e, Entry::File(_)) && p.starts_with('d'))
            .map(|(p, _)| p.clone())
            .collect();
        for _ in 0..12 {
            let p = &files[self.rng.random_range(0..files.len())];
            self.small_file(p);
        }
        for _ in 0..4 {
            let d = self.rng.random_range(0..16);
            let n = self.next_version;
            self.small_file(&format!("d{d:02}/new{n}"));
        }
        for _ in 0..3 {
            let p = &files[self.rng.random_range(0..files.len())];
            if self
                .tree
                .get(p)
                .is_some_and(|e| matches!(e, Entry::File(_)))
                && p != "d00/f000"
            {
                fs::remove_file(self.data.join(p)).unwrap();
                self.tree.remove(p);
            }
        }
        for _ in 0..2 {
            let p = files[self.rng.random_range(0..files.len())].clone();
            if let Some(Entry::File(v)) = self.tree.get(&p) {
                let bytes = fs::read(self.store.join(v.to_string())).unwrap();
                let mode = MODES[self.rng.random_range(0..MODES.len())];
                self.put_file(&p, &bytes, mode);
            }
        }
    }

    // ---- repositories -------------------------------------------------------------------

    /// Snapshot ids of `repo`, each with the source snapshot it was copied from.
    fn snapshots(&self, repo: &Path) -> BTreeMap<String, Option<String>> {
        let v = self.json(lifeboat(repo).arg("snapshots"), "snapshots");
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["original"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// A complete backup of the current tree; returns its snapshot id.
    fn backup(&mut self) -> (String, Duration) {
        let start = Instant::now();
        let v = self.json(lifeboat(&self.repo).arg("backup").arg(&self.data), "backup");
        let took = start.elapsed();
        assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "backup: {v}");
        let id = v["snapshot_id"].as_str().unwrap().to_string();
        self.expected.insert(id.clone(), self.tree.clone());
        (id, took)
    }

    fn check(&self, repo: &Path, when: &str) {
        let out = lifeboat(repo)
            .args(["check", "--read-data"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} (seed {}): `check --read-data` of {} {when} exited with {}:\n{}{}",
            self.name,
            self.seed,
            repo.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `forget --keep-last n`, with `--prune` when asked; asserts that the prune was not held
    /// up by anybody's lease (a killed process's lease is dead at once).
    fn forget(&self, repo: &Path, keep: usize, prune: bool) {
        let keep = keep.to_string();
        let mut cmd = lifeboat(repo);
        cmd.args(["forget", "--keep-last", &keep]);
        if prune {
            cmd.arg("--prune");
        }
        let v = self.json(&mut cmd, "forget");
        if prune {
            let waiting = &v["prune"]["waiting_on"];
            assert!(
                waiting.as_array().is_none_or(Vec::is_empty),
                "{} (seed {}): prune waited for leases although nothing else runs: {waiting}",
                self.name,
                self.seed
            );
        }
    }

    /// Restores `id` from `repo` and compares it with `want`, entry by entry, byte by byte.
    fn verify_restore(&self, repo: &Path, id: &str, want: &Manifest, when: &str) {
        let out = self.scratch.join("restore");
        let _ = fs::remove_dir_all(&out);
        self.ok(
            lifeboat(repo).args(["restore", id, "--target"]).arg(&out),
            &format!("restore {id} {when}"),
        );
        let root = out.join("data");
        let mut got = BTreeMap::new();
        walk(&root, String::new(), &mut got);
        let ctx = format!(
            "{} (seed {}): snapshot {} of {} {when}",
            self.name,
            self.seed,
            &id[..8],
            repo.display()
        );
        let want_paths: BTreeSet<&String> = want.keys().collect();
        let got_paths: BTreeSet<&String> = got.keys().collect();
        assert_eq!(
            got_paths, want_paths,
            "{ctx}: restored entries differ from the backed-up ones"
        );
        for (path, entry) in want {
            let restored = root.join(path);
            let md = fs::symlink_metadata(&restored).unwrap();
            match entry {
                Entry::Dir => assert!(md.is_dir(), "{ctx}: {path} is not a directory"),
                Entry::Link(t) => {
                    assert!(
                        md.file_type().is_symlink(),
                        "{ctx}: {path} is not a symlink"
                    );
                    assert_eq!(
                        fs::read_link(&restored).unwrap(),
                        PathBuf::from(t),
                        "{ctx}: {path}"
                    );
                }
                Entry::File(v) => {
                    let stored = self.store.join(v.to_string());
                    let smd = fs::metadata(&stored).unwrap();
                    assert!(md.is_file(), "{ctx}: {path} is not a file");
                    assert_eq!(md.len(), smd.len(), "{ctx}: size of {path}");
                    assert_eq!(
                        md.permissions().mode() & 0o7777,
                        smd.permissions().mode() & 0o7777,
                        "{ctx}: mode of {path}"
                    );
                    // Compare as bytes; a mode like 0o444 still lets the owner read.
                    let (a, b) = (fs::read(&restored).unwrap(), fs::read(&stored).unwrap());
                    assert!(a == b, "{ctx}: contents of {path} differ");
                }
            }
        }
        fs::remove_dir_all(&out).unwrap();
    }

    /// Restores every snapshot of `repo`; each must be one whose contents we know.
    fn verify_all(&self, repo: &Path, when: &str) {
        for (id, original) in self.snapshots(repo) {
            let source = original.unwrap_or_else(|| id.clone());
            let want = self.expected.get(&source).unwrap_or_else(|| {
                panic!(
                    "{} (seed {}): {} shows snapshot {} {when}, which no backup made",
                    self.name,
                    self.seed,
                    repo.display(),
                    &id[..8]
                )
            });
            self.verify_restore(repo, &id, want, when);
        }
    }

    /// Forgets file versions that no snapshot anywhere and not the tree refer to.
    fn collect_store(&mut self) {
        let mut live_ids: BTreeSet<String> = BTreeSet::new();
        for repo in [&self.repo, &self.dr] {
            if repo.join("config").exists() {
                for (id, original) in self.snapshots(repo) {
                    live_ids.insert(original.unwrap_or(id));
                }
            }
        }
        self.expected.retain(|id, _| live_ids.contains(id));
        let mut live: BTreeSet<u64> = BTreeSet::new();
        for m in self.expected.values().chain([&self.tree]) {
            live.extend(m.values().filter_map(|e| match e {
                Entry::File(v) => Some(*v),
                _ => None,
            }));
        }
        for e in fs::read_dir(&self.store).unwrap() {
            let e = e.unwrap();
            let v: u64 = e.file_name().to_string_lossy().parse().unwrap();
            if !live.contains(&v) {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }

    // ---- kills --------------------------------------------------------------------------

    /// Runs `cmd` and kills it with SIGKILL `delay` after the start, unless it finished
    /// first (then it must have succeeded).
    fn run_and_kill(&mut self, cmd: &mut Command, what: &str, delay: Duration) -> Ran {
        let log = self.scratch.join("killed.log");
        cmd.stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() >= delay {
                child.kill().unwrap();
                // Reap it: a zombie would still own its pid.
                break child.wait().unwrap();
            }
            // Poll interval of the deadline wait above, not a synchronisation.
            std::thread::sleep(Duration::from_micros(300));
        };
        let took = start.elapsed();
        if status.signal() == Some(9) {
            return Ran::Killed;
        }
        assert!(
            status.success(),
            "{} (seed {}): `{what}` (to be killed after {delay:?}) failed on its own with {status}:\n{}",
            self.name,
            self.seed,
            fs::read_to_string(&log).unwrap_or_default()
        );
        self.finished_early += 1;
        Ran::Finished(took)
    }

    /// Kill fractions spread over the run time: `n` strata from 1 % to 97 %, shuffled.
    fn fractions(&mut self, n: usize) -> Vec<f64> {
        let mut f: Vec<f64> = (0..n)
            .map(|k| 0.01 + 0.96 * (k as f64 + self.rng.random::<f64>()) / n as f64)
            .collect();
        f.shuffle(&mut self.rng);
        f
    }

    fn report(&self, what: &str, started: Instant) {
        let third = |lo: f64, hi: f64| self.kills.iter().filter(|k| k.0 >= lo && k.0 < hi).count();
        eprintln!(
            "{}: {} {what} kills (early {}, mid {}, late {}; delays {:?}..{:?}), {} finished before their kill, {:.1?} in all",
            self.name,
            self.kills.len(),
            third(0.0, 1.0 / 3.0),
            third(1.0 / 3.0, 2.0 / 3.0),
            third(2.0 / 3.0, 1.0),
            self.kills.iter().map(|k| k.1).min().unwrap_or_default(),
            self.kills.iter().map(|k| k.1).max().unwrap_or_default(),
            self.finished_early,
            started.elapsed()
        );
    }
}

fn walk(dir: &Path, prefix: String, out: &mut BTreeMap<String, ()>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let rel = if prefix.is_empty() {
            e.file_name().to_string_lossy().into_owned()
        } else {
            format!("{prefix}/{}", e.file_name().to_string_lossy())
        };
        let ft = e.file_type().unwrap();
        out.insert(rel.clone(), ());
        if ft.is_dir() {
            walk(&e.path(), rel, out);
        }
    }
}

/// Copies the directory `from` to `to` (files and directories only, as repositories hold).
fn clone_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            clone_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

impl World {
    /// How long `cmd` takes in the present state: it runs to completion against a copy of
    /// `repo` (the repository it changes); `cmd` gets the copy's path.
    fn measure(&self, repo: &Path, cmd: impl Fn(&Path) -> Command, what: &str) -> Duration {
        let copy = self.scratch.join("measure");
        let _ = fs::remove_dir_all(&copy);
        clone_dir(repo, &copy);
        let start = Instant::now();
        self.ok(&mut cmd(&copy), what);
        let took = start.elapsed();
        fs::remove_dir_all(&copy).unwrap();
        took
    }

    /// Kills `cmd` (against `repo`) at fraction `f` of its run time measured just before.
    fn kill_measured(
        &mut self,
        f: f64,
        repo: &Path,
        cmd: impl Fn(&Path) -> Command,
        what: &str,
    ) -> (Ran, Duration) {
        let t = self.measure(repo, &cmd, what);
        let d = t.mul_f64(f);
        (self.run_and_kill(&mut cmd(repo), what, d), d)
    }
}

#[test]
fn backup_killed_at_random_points_loses_nothing() {
    let started = Instant::now();
    let mut w = World::new("backup kills");
    let n = kills_wanted(20);
    w.backup();
    let mut fractions = w.fractions(n);
    let mut attempts = 0;
    while let Some(f) = fractions.pop() {
        attempts += 1;
        assert!(
            attempts <= 3 * n,
            "backups keep finishing before their kill"
        );
        w.mutate();
        let before = w.snapshots(&w.repo);
        let pending = w.tree.clone();
        let (repo, data) = (w.repo.clone(), w.data.clone());
        let (ran, d) = w.kill_measured(
            f,
            &repo,
            |r| {
                let mut c = lifeboat(r);
                c.arg("backup").arg(&data);
                c
            },
            "backup",
        );
        let after = w.snapshots(&w.repo);
        for id in before.keys() {
            assert!(
                after.contains_key(id),
                "snapshot {id} vanished after a backup kill"
            );
        }
        let new: Vec<&String> = after
            .keys()
            .filter(|id| !before.contains_key(*id))
            .collect();
        match ran {
            Ran::Finished(_) => {
                assert_eq!(new.len(), 1, "a finished backup makes one snapshot");
                fractions.push(w.rng.random_range(0.01..0.97));
            }
            Ran::Killed => {
                assert!(
                    new.len() <= 1,
                    "a killed backup made {} snapshots",
                    new.len()
                );
                w.kills.push((f, d));
            }
        }
        // A snapshot the killed backup managed to commit must be complete too.
        for id in new {
            w.expected.insert(id.clone(), pending.clone());
        }
        let when = format!("after a backup killed at {:.0}% ({d:?})", f * 100.0);
        w.check(&w.repo, &when);
        w.verify_all(&w.repo, &when);
        w.backup();
        w.forget(&w.repo, 2, true);
        w.collect_store();
    }
    w.check(&w.repo, "at the end");
    w.verify_all(&w.repo, "at the end");
    assert!(w.kills.len() >= n);
    w.report("backup", started);
}

#[test]
fn prune_killed_at_random_points_loses_nothing() {
    let started = Instant::now();
    let mut w = World::new("prune kills");
    let n = kills_wanted(20);
    w.backup();
    let mut fractions = w.fractions(n);
    let mut attempts = 0;
    while let Some(f) = fractions.pop() {
        attempts += 1;
        assert!(attempts <= 3 * n, "prunes keep finishing before their kill");
        // Garbage for prune: newer snapshots, the older ones forgotten (without pruning).
        for _ in 0..2 {
            w.mutate();
            w.backup();
        }
        w.forget(&w.repo, 1, false);
        let before = w.snapshots(&w.repo);
        let repo = w.repo.clone();
        let (ran, d) = w.kill_measured(
            f,
            &repo,
            |r| {
                let mut c = lifeboat(r);
                c.arg("prune");
                c
            },
            "prune",
        );
        assert_eq!(
            w.snapshots(&w.repo),
            before,
            "prune must never add or remove snapshots"
        );
        match ran {
            Ran::Finished(_) => fractions.push(w.rng.random_range(0.01..0.97)),
            Ran::Killed => w.kills.push((f, d)),
        }
        let when = format!("after a prune killed at {:.0}% ({d:?})", f * 100.0);
        w.check(&w.repo, &when);
        w.verify_all(&w.repo, &when);
        w.backup();
        w.collect_store();
    }
    // What the killed prunes left (records, unindexed packs) is cleaned up by a full one.
    w.forget(&w.repo, 1, true);
    w.check(&w.repo, "at the end");
    w.verify_all(&w.repo, "at the end");
    assert!(w.kills.len() >= n);
    w.report("prune", started);
}

#[test]
fn copy_killed_at_random_points_never_shows_a_snapshot_with_missing_data() {
    let started = Instant::now();
    let mut w = World::new("copy kills");
    let n = kills_wanted(15);
    let (repo, dr) = (w.repo.clone(), w.dr.clone());
    let src = repo.to_string_lossy().into_owned();
    w.ok(
        lifeboat(&dr).args([
            "init",
            "--kdf-memory",
            "1MiB",
            "--pack-size",
            "1MiB",
            "--copy-params-from",
            &src,
        ]),
        "init DR",
    );
    let to = dr.to_string_lossy().into_owned();
    w.backup();
    w.ok(lifeboat(&repo).args(["copy", "--to", &to]), "copy");
    let mut fractions = w.fractions(n);
    let mut attempts = 0;
    while let Some(f) = fractions.pop() {
        attempts += 1;
        assert!(attempts <= 3 * n, "copies keep finishing before their kill");
        // Two new snapshots to copy, so that a kill can fall between them.
        for _ in 0..2 {
            w.mutate();
            w.backup();
        }
        let before_src = w.snapshots(&repo);
        let before_dr = w.snapshots(&dr);
        let (ran, d) = w.kill_measured(
            f,
            &dr,
            |target| {
                let mut c = lifeboat(&repo);
                c.args(["copy", "--to"]).arg(target);
                c
            },
            "copy",
        );
        match ran {
            Ran::Finished(_) => fractions.push(w.rng.random_range(0.01..0.97)),
            Ran::Killed => w.kills.push((f, d)),
        }
        assert_eq!(w.snapshots(&repo), before_src, "copy changed its source");
        let after_dr = w.snapshots(&dr);
        for id in before_dr.keys() {
            assert!(
                after_dr.contains_key(id),
                "DR snapshot {id} vanished after a copy kill"
            );
        }
        let when = format!("after a copy killed at {:.0}% ({d:?})", f * 100.0);
        w.check(&repo, &when);
        w.verify_all(&repo, &when);
        w.check(&dr, &when);
        w.verify_all(&dr, &when);
        // The rerun completes and leaves every source snapshot in DR.
        w.ok(lifeboat(&repo).args(["copy", "--to", &to]), "copy rerun");
        let originals: BTreeSet<String> = w
            .snapshots(&dr)
            .into_iter()
            .map(|(id, o)| o.unwrap_or(id))
            .collect();
        for id in w.snapshots(&repo).keys() {
            assert!(
                originals.contains(id),
                "the rerun of copy did not copy {id}"
            );
        }
        w.backup();
        w.forget(&repo, 2, true);
        w.forget(&dr, 3, true);
        w.collect_store();
    }
    w.check(&dr, "at the end");
    w.verify_all(&dr, "at the end");
    assert!(w.kills.len() >= n);
    w.report("copy", started);
}
