//! `lifeboat pg verify` end to end against a real PostgreSQL 15: a backup restores into a
//! scratch directory, recovers (to the latest WAL or to a time), answers validation
//! queries, and nothing is left behind — also when a query fails or the WAL is damaged.
//!
//! The shop's server and most `lifeboat` calls run as the `postgres` OS user (the tests
//! run as root); one verification runs as root, so the scratch server has to switch users.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat_testkit::postgres::owner_tempdir;

use common::pg::{wait_until, Shop, BIN, SOURCE};
use common::{code, stderr};

fn report(o: &Output) -> serde_json::Value {
    println!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

/// PIDs of processes whose command line mentions `dir` (a scratch server's `-D`).
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle) {
                out.push(format!("{name}: {text}"));
            }
        }
    }
    out
}

/// The scratch server is gone: no process runs in `scratch`, its port is closed.
fn assert_no_server(r: &serde_json::Value, scratch: &Path) {
    let procs = processes_in(scratch);
    assert!(procs.is_empty(), "still running: {procs:?}");
    if let Some(port) = r["server"]["port"].as_u64() {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err(),
            "port {port} still accepts connections"
        );
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn latest_recovers_everything_answers_the_queries_and_leaves_nothing_behind() {
    let shop = Shop::new();
    for id in 1..=3 {
        shop.insert(id);
    }
    shop.backup();
    for id in 4..=7 {
        shop.insert(id);
    }
    let after_last = shop.now();
    shop.archive_now();

    let work = owner_tempdir("lifeboat-verify-scratch-").unwrap();
    let scratch = work.path().join("scratch");
    let started = Instant::now();
    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--latest",
        "--sql",
        "select count(*) from orders",
        "--sql",
        "select max(id) as newest from orders",
        "--scratch",
        scratch.to_str().unwrap(),
        "--json",
    ]);
    println!("verify --latest took {:?}", started.elapsed());
    let r = report(&o);
    assert_eq!(code(&o), 0, "{r:#}\n{}", stderr(&o));
    assert_eq!(r["ok"], true);
    assert_eq!(r["source"], SOURCE);
    assert_eq!(r["target"]["kind"], "latest");
    assert!(r["failure"].is_null());
    assert_eq!(r["recovery_state"], "promoted");
    assert_eq!(r["queries"][0]["ok"], true);
    assert_eq!(r["queries"][0]["rows"], serde_json::json!([["7"]]));
    assert_eq!(r["queries"][0]["columns"], serde_json::json!(["count"]));
    assert_eq!(r["queries"][1]["rows"], serde_json::json!([["7"]]));
    assert_eq!(r["queries"][1]["columns"], serde_json::json!(["newest"]));
    assert_eq!(r["queries"][1]["row_count"], 1);
    for k in ["restore_seconds", "recovery_seconds", "total_seconds"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r:#}");
    }
    assert!(r["total_seconds"].as_f64() >= r["recovery_seconds"].as_f64());
    // The newest commit is the last insert: just before the clock read after it.
    let newest = ts(r["newest_commit"].as_str().unwrap());
    let after = ts(&after_last);
    let gap = after.duration_since(newest).as_secs_f64();
    assert!((0.0..5.0).contains(&gap), "newest {newest}, after {after}");
    let rpo = r["rpo_seconds"].as_f64().unwrap();
    assert!(rpo > 0.0 && rpo < 600.0, "rpo {rpo}");
    assert!(r["end_lsn"].as_str().unwrap().contains('/'));
    assert!(!r["backup"]["snapshot_id"].as_str().unwrap().is_empty());
    assert!(!r["backup"]["stop_lsn"].is_null());
    assert_eq!(r["kept"], false);
    assert_eq!(r["scratch"], scratch.to_str().unwrap());
    assert!(r["warnings"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(!scratch.exists(), "the scratch dir is left behind");
    assert_no_server(&r, &scratch);

    // The text summary says the same.
    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--sql",
        "select count(*) from orders",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    assert!(out.contains("pg verify orders: OK"), "{out}");
    assert!(out.contains("query 1 ok (1 row"), "{out}");
    assert!(out.contains("    count\n    7\n"), "{out}");
}

#[test]
fn to_time_between_two_commits_holds_only_the_earlier_rows_run_as_root_and_kept() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2);
    let between = shop.now();
    // Commits 50 ms apart, so the time between them is unambiguous (not a synchronisation).
    shop.pg.sql("select pg_sleep(0.05)").unwrap();
    shop.insert(3);
    shop.archive_now();

    // As root: the scratch server has to run as `postgres`, in a directory given to it.
    let work = tempfile::tempdir().unwrap();
    let scratch = work.path().join("scratch");
    let o = shop.lb_root(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--to-time",
        &between,
        "--sql",
        "select string_agg(id::text, ',' order by id) from orders",
        "--sql",
        "select pg_is_in_recovery()",
        "--scratch",
        scratch.to_str().unwrap(),
        "--keep",
        "--json",
    ]);
    let r = report(&o);
    assert_eq!(code(&o), 0, "{r:#}\n{}", stderr(&o));
    assert_eq!(r["ok"], true);
    assert_eq!(r["target"]["kind"], "time");
    assert_eq!(r["recovery_state"], "paused");
    assert_eq!(r["queries"][0]["rows"], serde_json::json!([["1,2"]]));
    assert_eq!(r["queries"][1]["rows"], serde_json::json!([["t"]]));
    assert_eq!(r["server"]["os_user"], "postgres");
    // The newest commit is order 2's, before the target.
    let newest = ts(r["newest_commit"].as_str().unwrap());
    let target = ts(&between);
    let rpo = r["rpo_seconds"].as_f64().unwrap();
    assert!(newest <= target, "newest {newest}, target {target}");
    assert!((0.0..5.0).contains(&rpo), "rpo {rpo}");

    // Kept: the data directory stays, the server is stopped (cleanly: no postmaster.pid).
    assert_eq!(r["kept"], true);
    assert!(scratch.join("data/PG_VERSION").is_file());
    assert!(!scratch.join("data/postmaster.pid").exists());
    assert_no_server(&r, &scratch);
    // It would never archive into the shop's source, even when started by hand.
    let auto = std::fs::read_to_string(scratch.join("data/postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    // A kept directory is not a scratch dir for the next run.
    let o = shop.lb_root(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--scratch",
        scratch.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

#[test]
fn a_failing_query_fails_the_verification_and_still_cleans_up() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2);
    shop.archive_now();

    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--sql",
        "select * from no_such_table",
        "--sql",
        "select count(*) from orders",
        "--json",
    ]);
    let r = report(&o);
    assert_eq!(code(&o), 1, "{r:#}\n{}", stderr(&o));
    assert_eq!(r["ok"], false);
    assert!(r["failure"].is_null(), "restore and recovery worked: {r:#}");
    let q = &r["queries"][0];
    assert_eq!(q["ok"], false);
    let err = q["error"].as_str().unwrap();
    assert!(
        err.contains("42P01") && err.contains("no_such_table"),
        "{err}"
    );
    assert!(stderr(&o).contains("no_such_table"), "{}", stderr(&o));
    // The next query still ran.
    assert_eq!(r["queries"][1]["ok"], true);
    assert_eq!(r["queries"][1]["rows"], serde_json::json!([["2"]]));
    // The default scratch dir is gone, and its server.
    let scratch = PathBuf::from(r["scratch"].as_str().unwrap());
    assert!(
        scratch
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("lifeboat-verify-"),
        "{scratch:?}"
    );
    assert!(!scratch.exists(), "{scratch:?} is left behind");
    assert_no_server(&r, &scratch);
}

#[test]
fn damaged_wal_fails_fast_naming_the_segment_and_cleans_up() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2);
    let seg = shop.archive_now();
    shop.insert(3);
    shop.archive_now();
    // Flip a byte in the middle of the WAL object recovery needs after the backup.
    let object = shop.repo().join("wal").join(SOURCE).join(&seg);
    let mut b = std::fs::read(&object).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&object, b).unwrap();

    let started = Instant::now();
    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--latest",
        "--sql",
        "select count(*) from orders",
        "--timeout",
        "10m",
        "--json",
    ]);
    let took = started.elapsed();
    let r = report(&o);
    assert_eq!(code(&o), 1, "{r:#}\n{}", stderr(&o));
    assert!(
        took < Duration::from_secs(120),
        "took {took:?}: not a timeout"
    );
    assert_eq!(r["ok"], false);
    assert_eq!(r["failure"]["stage"], "recovery", "{r:#}");
    assert_eq!(r["failure"]["wal_file"], seg.as_str(), "{r:#}");
    assert!(r["failure"]["message"].as_str().unwrap().contains(&seg));
    assert!(r["queries"].as_array().unwrap().is_empty());
    assert!(stderr(&o).contains(&seg), "{}", stderr(&o));
    let tail = r["failure"]["log_tail"].to_string();
    assert!(tail.contains("FATAL"), "{tail}");
    let scratch = PathBuf::from(r["scratch"].as_str().unwrap());
    assert!(!scratch.exists(), "{scratch:?} is left behind");
    assert_no_server(&r, &scratch);

    // In text, stderr names it too, with the server's last words.
    let o = shop.lb(&["pg", "verify", "--source", SOURCE]);
    println!("{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"));
    assert!(
        stderr(&o).contains(&format!("WAL file {seg}")),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("could not restore file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_scratch_dir_holding_a_running_cluster_is_refused() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    let data = shop.pg.data_dir();
    let before = std::fs::read_dir(&data).unwrap().count();
    for run in [Shop::lb, Shop::lb_root] {
        let o = run(
            &shop,
            &[
                "pg",
                "verify",
                "--source",
                SOURCE,
                "--scratch",
                data.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains("running PostgreSQL"), "{}", stderr(&o));
    }
    // The cluster is untouched and still serves.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), before);
    assert_eq!(shop.pg.sql("select count(*) from orders").unwrap(), "1");
}

#[test]
fn a_killed_verify_takes_its_server_down() {
    // cron's `timeout`, an OOM kill: the scratch server must not outlive lifeboat.
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    let work = tempfile::tempdir().unwrap();
    let scratch = work.path().join("scratch");
    let marker = format!("verify-kill-{}", std::process::id());
    let mut child = Command::new(BIN)
        .env_remove("LIFEBOAT_PASSWORD")
        .arg("--repo")
        .arg(shop.repo())
        .arg("--password-file")
        .arg(shop.dir.path().join("machine.key"))
        .args(["pg", "verify", "--source", SOURCE, "--sql"])
        .arg(format!("select pg_sleep(300), '{marker}'"))
        .arg("--scratch")
        .arg(&scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the validation query runs on the scratch server.
    let psql = shop.pg.bin_dir().join("psql");
    wait_until("the validation query to run", || {
        let Some(port) = std::fs::read_dir(scratch.join("sock")).ok().and_then(|rd| {
            rd.flatten().find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".lock")
                    .and_then(|p| p.strip_prefix(".s.PGSQL."))
                    .map(str::to_string)
            })
        }) else {
            return false;
        };
        Command::new(&psql)
            .args(["-X", "-Atq", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(scratch.join("sock"))
            .args(["-p", &port, "-c"])
            .arg(format!(
                "select count(*) from pg_stat_activity where query like '%{marker}%' \
                 and state = 'active' and pid <> pg_backend_pid()"
            ))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
    });
    let procs = processes_in(&scratch);
    println!("{procs:#?}");
    assert!(!procs.is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the scratch server to stop", || {
        processes_in(&scratch).is_empty()
    });
}

#[test]
fn a_setting_raised_on_the_primary_after_the_backup_is_raised_on_the_scratch_server() {
    // The WAL after the backup says max_connections went up; hot standby pauses replay
    // there. With a time target that pause must not pass for "target reached": verify
    // restarts the server with the primary's value and replays on to the target.
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.pg
        .sql("alter system set max_connections = 150")
        .unwrap();
    shop.pg.stop().unwrap();
    shop.pg.start_server().unwrap();
    shop.insert(2);
    let between = shop.now();
    shop.pg.sql("select pg_sleep(0.05)").unwrap();
    shop.insert(3);
    shop.archive_now();
    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--to-time",
        &between,
        "--sql",
        "select string_agg(id::text, ',' order by id) from orders",
        "--sql",
        "show max_connections",
        "--json",
    ]);
    let r = report(&o);
    assert_eq!(code(&o), 0, "{r:#}\n{}", stderr(&o));
    assert_eq!(r["recovery_state"], "paused");
    assert_eq!(r["queries"][0]["rows"], serde_json::json!([["1,2"]]));
    assert_eq!(r["queries"][1]["rows"], serde_json::json!([["150"]]));
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("max_connections to 150"), "{warnings}");
    assert!(stderr(&o).contains("max_connections"), "{}", stderr(&o));
    let scratch = PathBuf::from(r["scratch"].as_str().unwrap());
    assert!(!scratch.exists());
    assert_no_server(&r, &scratch);
}
