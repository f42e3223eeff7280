//! Hostile storage: every byte flipped, every file truncated or deleted anywhere in the
//! repository is reported by `check --read-data` naming the file (exit 1); restore of damaged
//! data fails loudly naming the affected files and restores everything else; later backups
//! do not build on damaged blobs.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A repository with two snapshots over several packs.
fn populated() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("catalog")).unwrap();
    for i in 0..40u64 {
        std::fs::write(
            src.join(format!("catalog/p{i}.json")),
            text(20_000 + i as usize, i),
        )
        .unwrap();
    }
    std::fs::write(src.join("image.jpg"), noise(2_500_000, 7)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("catalog/p1.json"), b"edited").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    (env, src)
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Repository files that hold data (leases and temp files are not data).
fn repo_files(repo: &Path) -> Vec<PathBuf> {
    files_under(repo)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(repo).unwrap().to_string_lossy().into_owned();
            !(rel.starts_with("locks/") || rel.starts_with(".tmp") || rel.starts_with("damaged/"))
        })
        .collect()
}

fn check_names(env: &Env, rel: &str, what: &str) {
    let o = env.run(&["check", "--read-data"]);
    let err = stderr(&o);
    assert_eq!(
        code(&o),
        1,
        "{what} {rel}: check must exit 1, got {:?}: {err}",
        o.status.code()
    );
    assert!(
        err.contains(rel),
        "{what} {rel}: check output does not name the file:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn every_flipped_byte_truncation_and_deletion_is_reported_with_the_file_named() {
    let (env, _src) = populated();
    let files = repo_files(&env.repo);
    assert!(
        files
            .iter()
            .filter(|f| f.to_string_lossy().contains("/data/"))
            .count()
            >= 3,
        "want several packs"
    );
    let mut seed = 12345u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    for f in &files {
        let rel = f
            .strip_prefix(&env.repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let len = std::fs::metadata(f).unwrap().len();
        for what in ["flip", "truncate", "delete"] {
            // Deleting a snapshot file is indistinguishable from `forget`, and a deleted index
            // file cannot be named (its name is gone); those are checked separately below.
            if what == "delete" && (rel.starts_with("snapshots/") || rel.starts_with("index/")) {
                continue;
            }
            let case = Env {
                dir: tempfile::tempdir().unwrap(),
                repo: PathBuf::new(),
            };
            let repo = case.dir.path().join("repo");
            copy_dir(&env.repo, &repo);
            let case = Env {
                repo: repo.clone(),
                ..case
            };
            let target = repo.join(&rel);
            match what {
                "flip" => {
                    let mut b = std::fs::read(&target).unwrap();
                    let at = rnd(len) as usize;
                    b[at] ^= 1 << rnd(8);
                    std::fs::write(&target, b).unwrap();
                }
                "truncate" => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&target)
                        .unwrap();
                    f.set_len(rnd(len)).unwrap();
                }
                _ => std::fs::remove_file(&target).unwrap(),
            }
            // Key and config damage stop the repository from opening: the error names them.
            let name = if rel.starts_with("keys/") && what == "delete" {
                "keys"
            } else {
                rel.as_str()
            };
            check_names(&case, name, what);
        }
    }
}

#[test]
fn a_deleted_index_file_is_reported_as_lost_data() {
    let (env, _src) = populated();
    let idx = repo_files(&env.repo)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/index/"))
        .unwrap();
    std::fs::remove_file(idx).unwrap();
    let o = env.run(&["check", "--read-data"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no index") || err.contains("not in any index"),
        "{err}"
    );
    assert!(
        err.contains("snapshots/"),
        "the affected snapshot is named: {err}"
    );
}

#[test]
fn restore_of_damaged_data_names_the_files_restores_the_rest_and_backup_heals() {
    let (env, src) = populated();
    // Damage the pack holding image.jpg's data (the largest pack).
    let packs: Vec<PathBuf> = repo_files(&env.repo)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/data/"))
        .collect();
    let big = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut b = std::fs::read(&big).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&big, b).unwrap();

    let t = env.path("t1");
    let o = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("src/image.jpg"),
        "restore must name the damaged file: {err}"
    );
    let rel = big
        .strip_prefix(&env.repo)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&rel),
        "restore must name the damaged pack: {err}"
    );
    // Everything else was restored bit for bit.
    for i in 2..40u64 {
        let f = format!("src/catalog/p{i}.json");
        assert_eq!(
            std::fs::read(t.join(&f)).unwrap(),
            text(20_000 + i as usize, i),
            "{f}"
        );
    }

    // check finds and records the damage; the next backup stores fresh copies.
    assert_eq!(code(&env.run(&["check", "--read-data"])), 1);
    let v = env.json(&["backup", src.to_str().unwrap(), "--force"]);
    assert!(
        v["summary"]["blobs_added"].as_u64().unwrap() > 0,
        "backup must not build on damaged blobs: {v}"
    );
    let t2 = env.path("t2");
    env.ok(&["restore", "latest", "--target", t2.to_str().unwrap()]);
    assert_same_tree(&src, &t2.join("src"));
    // A plain (unforced) backup also re-reads files whose blobs are damaged.
    std::fs::write(src.join("image.jpg"), noise(2_500_000, 7)).unwrap();
    let t3 = env.path("t3");
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["restore", "latest", "--target", t3.to_str().unwrap()]);
    assert_same_tree(&src, &t3.join("src"));
}

#[test]
fn a_backup_after_a_pack_was_deleted_or_truncated_stores_the_data_again_without_a_check() {
    for what in ["delete", "truncate"] {
        let (env, src) = populated();
        let packs: Vec<PathBuf> = repo_files(&env.repo)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("/data/"))
            .collect();
        let big = packs
            .iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        if what == "delete" {
            std::fs::remove_file(big).unwrap();
        } else {
            let f = std::fs::OpenOptions::new().write(true).open(big).unwrap();
            f.set_len(1000).unwrap();
        }
        // No check in between: backup itself notices the pack is gone or short.
        let v = env.json(&["backup", src.to_str().unwrap(), "--force"]);
        assert!(
            v["summary"]["blobs_added"].as_u64().unwrap() > 0,
            "{what}: {v}"
        );
        let t = env.path("t");
        env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
        assert_same_tree(&src, &t.join("src"));
    }
}

#[test]
fn prune_refuses_with_exit_1_when_a_snapshot_is_damaged_and_deletes_nothing() {
    let (env, _src) = populated();
    env.ok(&["forget", "--keep-last", "1"]);
    let snap = repo_files(&env.repo)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/snapshots/"))
        .unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    b[30] ^= 4;
    std::fs::write(&snap, b).unwrap();
    let before = repo_files(&env.repo).len();
    let o = env.run(&["prune"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing was deleted"), "{}", stderr(&o));
    assert_eq!(repo_files(&env.repo).len(), before, "prune deleted files");
}

#[test]
fn prune_removes_temp_files_killed_writers_left_but_not_fresh_ones() {
    let (env, _src) = populated();
    let tmp = env.repo.join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let old = tmp.join("stage-999999-0");
    let fresh = tmp.join("stage-999999-1");
    std::fs::write(&old, vec![0u8; 1000]).unwrap();
    std::fs::write(&fresh, vec![0u8; 1000]).unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let v = env.json(&["prune"]);
    assert_eq!(v["temp_files_removed"], 1, "{v}");
    assert!(!old.exists() && fresh.exists());
}
