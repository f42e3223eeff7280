//! Helpers for the CLI end-to-end tests: a temp workspace, a `lifeboat` command builder with
//! a cheap key-derivation cost, deterministic data, and tree comparison.
#![allow(dead_code, clippy::unwrap_used)]

pub mod pg;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp dir with a repository path and a password.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        Env { dir, repo }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `lifeboat` with this env's repository and password.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LIFEBOAT_REPOSITORY", &self.repo)
            .env("LIFEBOAT_PASSWORD", "correct horse battery staple")
            .env("LIFEBOAT_INSECURE_KDF_FOR_TESTS", "1"); // lets init use --kdf-memory 1MiB
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"]);
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Compressible text.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "order", "paid", "shipped", "cart", "sku", "price", "customer", "refund",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = seed as usize;
    while out.len() < n {
        out.extend_from_slice(words[i % words.len()].as_bytes());
        out.push(if i.is_multiple_of(11) { b'\n' } else { b' ' });
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(n);
    out
}

/// What a restore must reproduce of one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
}

/// Walks `root` (not following symlinks) and fingerprints every entry by relative path.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, Fingerprint> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Fingerprint>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            out.insert(
                rel,
                Fingerprint {
                    kind: kind.into(),
                    mode: md.mode() & 0o7777,
                    size: if ft.is_file() { md.size() } else { 0 },
                    content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                },
            );
            if ft.is_dir() {
                go(root, &p, out);
            }
        }
    }
    go(root, root, &mut out);
    out
}

/// Asserts two trees hold the same entries and bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    let ka: Vec<_> = fa.keys().collect();
    let kb: Vec<_> = fb.keys().collect();
    assert_eq!(
        ka,
        kb,
        "different entries in {} and {}",
        a.display(),
        b.display()
    );
    for (k, v) in &fa {
        assert!(
            v == &fb[k],
            "{} differs between {} and {}",
            k.display(),
            a.display(),
            b.display()
        );
    }
}

/// Asserts that `doc` (what `lifeboat … --json` printed) matches
/// docs/schema/`name`.json (formats such as `date-time` checked too), listing every
/// violation with where it is.
pub fn assert_schema(name: &str, doc: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schema")
        .join(format!("{name}.json"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: not a valid schema: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name}: the output does not match docs/schema/{name}.json:\n{}\noutput: {doc:#}",
        errors.join("\n")
    );
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
