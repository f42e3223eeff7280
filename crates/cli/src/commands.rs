//! Command handlers: resolve the repository and password, call the library, render.
//! Never here: repository logic (lifeboat-repo, lifeboat-sources own it) or printing secrets.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use lifeboat_repo::check::{check, CheckOptions, ReadData};
use lifeboat_repo::copy::{copy, CopyOptions};
use lifeboat_repo::format::{BlobKind, Node, NodeKind, Snapshot};
use lifeboat_repo::prune::{prune, PruneOptions, PruneReport};
use lifeboat_repo::retention::{KeepPolicy, Verdict};
use lifeboat_repo::tree::{find_path, walk};
use lifeboat_repo::{InitOptions, KdfParams, Repository, SnapshotFilter};
use lifeboat_sources::backup::{backup, backup_stream, BackupOptions};
use lifeboat_sources::restore::{dump, ensure_empty, restore, Existing, RestoreOptions};
use lifeboat_sources::Progress;
use lifeboat_storage::{Location, Storage, StorageOptions};
use lifeboat_types::{ByteSize, Secret, SnapshotId};

use crate::cli::{Args, Command, ConfigCmd, Global, KeyCmd, SnapshotFilterArgs};
use crate::output::{self, bytes, json, line};
use crate::progress::Bar;
use crate::{Exit, EXIT_DAMAGE, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};

pub(crate) fn usage(message: impl Into<String>, hint: Option<&str>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code: EXIT_USAGE,
        message: message.into(),
        hint: hint.map(str::to_string),
    })
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

pub(crate) fn location(url: Option<&str>) -> Result<Location> {
    let url = url.ok_or_else(|| {
        usage(
            "no repository given",
            Some("pass --repo PATH (or s3://BUCKET/PREFIX), or set LIFEBOAT_REPOSITORY"),
        )
    })?;
    let loc = Location::parse(url, &env).map_err(|e| usage(e.to_string(), None))?;
    if let Location::S3(s3) = &loc {
        require_s3_credentials(s3, &loc)?;
    }
    Ok(loc)
}

/// Refuses an S3 location for which no credentials can be found, before any request: no
/// key pair, no variable naming another source (`AWS_PROFILE`, web identity, ECS), no
/// `~/.aws/credentials` or `~/.aws/config`, and not an EC2 instance (whose role the
/// instance metadata serves). Without this, OpenDAL would send unsigned requests and the
/// user would see a refusal or a retried network error instead of the missing setting.
fn require_s3_credentials(s3: &lifeboat_storage::S3Location, loc: &Location) -> Result<()> {
    if s3.has_keys() || lifeboat_storage::S3Location::ambient_credentials(&env).is_some() {
        return Ok(());
    }
    let home_aws = std::env::var_os("HOME").is_some_and(|h| {
        let dir = Path::new(&h).join(".aws");
        dir.join("credentials").is_file() || dir.join("config").is_file()
    });
    if home_aws || on_ec2() {
        return Ok(());
    }
    Err(usage(
        format!("no S3 credentials for {loc}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
        Some("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with ~/.aws/credentials; on EC2 an instance role is used)"),
    ))
}

/// Whether this machine is an EC2 instance (its firmware says so), where OpenDAL reads an
/// instance role's credentials from the instance metadata service — unless
/// `AWS_EC2_METADATA_DISABLED=true` turns that service off, as it does for OpenDAL.
fn on_ec2() -> bool {
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    read("/sys/devices/virtual/dmi/id/sys_vendor").contains("Amazon EC2")
        || read("/sys/devices/virtual/dmi/id/board_asset_tag").starts_with("i-")
        || read("/sys/hypervisor/uuid").starts_with("ec2")
}

/// Opens the storage of an existing repository. Creates nothing: a local directory that
/// does not exist is "no repository at PATH" (a usage error), not a new directory.
fn storage(url: Option<&str>) -> Result<Storage> {
    let loc = location(url)?;
    match Storage::open(&loc, &StorageOptions::default()) {
        Ok(s) => Ok(s),
        Err(e) if e.is_not_found() => {
            Err(anyhow::Error::new(lifeboat_repo::Error::NotARepository {
                repo: loc.to_string(),
            }))
        }
        // A location that cannot be used names itself.
        Err(e) if e.kind() == lifeboat_storage::ErrorKind::Config => Err(anyhow::Error::new(e)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("open storage {loc}"))),
    }
}

/// Opens the storage where a repository is to be created (`init`, `copy --to`), creating
/// a local directory that does not exist yet.
fn storage_to_create(url: Option<&str>) -> Result<Storage> {
    let loc = location(url)?;
    Storage::create(&loc, &StorageOptions::default()).map_err(|e| {
        if e.kind() == lifeboat_storage::ErrorKind::Config {
            anyhow::Error::new(e) // names the location itself
        } else {
            anyhow::Error::new(e).context(format!("open storage {loc}"))
        }
    })
}

fn read_password_file(path: &Path) -> Result<Secret<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(
            format!("cannot read password file {}: {e}", path.display()),
            Some("check the path and that this user may read the file, or set LIFEBOAT_PASSWORD instead"),
        )
    })?;
    let first = text.lines().next().unwrap_or("").to_string();
    Ok(Secret::new(first))
}

fn password(file: Option<&Path>, env_name: &str, what: &str) -> Result<Secret<String>> {
    if let Some(f) = file {
        return read_password_file(f);
    }
    if let Some(p) = env(env_name) {
        return Ok(Secret::new(p));
    }
    Err(usage(
        format!("no password for {what}"),
        Some(&format!("set {env_name} or pass a password file")),
    ))
}

fn main_password(g: &Global) -> Result<Secret<String>> {
    if g.password_file.is_none() && env("LIFEBOAT_PASSWORD").is_none() {
        return Err(usage(
            "no password given",
            Some("set LIFEBOAT_PASSWORD, or pass --password-file FILE (or LIFEBOAT_PASSWORD_FILE)"),
        ));
    }
    // A password file that cannot be read is named, with its error (exit 2).
    password(
        g.password_file.as_deref(),
        "LIFEBOAT_PASSWORD",
        "the repository",
    )
}

pub(crate) fn open(g: &Global) -> Result<Repository> {
    let pw = main_password(g)?;
    let st = storage(g.repo.as_deref())?;
    let describe = st.describe().to_string();
    Repository::open(st, pw.expose().as_bytes())
        .with_context(|| format!("open repository {describe}"))
}

/// A read lease: a running prune will not delete packs this command reads. Taken before
/// the snapshot is looked up, so a snapshot found stays readable. `None` (after a warning)
/// where the repository refuses writes: reading goes on without one (`Lease::acquire_read`).
fn read_lease(repo: &Repository, what: &str) -> Result<Option<lifeboat_repo::lease::Lease>> {
    Ok(lifeboat_repo::lease::Lease::acquire_read(repo, what)?)
}

/// Writes 32 random bytes (hex) into a new file readable only by its owner.
fn generate_password_file(path: &Path) -> Result<Secret<String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = Secret::new(lifeboat_repo::keys::machine_password()?.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            usage(
                format!("cannot create {}: {e}", path.display()),
                Some("--generate writes a new file and never overwrites one"),
            )
        })?;
    f.write_all(format!("{}\n", secret.expose()).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(secret)
}

/// Lets `--kdf-memory` go below the floor for human passwords. For test suites only: a key
/// made this way gives a guessable password up to offline guessing (ADR 0004).
const INSECURE_KDF_ENV: &str = "LIFEBOAT_INSECURE_KDF_FOR_TESTS";

/// The Argon2id cost of a key for a password a person chose, from `--kdf-memory`: at least
/// the documented floor ([`KdfParams::PASSWORD_MIN_M_COST`], 19 MiB), at most 1 GiB.
fn kdf(memory: &str) -> Result<KdfParams> {
    let m: ByteSize = memory
        .parse()
        .map_err(|e: lifeboat_types::ByteSizeError| usage(format!("--kdf-memory: {e}"), None))?;
    let floor = u64::from(KdfParams::PASSWORD_MIN_M_COST);
    let max = u64::from(KdfParams::MAX_M_COST);
    let kib = m.0 / 1024;
    let insecure_ok = env(INSECURE_KDF_ENV).is_some_and(|v| v == "1");
    if kib > max {
        return Err(usage(
            format!(
                "--kdf-memory {memory}: more than {} (1 GiB), which no key file may ask for",
                ByteSize(max * 1024)
            ),
            Some("use 19MiB (the default) up to 1GiB"),
        ));
    }
    if kib < floor && !(insecure_ok && kib >= 8) {
        return Err(usage(
            format!(
                "--kdf-memory {memory}: below the floor of 19MiB for a password a person chose; \
                 less lets a stolen key file give the password up to cheap guessing"
            ),
            Some("leave --kdf-memory at its default (19MiB) or raise it; for machine use, `lifeboat key add --generate FILE` makes a random key that needs no stretching"),
        ));
    }
    Ok(KdfParams {
        m_cost: kib as u32,
        ..KdfParams::default()
    })
}

pub(crate) fn progress_enabled(g: &Global) -> bool {
    !(g.json || g.quiet || g.no_progress)
}

/// Config problems or warnings as JSON objects (docs/json.md).
fn problem_list(list: &[lifeboat_config::Problem]) -> Vec<serde_json::Value> {
    list.iter()
        .map(|p| {
            serde_json::json!({"line": p.line, "column": p.column,
                "key": p.key, "message": p.message, "fix": p.fix})
        })
        .collect()
}

/// The library's snapshot filter from `--tag`/`--host`/`--path`; relative paths are made
/// absolute from the current directory, as `backup` records them.
fn snapshot_filter(a: &SnapshotFilterArgs) -> Result<SnapshotFilter> {
    let paths = a
        .paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .map(|abs| abs.display().to_string())
                .map_err(|e| usage(format!("--path {}: {e}", p.display()), None))
        })
        .collect::<Result<_>>()?;
    Ok(SnapshotFilter {
        tags: a.tags.clone(),
        hosts: a.hosts.clone(),
        paths,
    })
}

/// Splits `SNAP[:PATH]`.
fn split_target(s: &str) -> (&str, &str) {
    match s.split_once(':') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: Args) -> Result<u8> {
    let g = &args.global;
    match args.command {
        Command::Init(c) => {
            // Arguments first: a refused --kdf-memory or --pack-size touches no storage.
            let kdf_params = kdf(&c.kdf_memory)?;
            let pack_size: ByteSize =
                c.pack_size
                    .parse()
                    .map_err(|e: lifeboat_types::ByteSizeError| {
                        usage(format!("--pack-size: {e}"), None)
                    })?;
            if !(1 << 20..=512 << 20).contains(&pack_size.0) {
                return Err(usage(
                    format!("--pack-size {}: packs are 1MiB to 512MiB", c.pack_size),
                    Some("16MiB (the default) suits most repositories"),
                ));
            }
            let st = storage_to_create(g.repo.as_deref())?;
            let pw = main_password(g)?;
            if pw.expose().is_empty() {
                return Err(usage(
                    "the password is empty",
                    Some("an empty password protects nothing; use `lifeboat key add --generate FILE` on an existing repository for machine use, or give a real password"),
                ));
            }
            let opts = InitOptions {
                kdf: kdf_params,
                compression: c.compression,
                pack_size: u32::try_from(pack_size.0).unwrap_or(512 << 20),
                ..InitOptions::default()
            };
            let describe = st.describe().to_string();
            let repo = match &c.copy_params_from {
                Some(src_url) => {
                    let src_pw = password(
                        c.from_password_file.as_deref(),
                        "LIFEBOAT_FROM_PASSWORD",
                        "the --copy-params-from repository",
                    )
                    .unwrap_or_else(|_| pw.clone());
                    let src = Repository::open(storage(Some(src_url))?, src_pw.expose().as_bytes())
                        .with_context(|| format!("open repository {src_url}"))?;
                    Repository::init_like(st, pw.expose().as_bytes(), &opts, &src)
                }
                None => Repository::init(st, pw.expose().as_bytes(), &opts),
            }
            .with_context(|| format!("create repository {describe}"))?;
            if g.json {
                json(&serde_json::json!({
                    "repository": describe,
                    "repository_id": repo.config().id,
                    "version": repo.config().version,
                }))?;
            } else if !g.quiet {
                line(&format!(
                    "created repository {} at {describe}\nkeep the password safe: without it the data cannot be read",
                    &repo.config().id[..8]
                ))?;
            }
            Ok(EXIT_OK)
        }
        Command::Backup(c) => {
            let repo = open(g)?;
            let parent = match &c.parent {
                Some(p) => Some(repo.find_snapshot(p)?.0),
                None => None,
            };
            let opts = BackupOptions {
                hostname: c.host.clone(),
                tags: c.tags.clone(),
                excludes: c.excludes.clone(),
                parent,
                force: c.force,
                readers: 2,
                ..BackupOptions::default()
            };
            let progress = Arc::new(Progress::default());
            let report = {
                let _bar = Bar::start(progress.clone(), "backup", progress_enabled(g));
                if c.stdin {
                    let stdin = std::io::stdin().lock();
                    backup_stream(&repo, stdin, &c.stdin_filename, &opts, &progress)
                } else {
                    backup(&repo, &c.paths, &opts, &progress)
                }
            }
            .context("backup")?;
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                let s = &report.summary;
                for e in &report.errors {
                    eprintln!("warning: {}: {}", e.path, e.message);
                }
                line(&format!(
                    "snapshot {} saved{}\n  files: {} ({} new or changed, {} unchanged), dirs: {}\n  data: {} in snapshot, {} read, {} added ({} stored after compression)\n  took {:.2}s",
                    report.snapshot_id.short(),
                    report
                        .parent
                        .map(|p| format!(" (parent {})", p.short()))
                        .unwrap_or_default(),
                    s.files,
                    s.files_read,
                    s.files_unchanged,
                    s.dirs,
                    bytes(s.bytes),
                    bytes(s.read_bytes),
                    bytes(s.added_bytes),
                    bytes(s.stored_bytes),
                    s.duration_seconds
                ))?;
            }
            if report.errors.is_empty() {
                Ok(EXIT_OK)
            } else {
                eprintln!(
                    "error: snapshot {} is partial: {} entries could not be read (listed above)",
                    report.snapshot_id.short(),
                    report.errors.len()
                );
                eprintln!(
                    "hint: everything else was saved; make those entries readable (or --exclude them) and back up again"
                );
                Ok(EXIT_RUNTIME)
            }
        }
        Command::Snapshots(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let (snaps, bad) = repo.snapshots_matching(&filter)?;
            for e in &bad {
                eprintln!("warning: {e}");
            }
            if g.json {
                let v: Vec<SnapshotJson> = snaps.iter().map(SnapshotJson::from).collect();
                // An array, not a versioned object: scripts iterate it (docs/json.md).
                output::json_as_is(&v)?;
            } else if !g.quiet {
                line(&format!(
                    "{:<8}  {:<19}  {:<12}  {:<10}  {:>10}  paths",
                    "id", "time (UTC)", "host", "tags", "size"
                ))?;
                for (id, s) in &snaps {
                    line(&format!(
                        "{:<8}  {:<19}  {:<12}  {:<10}  {:>10}  {}{}",
                        id.short(),
                        output::time(&s.time),
                        s.hostname,
                        s.tags.join(","),
                        bytes(s.summary.bytes),
                        s.paths.join(" "),
                        match (s.partial, &s.original) {
                            (false, None) => String::new(),
                            (true, None) => "  (partial)".into(),
                            (partial, Some(o)) => format!(
                                "  (copy of {}{})",
                                o.short(),
                                if partial { ", partial" } else { "" }
                            ),
                        }
                    ))?;
                }
                line(&format!("{} snapshots", snaps.len()))?;
            }
            Ok(if bad.is_empty() { EXIT_OK } else { EXIT_DAMAGE })
        }
        Command::Ls(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let (spec, path) = split_target(&c.target);
            let _lease = read_lease(&repo, "ls")?;
            let (sid, snap) = repo.find_snapshot_matching(spec, &filter)?;
            let index = repo.load_index()?;
            let mut entries: Vec<LsEntry> = Vec::new();
            let start = find_path(&repo, &index, &snap.tree, path.as_bytes(), &sid.short())?;
            let base = path.trim_matches('/').to_string();
            let mut push = |p: &[u8], n: &Node| {
                let rel = String::from_utf8_lossy(p);
                let full = if base.is_empty() {
                    format!("/{rel}")
                } else if rel.is_empty() {
                    format!("/{base}")
                } else {
                    format!("/{base}/{rel}")
                };
                entries.push(LsEntry::new(full, n));
            };
            match start {
                Some(n) if !matches!(n.kind, NodeKind::Dir) => push(b"", &n),
                Some(n) => {
                    push(b"", &n);
                    if let Some(sub) = n.subtree {
                        walk(&repo, &index, &sub, &mut |p, n| {
                            push(p, n);
                            Ok(true)
                        })?;
                    }
                }
                None => walk(&repo, &index, &snap.tree, &mut |p, n| {
                    push(p, n);
                    Ok(true)
                })?,
            }
            if g.json {
                json(
                    &serde_json::json!({"snapshot_id": sid, "path": format!("/{base}"), "nodes": entries}),
                )?;
            } else if !g.quiet {
                for e in &entries {
                    if c.long {
                        line(&format!(
                            "{} {:>5} {:>5} {:>12} {}  {}{}",
                            e.mode_string,
                            e.uid,
                            e.gid,
                            e.size,
                            output::time(&e.mtime),
                            e.path,
                            e.link_target
                                .as_ref()
                                .map(|t| format!(" -> {t}"))
                                .unwrap_or_default()
                        ))?;
                    } else {
                        line(&e.path)?;
                    }
                    if let Some(err) = &e.error {
                        eprintln!("warning: {}: not backed up, no content: {err}", e.path);
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::Diff(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let _lease = read_lease(&repo, "diff")?;
            let (a_id, a) = repo.find_snapshot_matching(&c.from, &filter)?;
            let (b_id, b) = repo.find_snapshot_matching(&c.to, &filter)?;
            let index = repo.load_index()?;
            let mut d = DiffReport {
                from: a_id,
                to: b_id,
                ..DiffReport::default()
            };
            diff_trees(&repo, &index, Some(a.tree), Some(b.tree), "", &mut d)?;
            if g.json {
                json(&d)?;
            } else if !g.quiet {
                for p in &d.added {
                    line(&format!("+    {p}"))?;
                }
                for p in &d.removed {
                    line(&format!("-    {p}"))?;
                }
                for p in &d.modified {
                    line(&format!("M    {p}"))?;
                }
                for p in &d.metadata {
                    line(&format!("U    {p}"))?;
                }
                line(&format!(
                    "{} added, {} removed, {} modified, {} metadata only",
                    d.added.len(),
                    d.removed.len(),
                    d.modified.len(),
                    d.metadata.len()
                ))?;
            }
            Ok(EXIT_OK)
        }
        Command::Stats(_) => {
            let repo = open(g)?;
            let (snaps, _) = repo.snapshots()?;
            let index = repo.load_index()?;
            let mut st = StatsReport {
                snapshots: snaps.len(),
                ..StatsReport::default()
            };
            for (_, loc) in index.blobs() {
                match loc.kind {
                    BlobKind::Data => st.data_blobs += 1,
                    BlobKind::Tree => st.tree_blobs += 1,
                }
                st.raw_bytes += u64::from(loc.raw_len);
                st.sealed_blob_bytes += u64::from(loc.length);
            }
            for (_, size) in index.packs() {
                st.packs += 1;
                st.stored_bytes += size;
            }
            st.logical_bytes = snaps.iter().map(|(_, s)| s.summary.bytes).sum();
            st.compression_ratio = ratio(st.raw_bytes, st.sealed_blob_bytes);
            st.dedup_ratio = ratio(st.logical_bytes, st.raw_bytes);
            if g.json {
                json(&st)?;
            } else if !g.quiet {
                line(&format!(
                    "snapshots:          {}\npacks:              {}\nblobs:              {} data, {} tree\nstored:             {}\nunique data:        {} (compression ratio {:.2})\nlogical in snapshots: {} (dedup ratio {:.2})",
                    st.snapshots,
                    st.packs,
                    st.data_blobs,
                    st.tree_blobs,
                    bytes(st.stored_bytes),
                    bytes(st.raw_bytes),
                    st.compression_ratio,
                    bytes(st.logical_bytes),
                    st.dedup_ratio
                ))?;
            }
            Ok(EXIT_OK)
        }
        Command::Restore(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let (spec, path) = split_target(&c.target_snapshot);
            let existing = match (c.overwrite, c.delete) {
                (false, _) => Existing::Refuse,
                (true, false) => Existing::Overwrite,
                (true, true) => Existing::Mirror,
            };
            if existing == Existing::Refuse {
                ensure_empty(
                    &c.target,
                    "restore into an empty or new directory; or pass --overwrite to replace \
                     what the snapshot has (files that already match are kept, others are left \
                     alone), with --delete to also remove what the snapshot does not have",
                )?;
            }
            let _lease = read_lease(&repo, "restore")?;
            let (sid, snap) = repo.find_snapshot_matching(spec, &filter)?;
            let index = repo.load_index()?;
            let progress = Arc::new(Progress::default());
            let report = {
                let _bar = Bar::start(progress.clone(), "restore", progress_enabled(g));
                restore(
                    &repo,
                    &index,
                    lifeboat_sources::restore::Selection {
                        tree: &snap.tree,
                        subpath: path.as_bytes(),
                        snapshot: &sid.short(),
                    },
                    &c.target,
                    &RestoreOptions {
                        existing,
                        ..RestoreOptions::default()
                    },
                    &progress,
                )
            }
            .with_context(|| format!("restore snapshot {}", sid.short()))?;
            if g.json {
                json(&RestoreJson {
                    snapshot_id: sid,
                    report: &report,
                })?;
            } else if !g.quiet {
                line(&format!(
                    "restored snapshot {} to {}: {} files, {} dirs, {} other, {}",
                    sid.short(),
                    c.target.display(),
                    report.files,
                    report.dirs,
                    report.others,
                    bytes(report.bytes)
                ))?;
                match existing {
                    Existing::Refuse => {}
                    Existing::Overwrite => line(&format!(
                        "  {} file(s) already matched and were kept; entries the snapshot does not have were left alone",
                        report.files_kept
                    ))?,
                    Existing::Mirror => line(&format!(
                        "  {} file(s) already matched and were kept; {} entr(ies) the snapshot does not have were deleted",
                        report.files_kept, report.removed
                    ))?,
                }
            }
            if !report.setid_dropped.is_empty() && !g.json {
                for p in &report.setid_dropped {
                    eprintln!("warning: {p}: restored without its setuid/setgid bit");
                }
                eprintln!(
                    "warning: {} file(s) restored without setuid/setgid: their owner could not be restored (restore as root to keep owners and these bits)",
                    report.setid_dropped.len()
                );
            }
            if report.errors.is_empty() {
                Ok(EXIT_OK)
            } else {
                if !g.json {
                    for e in &report.errors {
                        eprintln!("error: {}: {}", e.path, e.message);
                    }
                }
                eprintln!(
                    "error: {} path(s) could not be restored completely (listed above); everything else was restored",
                    report.errors.len()
                );
                Ok(EXIT_DAMAGE)
            }
        }
        Command::Dump(c) => {
            if g.json {
                return Err(usage(
                    "dump writes the file's bytes to stdout and has no --json output",
                    Some("leave out --json; `lifeboat ls --json SNAPSHOT:PATH` describes the file"),
                ));
            }
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let (spec, path) = split_target(&c.target);
            if path.is_empty() {
                return Err(usage("dump needs SNAPSHOT:PATH of a file", None));
            }
            let _lease = read_lease(&repo, "dump")?;
            let (sid, snap) = repo.find_snapshot_matching(spec, &filter)?;
            let index = repo.load_index()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            dump(
                &repo,
                &index,
                &snap.tree,
                path.as_bytes(),
                &sid.short(),
                &mut out,
            )?;
            out.flush()?;
            Ok(EXIT_OK)
        }
        Command::Check(c) => {
            // A subset is what is read, with or without --read-data (docs/guide.md).
            let read_data = match &c.read_data_subset {
                Some(s) => ReadData::Subset(
                    lifeboat_types::parse_percent(s)
                        .map_err(|e| usage(format!("--read-data-subset: {e}"), None))?,
                ),
                None if c.read_data => ReadData::All,
                None => ReadData::None,
            };
            let repo = open(g)?;
            let _lease = read_lease(&repo, "check")?;
            let report = check(
                &repo,
                &CheckOptions {
                    read_data,
                    threads: 2,
                    no_record: false,
                },
            )?;
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                for w in &report.warnings {
                    eprintln!("warning: {}: {}", w.file, w.message);
                }
                for e in &report.errors {
                    eprintln!("error: {}: {}", e.file, e.message);
                }
                line(&format!(
                    "checked {} snapshots, {} trees, {} index files, {} packs, {} blobs{}",
                    report.snapshots,
                    report.trees,
                    report.index_files,
                    report.packs,
                    report.blobs,
                    if read_data.reads() {
                        format!(
                            "; read {} of {} packs ({} of {}{})",
                            report.packs_read,
                            report.data_packs,
                            bytes(report.read_bytes),
                            bytes(report.data_bytes),
                            report
                                .read_data_subset
                                .map(|p| format!(": a random {p}% subset"))
                                .unwrap_or_default()
                        )
                    } else {
                        String::new()
                    }
                ))?;
                if report.wal_objects > 0 {
                    line(&format!(
                        "WAL objects: {}{}",
                        report.wal_objects,
                        if read_data.reads() {
                            format!(", {} read and verified", report.wal_objects_read)
                        } else {
                            String::new()
                        }
                    ))?;
                }
                if report.is_ok() {
                    line("no errors found")?;
                }
            }
            if report.is_ok() {
                Ok(EXIT_OK)
            } else {
                if !g.json {
                    eprintln!(
                        "error: the repository is damaged: {} problem(s); later backups will store fresh copies of the affected data",
                        report.errors.len()
                    );
                }
                Ok(EXIT_DAMAGE)
            }
        }
        Command::Forget(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let repo = open(g)?;
            let policy = KeepPolicy {
                last: c.keep_last,
                hourly: c.keep_hourly,
                daily: c.keep_daily,
                weekly: c.keep_weekly,
                monthly: c.keep_monthly,
                yearly: c.keep_yearly,
                tags: c.keep_tags.clone(),
            };
            if policy.is_empty() {
                return Err(usage(
                    "no retention policy given: this would remove every snapshot",
                    Some("give at least one --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly/--keep-tag"),
                ));
            }
            let (snaps, _) = repo.snapshots()?;
            // The policy applies per group, as restic does: the base backups of one database
            // source, or the file snapshots of one host and set of paths — so frequent
            // backups of one thing never push out the backups of another. Only snapshots
            // that pass the filter are judged; the others are kept.
            let mut groups: std::collections::BTreeMap<String, Vec<_>> = Default::default();
            for (id, s) in snaps.iter().filter(|(_, s)| filter.matches(s)) {
                groups.entry(snapshot_group(s)).or_default().push((
                    *id,
                    s.time.clone(),
                    s.tags.clone(),
                ));
            }
            let mut verdicts: Vec<GroupVerdict> = Vec::new();
            for (group, input) in &groups {
                for v in policy.apply(input) {
                    verdicts.push(GroupVerdict {
                        group: group.clone(),
                        verdict: v,
                    });
                }
            }
            let remove: Vec<SnapshotId> = verdicts
                .iter()
                .filter(|v| !v.verdict.keep)
                .map(|v| v.verdict.id)
                .collect();
            if !c.dry_run {
                for id in &remove {
                    repo.delete_snapshot(id)?;
                }
            }
            // Database sources: the WAL no kept base backup needs.
            let mut wal = Vec::new();
            let mut sources: std::collections::BTreeSet<String> =
                repo.wal_sources()?.into_iter().collect();
            sources.extend(
                snaps
                    .iter()
                    .filter_map(|(_, s)| s.postgres.as_ref().map(|p| p.source.clone())),
            );
            for source in sources {
                let kept_snaps: Vec<(SnapshotId, lifeboat_repo::format::Snapshot)> = snaps
                    .iter()
                    .filter(|(id, _)| !remove.contains(id))
                    .cloned()
                    .collect();
                let kept = lifeboat_postgres::catalog::base_backups(&kept_snaps, &source);
                wal.push(lifeboat_postgres::retention::remove_wal(
                    &repo, &source, &kept, c.dry_run,
                )?);
            }
            let prune_report = if c.prune && !c.dry_run {
                Some(prune(&repo, &PruneOptions::default())?)
            } else {
                None
            };
            if g.json {
                json(&ForgetReport {
                    dry_run: c.dry_run,
                    verdicts: verdicts.clone(),
                    remove: remove.clone(),
                    wal: wal.clone(),
                    prune: prune_report.clone(),
                })?;
            } else if !g.quiet {
                let mut last_group = None;
                for gv in &verdicts {
                    if last_group != Some(&gv.group) {
                        line(&gv.group)?;
                        last_group = Some(&gv.group);
                    }
                    let v = &gv.verdict;
                    line(&format!(
                        "  {} {}  {}  {}",
                        if v.keep { "keep  " } else { "remove" },
                        v.id.short(),
                        output::time(&v.time),
                        v.reasons.join(", ")
                    ))?;
                }
                line(&format!(
                    "{} {} snapshot(s), kept {}",
                    if c.dry_run { "would remove" } else { "removed" },
                    remove.len(),
                    verdicts.len() - remove.len()
                ))?;
                for w in &wal {
                    if !w.remove.is_empty() {
                        line(&format!(
                            "{} {} WAL file(s) of {} ({}) older than {}; kept {}",
                            if c.dry_run { "would remove" } else { "removed" },
                            w.remove.len(),
                            w.source,
                            bytes(w.freed_bytes),
                            w.oldest_kept.as_deref().unwrap_or("-"),
                            w.kept
                        ))?;
                    }
                }
                if let Some(p) = &prune_report {
                    print_prune(p)?;
                }
            }
            Ok(EXIT_OK)
        }
        Command::Prune(c) => {
            let repo = open(g)?;
            let report = prune(
                &repo,
                &PruneOptions {
                    dry_run: c.dry_run,
                    ..PruneOptions::default()
                },
            )?;
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                print_prune(&report)?;
            }
            Ok(EXIT_OK)
        }
        Command::Copy(c) => {
            let filter = snapshot_filter(&c.filter)?;
            let src = open(g)?;
            let pw = main_password(g)?;
            let to_pw = password(
                c.to_password_file.as_deref(),
                "LIFEBOAT_TO_PASSWORD",
                "the target",
            )
            .unwrap_or(pw);
            let dst_storage = storage_to_create(Some(&c.to))?;
            let dst = match Repository::open(dst_storage.clone(), to_pw.expose().as_bytes()) {
                Ok(r) => r,
                Err(lifeboat_repo::Error::NotARepository { .. }) => Repository::init_like(
                    dst_storage,
                    to_pw.expose().as_bytes(),
                    &InitOptions::default(),
                    &src,
                )
                .with_context(|| format!("create target repository {}", c.to))?,
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("open target repository {}", c.to))
                    )
                }
            };
            let chosen: Vec<(SnapshotId, Snapshot)> = if c.snapshots.is_empty() {
                src.snapshots_matching(&filter)?.0
            } else {
                let mut v = Vec::new();
                for s in &c.snapshots {
                    v.push(src.find_snapshot_matching(s, &filter)?);
                }
                v
            };
            let quiet = g.quiet || g.json;
            let say = |msg: &str| {
                if !quiet {
                    eprintln!("{msg}");
                }
            };
            // WAL first: a base backup that arrives in the DR repository finds its WAL there.
            let (wal_copied, wal_present) = lifeboat_repo::copy::copy_wal(&src, &dst, &say)?;
            let mut report = copy(
                &src,
                &dst,
                &chosen,
                &CopyOptions {
                    verify_upload: !c.no_verify,
                    ..CopyOptions::default()
                },
                &say,
            )?;
            report.wal_copied = wal_copied;
            report.wal_present = wal_present;
            if g.json {
                json(&report)?;
            } else if !g.quiet {
                for cs in &report.copied {
                    line(&format!(
                        "copied snapshot {} -> {} ({} blobs, {})",
                        cs.source.short(),
                        cs.target.short(),
                        cs.blobs,
                        bytes(cs.stored_bytes)
                    ))?;
                }
                line(&format!(
                    "{} copied, {} already present in {}",
                    report.copied.len(),
                    report.already_present.len(),
                    c.to
                ))?;
                if report.wal_copied + report.wal_present > 0 {
                    line(&format!(
                        "WAL files: {} copied, {} already present",
                        report.wal_copied, report.wal_present
                    ))?;
                }
            }
            Ok(EXIT_OK)
        }
        Command::Key(k) => {
            let repo = open(g)?;
            match k {
                KeyCmd::Add {
                    generate: Some(file),
                    ..
                } => {
                    let secret = generate_password_file(&file)?;
                    let id = repo.add_key(secret.expose().as_bytes(), KdfParams::machine())?;
                    if g.json {
                        json(&serde_json::json!({"added": id, "password_file": file}))?;
                    } else if !g.quiet {
                        line(&format!(
                            "added machine key {} (password in {})",
                            id.short(),
                            file.display()
                        ))?;
                    }
                }
                KeyCmd::Add {
                    new_password_file,
                    kdf_memory,
                    generate: None,
                } => {
                    let npw = password(
                        new_password_file.as_deref(),
                        "LIFEBOAT_NEW_PASSWORD",
                        "the new key",
                    )?;
                    if npw.expose().is_empty() {
                        return Err(usage("the new password is empty", None));
                    }
                    let id = repo.add_key(npw.expose().as_bytes(), kdf(&kdf_memory)?)?;
                    if g.json {
                        json(&serde_json::json!({"added": id}))?;
                    } else if !g.quiet {
                        line(&format!("added key {}", id.short()))?;
                    }
                }
                KeyCmd::List => {
                    let keys = repo.list_keys()?;
                    let current = repo.key_id();
                    let rows: Vec<serde_json::Value> = keys
                        .iter()
                        .map(|(id, kf)| {
                            serde_json::json!({
                                "id": id,
                                "current": *id == current,
                                "created": kf.as_ref().map(|k| k.created.clone()),
                                "hostname": kf.as_ref().map(|k| k.hostname.clone()),
                                "username": kf.as_ref().map(|k| k.username.clone()),
                            })
                        })
                        .collect();
                    if g.json {
                        json(&serde_json::json!({ "keys": rows }))?;
                    } else if !g.quiet {
                        for (id, kf) in &keys {
                            line(&format!(
                                "{} {}  {}  {}@{}",
                                if *id == current { "*" } else { " " },
                                id.short(),
                                kf.as_ref()
                                    .map(|k| output::time(&k.created))
                                    .unwrap_or_else(|| "(unreadable)".into()),
                                kf.as_ref().map(|k| k.username.as_str()).unwrap_or("?"),
                                kf.as_ref().map(|k| k.hostname.as_str()).unwrap_or("?"),
                            ))?;
                        }
                    }
                }
                KeyCmd::Remove { id } => {
                    let kid = repo.find_key(&id)?;
                    repo.remove_key(&kid)?;
                    if g.json {
                        json(&serde_json::json!({"removed": kid}))?;
                    } else if !g.quiet {
                        line(&format!("removed key {}", kid.short()))?;
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::Pg(c) => crate::pg::run(g, c),
        Command::Config(ConfigCmd::Validate { config, strict }) => {
            match lifeboat_config::load(&config, &env) {
                Ok(c) => {
                    let coordinator = match &c.coordinator {
                        lifeboat_config::Coordinator::Embedded { .. } => "embedded".to_string(),
                        lifeboat_config::Coordinator::Etcd { endpoints } => {
                            format!("etcd ({} endpoints)", endpoints.len())
                        }
                    };
                    let failed = strict && !c.warnings.is_empty();
                    if g.json {
                        json(&serde_json::json!({
                            "valid": !failed,
                            "file": config.display().to_string(),
                            "cluster": c.cluster.name,
                            "members": c.cluster.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
                            "coordinator": coordinator,
                            "warnings": problem_list(&c.warnings.list),
                        }))?;
                    } else {
                        for w in c.warnings.to_string().lines() {
                            eprintln!("warning: {w}");
                        }
                        if failed {
                            eprintln!(
                                "{} warning(s) in {}; --strict fails on warnings",
                                c.warnings.list.len(),
                                c.warnings.file
                            );
                        } else if !g.quiet {
                            line(&format!(
                                "{}: valid; cluster {} with {} member(s), {:?} replication, {:?} failover, coordinator {coordinator}",
                                config.display(),
                                c.cluster.name,
                                c.cluster.members.len(),
                                c.cluster.replication,
                                c.cluster.failover,
                            ))?;
                        }
                    }
                    Ok(if failed { EXIT_USAGE } else { EXIT_OK })
                }
                Err(problems) => {
                    if g.json {
                        json(&serde_json::json!({
                            "valid": false,
                            "file": problems.file,
                            "problems": problem_list(&problems.list),
                            "warnings": [],
                        }))?;
                    } else {
                        eprintln!("{problems}");
                        eprintln!("{} problem(s) in {}", problems.list.len(), problems.file);
                    }
                    Ok(EXIT_USAGE)
                }
            }
        }
        Command::Demo(c) => crate::demo::run(g, &c),
        Command::Run(c) => crate::ha::run_daemon(g, &c),
        Command::Status(c) => crate::ha::status(g, &c),
        Command::Failover(c) => crate::ha::failover(g, &c),
        Command::Switchover(c) => crate::ha::switchover(g, &c),
        Command::Maintenance(c) => crate::ha::maintenance(g, &c),
        Command::Cluster(c) => crate::ha::cluster(g, &c),
        Command::Quickstart(c) => crate::ha::quickstart(g, &c),
        Command::Completions(c) => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(
                c.shell,
                &mut crate::cli::Args::command(),
                "lifeboat",
                &mut script,
            );
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(EXIT_OK)
        }
        Command::Manpages(c) => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&c.dir)
                .with_context(|| format!("create {}", c.dir.display()))?;
            clap_mangen::generate_to(crate::cli::Args::command(), &c.dir)
                .with_context(|| format!("write man pages into {}", c.dir.display()))?;
            if !g.quiet {
                line(&format!("man pages written to {}", c.dir.display()))?;
            }
            Ok(EXIT_OK)
        }
        Command::Migrate(_) => {
            let mut repo = open(g)?;
            let v = repo.migrate()?;
            let current = repo.config().version;
            let migrated = v != current;
            if g.json {
                json(&serde_json::json!({"version": v, "current": current, "migrated": migrated}))?;
            } else if !g.quiet {
                line(&if migrated {
                    format!(
                        "migrated from format version {v} to {current}; lifeboat releases that \
                         read only version {v} now refuse this repository"
                    )
                } else {
                    format!("repository format version {v}: nothing to migrate")
                })?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn print_prune(p: &PruneReport) -> Result<()> {
    line(&format!(
        "{}{} packs before; {} condemned ({} repacked), {} deleted, {} freed{}",
        if p.dry_run { "dry run: " } else { "" },
        p.packs_before,
        p.packs_condemned,
        p.packs_repacked,
        p.packs_deleted,
        bytes(p.freed_bytes),
        if p.packs_resurrected > 0 {
            format!(
                ", {} kept because a new snapshot uses them",
                p.packs_resurrected
            )
        } else {
            String::new()
        }
    ))?;
    for w in &p.waiting_on {
        line(&format!("waiting: {w}; they are deleted by a later prune"))?;
    }
    Ok(())
}

/// `snapshots --json` element.
#[derive(Serialize)]
struct SnapshotJson<'a> {
    id: SnapshotId,
    short_id: String,
    time: &'a str,
    hostname: &'a str,
    username: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    parent: Option<SnapshotId>,
    original: Option<SnapshotId>,
    partial: bool,
    tree: lifeboat_types::BlobId,
    summary: lifeboat_repo::format::SummaryJson<'a>,
}

impl<'a> From<&'a (SnapshotId, Snapshot)> for SnapshotJson<'a> {
    fn from((id, s): &'a (SnapshotId, Snapshot)) -> Self {
        SnapshotJson {
            id: *id,
            short_id: id.short(),
            time: &s.time,
            hostname: &s.hostname,
            username: &s.username,
            paths: &s.paths,
            tags: &s.tags,
            parent: s.parent,
            original: s.original,
            partial: s.partial,
            tree: s.tree,
            summary: (&s.summary).into(),
        }
    }
}

/// `ls --json` node.
#[derive(Serialize)]
struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    #[serde(skip)]
    mode_string: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
    /// Why the backup could not read this file: the snapshot holds no content for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl LsEntry {
    fn new(path: String, n: &Node) -> Self {
        let (kind, c) = match n.kind {
            NodeKind::File => ("file", '-'),
            NodeKind::Dir => ("dir", 'd'),
            NodeKind::Symlink { .. } => ("symlink", 'l'),
            NodeKind::Fifo => ("fifo", 'p'),
            NodeKind::CharDev { .. } => ("chardev", 'c'),
            NodeKind::BlockDev { .. } => ("blockdev", 'b'),
            NodeKind::Socket => ("socket", 's'),
        };
        let mtime = jiff::Timestamp::new(n.mtime, n.mtime_ns as i32)
            .map(|t| t.to_string())
            .unwrap_or_default();
        LsEntry {
            path,
            kind,
            mode: n.mode,
            mode_string: output::mode_string(c, n.mode),
            uid: n.uid,
            gid: n.gid,
            size: n.size,
            mtime,
            link_target: match &n.kind {
                NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
                _ => None,
            },
            error: n.error.clone(),
        }
    }
}

/// `diff --json`.
#[derive(Serialize, Default)]
struct DiffReport {
    from: SnapshotId,
    to: SnapshotId,
    added: Vec<String>,
    removed: Vec<String>,
    modified: Vec<String>,
    metadata: Vec<String>,
}

fn diff_trees(
    repo: &Repository,
    index: &lifeboat_repo::Index,
    a: Option<lifeboat_types::BlobId>,
    b: Option<lifeboat_types::BlobId>,
    prefix: &str,
    d: &mut DiffReport,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(id) => repo.read_tree(index, &id)?.nodes,
        None => Vec::new(),
    };
    let tb = match b {
        Some(id) => repo.read_tree(index, &id)?.nodes,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let order = match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = &ta[i];
                let p = format!("{prefix}/{}", n.display_name());
                d.removed.push(p.clone());
                if n.subtree.is_some() {
                    diff_trees(repo, index, n.subtree, None, &p, d)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &tb[j];
                let p = format!("{prefix}/{}", n.display_name());
                d.added.push(p.clone());
                if n.subtree.is_some() {
                    diff_trees(repo, index, None, n.subtree, &p, d)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta[i], &tb[j]);
                let p = format!("{prefix}/{}", x.display_name());
                if x.kind != y.kind || x.content != y.content {
                    if !(matches!(x.kind, NodeKind::Dir) && matches!(y.kind, NodeKind::Dir)) {
                        d.modified.push(p.clone());
                    }
                } else if (x.mode != y.mode
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || x.mtime != y.mtime
                    || x.mtime_ns != y.mtime_ns
                    || x.xattrs != y.xattrs)
                    && !matches!(x.kind, NodeKind::Dir)
                {
                    d.metadata.push(p.clone());
                }
                if x.subtree.is_some() || y.subtree.is_some() {
                    diff_trees(repo, index, x.subtree, y.subtree, &p, d)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// `stats --json`.
#[derive(Serialize, Default)]
struct StatsReport {
    snapshots: usize,
    packs: u64,
    data_blobs: u64,
    tree_blobs: u64,
    stored_bytes: u64,
    raw_bytes: u64,
    sealed_blob_bytes: u64,
    logical_bytes: u64,
    compression_ratio: f64,
    dedup_ratio: f64,
}

/// `restore --json`: the snapshot restored and what the restore did.
#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot_id: SnapshotId,
    #[serde(flatten)]
    report: &'a lifeboat_sources::restore::RestoreReport,
}

/// `forget --json`.
#[derive(Serialize)]
struct ForgetReport {
    dry_run: bool,
    verdicts: Vec<GroupVerdict>,
    /// The snapshots the policy removes (with `dry_run`: would remove).
    remove: Vec<SnapshotId>,
    /// Per database source: the WAL removed because no kept base backup needs it.
    wal: Vec<lifeboat_postgres::retention::WalRetention>,
    prune: Option<PruneReport>,
}

/// A retention verdict and the group it was judged in.
#[derive(Debug, Clone, Serialize)]
struct GroupVerdict {
    /// `postgres source orders`, or `host web1 paths /srv/shop`.
    group: String,
    #[serde(flatten)]
    verdict: Verdict,
}

/// The retention group of a snapshot.
fn snapshot_group(s: &lifeboat_repo::format::Snapshot) -> String {
    match &s.postgres {
        Some(p) => format!("postgres source {}", p.source),
        None => {
            let mut paths = s.paths.clone();
            paths.sort();
            format!("host {} paths {}", s.hostname, paths.join(" "))
        }
    }
}
