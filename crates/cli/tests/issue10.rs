//! Issue 10, "silently wrong": each test runs the real binary and fails on the code before
//! the fix (snapshot filters, dump of an unreadable file, check subsets, prune that never
//! settles, URL-like repository paths).

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use common::*;

/// `-r s3:/bucket/x` (one slash) is neither S3 nor a directory named `s3:`: exit 2 with the
/// right form, and nothing is created — through `--repo`, `LIFEBOAT_REPOSITORY` and
/// `copy --to` alike (they share one parser).
#[test]
fn r10_url_like_repository_paths_are_refused_not_created() {
    let env = Env::new();
    let cwd = env.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let check_refused = |o: &std::process::Output, bad: &str| {
        assert_eq!(code(o), 2, "{bad}: {}", stderr(o));
        let err = stderr(o);
        assert!(err.contains(bad), "the message names {bad}: {err}");
        assert!(
            err.contains("s3://BUCKET/PREFIX"),
            "the message shows the right form: {err}"
        );
        assert!(
            std::fs::read_dir(&cwd).unwrap().next().is_none(),
            "{bad}: something was created in the working directory"
        );
    };
    for bad in ["s3:/bucket/x", "s3:bucket", "file:/srv/repo"] {
        let o = env
            .cmd()
            .current_dir(&cwd)
            .args(["-r", bad, "init", "--kdf-memory", "1MiB"])
            .output()
            .unwrap();
        check_refused(&o, bad);
        let o = env
            .cmd()
            .current_dir(&cwd)
            .env("LIFEBOAT_REPOSITORY", bad)
            .args(["init", "--kdf-memory", "1MiB"])
            .output()
            .unwrap();
        check_refused(&o, bad);
    }
    // copy --to goes through the same parser.
    env.init();
    let o = env
        .cmd()
        .current_dir(&cwd)
        .args(["copy", "--to", "s3:/dr/x"])
        .output()
        .unwrap();
    check_refused(&o, "s3:/dr/x");
    // A local directory whose name has a colon is still reachable, written as a path.
    let o = env
        .cmd()
        .current_dir(&cwd)
        .args(["-r", "./s3:", "init", "--kdf-memory", "1MiB"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(cwd.join("s3:").join("config").exists());
}

/// The repository's files (path and size), leases aside.
fn repo_files(env: &Env) -> Vec<(std::path::PathBuf, u64)> {
    files_under(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with(env.repo.join("locks")))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

/// A prune with nothing to do does nothing: the small pack left by the first prune's
/// repack (one file's blob, ~100 bytes with its header) was rewritten by every later prune.
#[test]
fn r10_prune_settles_a_second_prune_rewrites_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("b.txt"), b"keep\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a.txt"), b"hello again\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1"]);
    let first = env.json(&["prune"]);
    assert_eq!(first["packs_repacked"], 1, "{first}");
    let before = repo_files(&env);
    for _ in 0..2 {
        let again = env.json(&["prune"]);
        for field in ["packs_condemned", "packs_repacked", "packs_deleted"] {
            assert_eq!(again[field], 0, "{field}: {again}");
        }
        assert_eq!(again["freed_bytes"], 0, "{again}");
        assert_eq!(
            repo_files(&env),
            before,
            "a prune with nothing to do changed files"
        );
    }
    // And the data is all there.
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("src"));
    env.ok(&["check", "--read-data"]);
}

/// `check --read-data --read-data-subset 5%` reads the subset, each pack in full, and says
/// so: how many packs and bytes of how many (it printed "read 1 packs", and dropped
/// --read-data without a word).
#[test]
fn r10_check_says_how_much_of_the_data_a_subset_read() {
    let env = Env::new();
    env.init(); // 1 MiB packs
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);

    let all = env.json(&["check", "--read-data"]);
    let packs = all["data_packs"].as_u64().unwrap();
    assert!(packs >= 6, "{all}");
    assert_eq!(all["packs_read"].as_u64().unwrap(), packs, "{all}");
    assert_eq!(all["read_bytes"], all["data_bytes"], "{all}");
    assert!(all["read_data_subset"].is_null(), "{all}");

    let sub = env.json(&["check", "--read-data", "--read-data-subset", "5%"]);
    assert_eq!(sub["packs_read"], 1, "5% of the packs, rounded up: {sub}");
    assert_eq!(sub["data_packs"].as_u64().unwrap(), packs, "{sub}");
    assert_eq!(sub["data_bytes"], all["data_bytes"], "{sub}");
    assert!(
        sub["read_bytes"].as_u64().unwrap() < sub["data_bytes"].as_u64().unwrap(),
        "{sub}"
    );
    assert_eq!(sub["read_data_subset"], 5.0, "{sub}");

    let text = env.ok(&["check", "--read-data", "--read-data-subset", "5%"]);
    assert!(
        text.contains(&format!("read 1 of {packs} packs")) && text.contains("5% subset"),
        "the summary says what was read of what: {text}"
    );

    // The subset's packs are read in full: damage in whichever pack is chosen is found.
    for p in files_under(&env.repo.join("data")) {
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
    }
    let o = env.run(&["check", "--read-data-subset", "5%"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// `dump` of a file the backup could not read fails (exit 1) naming it and saying why it
/// has no content; it wrote nothing and exited 0. Its sibling `restore` lists it (exit 1)
/// and restores everything else.
#[test]
fn r10_dump_of_a_file_unreadable_at_backup_time_fails_naming_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    // /proc/self/mem stats as a regular file but every read at offset 0 fails (EIO), for
    // root too.
    let o = env.run(&["backup", src.to_str().unwrap(), "/proc/self/mem"]);
    assert_eq!(code(&o), 3, "a partial backup: {}", stderr(&o));
    let ls = env.json(&["ls", "latest:mem"]);
    assert_eq!(ls["nodes"][0]["type"], "file", "{ls}");
    assert!(
        ls["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "ls says the file has no content: {ls}"
    );
    let o = env.run(&["ls", "-l", "latest:mem"]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("mem: not backed up"), "{}", stderr(&o));

    let o = env.run(&["dump", "latest:mem"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "dump wrote {} bytes", o.stdout.len());
    let err = stderr(&o);
    assert!(
        err.contains("mem in snapshot")
            && err.contains("could not be read when the snapshot was taken"),
        "names the file and why it has no content: {err}"
    );
    assert!(
        err.contains("cannot read"),
        "with the backup's reason: {err}"
    );
    // A readable file of the same snapshot dumps as ever.
    assert_eq!(env.ok(&["dump", "latest:src/ok.txt"]), "fine");

    let t = env.path("t");
    let o = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mem: was not backed up completely: cannot read"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(t.join("src/ok.txt")).unwrap(), b"fine");
}

/// Backs up `stdin` as `name` with the given tags; returns the snapshot id.
fn backup_stdin(env: &Env, data: &[u8], name: &str, tags: &[&str]) -> String {
    use std::io::Write;
    let mut args = vec!["backup", "--stdin", "--stdin-filename", name, "--json"];
    for t in tags {
        args.extend(["--tag", t]);
    }
    let mut child = env
        .cmd()
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["snapshot_id"].as_str().unwrap().to_string()
}

/// `restore latest` after `pg_dump | lifeboat backup --stdin` restored only the dump: the
/// newest snapshot of any kind. `--tag`, `--host` and `--path` narrow what `latest` (and an
/// id) may be, the same way in every command that names or lists snapshots.
#[test]
fn r10_latest_honours_tag_host_and_path_filters() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("media")).unwrap();
    std::fs::write(src.join("media/a.jpg"), noise(50_000, 1)).unwrap();
    std::fs::write(src.join("orders.json"), text(10_000, 2)).unwrap();
    let dir = src.to_str().unwrap();
    let first = env.json(&["backup", dir, "--tag", "files", "--host", "web1"]);
    let first = first["snapshot_id"].as_str().unwrap().to_string();
    let dump = backup_stdin(
        &env,
        b"-- pg_dump of shop\n",
        "shop.sql",
        &["db", "nightly"],
    );

    // Unfiltered, latest is still the newest of any kind (the stream).
    let t = env.path("t-any");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(t.join("shop.sql").exists() && !t.join("src").exists());

    // --path: the directory's newest snapshot.
    let t = env.path("t-path");
    env.ok(&[
        "restore",
        "latest",
        "--path",
        dir,
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &t.join("src"));
    assert!(!t.join("shop.sql").exists());
    // A trailing slash or a relative path is the same path.
    let with_slash = format!("{dir}/");
    let ls = env.json(&["ls", "latest", "--path", &with_slash]);
    assert_eq!(ls["snapshot_id"], first.as_str(), "{ls}");
    let o = env
        .cmd()
        .current_dir(env.path(""))
        .args(["ls", "latest", "--path", "src", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // --tag: one tag, a list (all of it), either of two lists; --host.
    let t = env.path("t-tag");
    env.ok(&[
        "restore",
        "latest",
        "--tag",
        "files",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &t.join("src"));
    let id_of = |args: &[&str]| env.json(args)["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(id_of(&["ls", "latest", "--tag", "db,nightly"]), dump);
    assert_eq!(
        id_of(&["ls", "latest", "--tag", "db,files", "--tag", "files"]),
        first
    );
    assert_eq!(id_of(&["ls", "latest", "--host", "web1"]), first);
    let out = env.ok(&["dump", "latest:shop.sql", "--tag", "db"]);
    assert_eq!(out, "-- pg_dump of shop\n");
    let out = env.ok(&["dump", "latest:src/orders.json", "--path", dir]);
    assert_eq!(out.len(), 10_000);

    // Listing: snapshots --path / --tag.
    let listed = env.json(&["snapshots", "--path", "/shop.sql"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], dump.as_str());
    let listed = env.json(&["snapshots", "--tag", "files"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Nothing matches: exit 2, naming the filters; no file written.
    let t = env.path("t-none");
    let o = env.run(&[
        "restore",
        "latest",
        "--tag",
        "nope",
        "--path",
        dir,
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--tag nope") && err.contains(&format!("--path {dir}")),
        "{err}"
    );
    assert!(!t.exists());
    // An id the filters exclude is refused, not silently taken.
    let o = env.run(&["ls", &dump[..8], "--path", dir]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains(&dump[..8]), "{}", stderr(&o));
    // diff: both sides through the same filter.
    let o = env.run(&["diff", &first[..8], "latest", "--tag", "db"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    // forget judges only the snapshots that pass the filter.
    std::fs::write(src.join("orders.json"), text(12_000, 3)).unwrap();
    let second = env.json(&["backup", dir, "--tag", "files", "--host", "web1"]);
    let second = second["snapshot_id"].as_str().unwrap().to_string();
    let f = env.json(&["forget", "--keep-last", "1", "--tag", "files"]);
    assert_eq!(f["remove"], serde_json::json!([first]), "{f}");
    let left: Vec<String> = env
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&dump) && left.contains(&second), "{left:?}");

    // copy copies only what passes the filter.
    let dr = env.path("dr");
    let c = env.json(&["copy", "--to", dr.to_str().unwrap(), "--tag", "db"]);
    assert_eq!(c["copied"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["copied"][0]["source"], dump.as_str(), "{c}");
}
