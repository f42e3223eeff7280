//! `lifeboat demo`: Lifeboat's main job on its embedded defaults, in one command. It backs up
//! a directory (or a generated sample shop tree) into a local repository, lists the
//! snapshots, restores the newest into a scratch directory, verifies the restore byte for
//! byte, and checks every byte of the repository. Never here: anything a real deployment
//! should rely on (the demo password is fixed unless LIFEBOAT_PASSWORD is set).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use lifeboat_repo::check::{check, CheckOptions, ReadData};
use lifeboat_repo::{InitOptions, KdfParams, Repository};
use lifeboat_sources::backup::{backup, BackupOptions};
use lifeboat_sources::restore::{restore, RestoreOptions, Selection};
use lifeboat_sources::Progress;
use lifeboat_storage::{Location, Storage, StorageOptions};

use crate::cli::{DemoCmd, Global};
use crate::output::{bytes, line};

/// Writes a small, deterministic shop-like tree: product JSON, orders, a fake image.
fn sample_tree(root: &Path) -> Result<()> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for dir in ["catalog", "orders/2026/11", "media", "config"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    for i in 0..200 {
        let price = next() % 10_000;
        std::fs::write(
            root.join(format!("catalog/sku-{i:04}.json")),
            format!("{{\"sku\":\"sku-{i:04}\",\"price_cents\":{price},\"title\":\"Product {i}\",\"stock\":{}}}\n", next() % 500),
        )?;
    }
    for i in 0..300 {
        std::fs::write(
            root.join(format!("orders/2026/11/order-{i:05}.json")),
            format!(
                "{{\"order\":{i},\"total_cents\":{},\"status\":\"paid\"}}\n",
                next() % 100_000
            ),
        )?;
    }
    let image: Vec<u8> = (0..2_000_000).map(|_| (next() >> 24) as u8).collect();
    std::fs::write(root.join("media/hero.jpg"), image)?;
    std::fs::write(
        root.join("config/shop.yaml"),
        "currency: EUR\ncheckout: enabled\n",
    )?;
    Ok(())
}

fn same_tree(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(a)? {
        let entry = entry?;
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let md = std::fs::symlink_metadata(&pa)?;
        if md.is_dir() {
            n += same_tree(&pa, &pb)?;
        } else if md.is_file() {
            if std::fs::read(&pa)?
                != std::fs::read(&pb).with_context(|| format!("read {}", pb.display()))?
            {
                bail!("{} differs after restore", pb.display());
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Runs the demo.
pub fn run(g: &Global, c: &DemoCmd) -> Result<u8> {
    if g.json {
        return Err(crate::commands::usage(
            "demo prints a walk-through for people and has no --json output",
            Some("leave out --json; `backup`, `snapshots`, `restore` and `check` take it"),
        ));
    }
    let work = c
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("lifeboat-demo"));
    let repo_path = match &g.repo {
        Some(r) => PathBuf::from(r),
        None => work.join("repo"),
    };
    let password = std::env::var("LIFEBOAT_PASSWORD").unwrap_or_else(|_| "lifeboat-demo".into());
    let source = match &c.source {
        Some(s) => s.clone(),
        None => {
            let s = work.join("sample-shop");
            if !s.exists() {
                sample_tree(&s).context("write the sample shop tree")?;
            }
            s
        }
    };
    line(&format!(
        "1. repository: {} (local, the embedded default)",
        repo_path.display()
    ))?;
    let storage = Storage::create(
        &Location::Local(repo_path.clone()),
        &StorageOptions::default(),
    )?;
    let repo = match Repository::open(storage.clone(), password.as_bytes()) {
        Ok(r) => r,
        Err(lifeboat_repo::Error::NotARepository { .. }) => {
            let opts = InitOptions {
                kdf: KdfParams::default(),
                ..InitOptions::default()
            };
            let r = Repository::init(storage, password.as_bytes(), &opts)?;
            line("   created it (password: $LIFEBOAT_PASSWORD or \"lifeboat-demo\")")?;
            r
        }
        Err(e) => return Err(e.into()),
    };
    line(&format!("2. backup of {}", source.display()))?;
    let report = backup(
        &repo,
        std::slice::from_ref(&source),
        &BackupOptions {
            readers: 2,
            ..BackupOptions::default()
        },
        &Progress::default(),
    )?;
    let s = &report.summary;
    line(&format!(
        "   snapshot {}: {} files, {} ({} new data, {} stored) in {:.2}s",
        report.snapshot_id.short(),
        s.files,
        bytes(s.bytes),
        bytes(s.added_bytes),
        bytes(s.stored_bytes),
        s.duration_seconds
    ))?;
    let (snaps, _) = repo.snapshots()?;
    line(&format!(
        "3. the repository holds {} snapshot(s); newest first:",
        snaps.len()
    ))?;
    for (id, snap) in snaps.iter().rev().take(5) {
        line(&format!(
            "   {}  {}  {}",
            id.short(),
            crate::output::time(&snap.time),
            snap.paths.join(" ")
        ))?;
    }
    let target = work.join("restored");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    let (sid, snap) = repo.find_snapshot("latest")?;
    let index = repo.load_index()?;
    let r = restore(
        &repo,
        &index,
        Selection {
            tree: &snap.tree,
            subpath: b"",
            snapshot: &sid.short(),
        },
        &target,
        &RestoreOptions::default(),
        &Progress::default(),
    )?;
    if !r.errors.is_empty() {
        bail!(
            "restore reported {} problem(s): {:?}",
            r.errors.len(),
            r.errors
        );
    }
    let name = source.file_name().map(PathBuf::from).unwrap_or_default();
    let files = same_tree(&source, &target.join(name))?;
    line(&format!(
        "4. restored {} into {}: {files} files identical to the source",
        sid.short(),
        target.display()
    ))?;
    let ck = check(
        &repo,
        &CheckOptions {
            read_data: ReadData::All,
            threads: 2,
            ..CheckOptions::default()
        },
    )?;
    if !ck.is_ok() {
        bail!("check found damage: {:?}", ck.errors);
    }
    line(&format!(
        "5. check --read-data: {} packs, {} verified, no errors",
        ck.packs_read,
        bytes(ck.read_bytes)
    ))?;
    line(&format!(
        "next: export LIFEBOAT_REPOSITORY={} LIFEBOAT_PASSWORD=...; lifeboat snapshots (see docs/guide.md)",
        repo_path.display()
    ))?;
    Ok(crate::EXIT_OK)
}
