//! Issue 9: what a restored cluster may do to production, and what `pg restore` must have
//! made durable before it says "restored" — end to end against a real PostgreSQL 15.
//!
//! A restore made for a drill promotes onto a new timeline; with the backed-up
//! `archive_command` it would push its history file and segments into the production
//! source (r9_3). A crash after "restored" must never leave a durable `backup_label` over
//! relation files that are not (r9_4): this is checked on the real binary's system calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use lifeboat_testkit::postgres::owner_tempdir;
use lifeboat_testkit::PgServer;

use common::pg::{archive_now, ids, wait_until, Shop, SOURCE};
use common::stderr;

/// The timelines with a history file in the repository's listing of `source`.
fn histories(shop: &Shop, source: &str) -> Vec<u64> {
    let v: serde_json::Value =
        serde_json::from_str(&shop.lb_ok(&["pg", "backups", "--source", source, "--json"]))
            .unwrap();
    v["histories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect()
}

/// The WAL runs of `source` on `timeline` in the repository's listing.
fn runs_on(shop: &Shop, source: &str, timeline: u64) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&shop.lb_ok(&["pg", "backups", "--source", source, "--json"]))
            .unwrap();
    v["wal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["timeline"].as_u64() == Some(timeline))
        .cloned()
        .collect()
}

/// `pg restore --json ARGS` into a new directory, then starts the result with the
/// configuration exactly as restored (the backed-up postgresql.conf, with its
/// `archive_command` into the shop's source, plus what the restore wrote) and waits until
/// recovery has ended in a promotion.
fn restore_and_promote(shop: &Shop, args: &[&str]) -> (serde_json::Value, PgServer) {
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let d = data.to_str().unwrap().to_string();
    let mut a = vec![
        "pg", "restore", "--source", SOURCE, "--target", &d, "--json",
    ];
    a.extend_from_slice(args);
    let report: serde_json::Value = serde_json::from_str(&shop.lb_ok(&a)).unwrap();
    let server = PgServer::adopt(&data, &[]).unwrap();
    server.wait_for("select pg_is_in_recovery()", "f").unwrap();
    (report, server)
}

#[test]
fn r9_3_a_restored_cluster_never_archives_into_its_source_unless_it_is_the_new_production() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2);
    shop.archive_now();
    assert_eq!(histories(&shop, SOURCE), Vec::<u64>::new());

    // A drill: restore, promote (timeline 2), write, switch WAL.
    let (report, clone) = restore_and_promote(&shop, &["--latest"]);
    assert_eq!(ids(&clone), "1,2");
    assert_eq!(
        clone
            .sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
            .unwrap(),
        "00000002",
        "the clone promoted onto timeline 2"
    );
    clone
        .sql("insert into orders values (100, 'drill')")
        .unwrap();
    let seg = clone
        .sql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    clone.sql("select pg_switch_wal()").unwrap();
    // Either it does not archive at all, or it has archived what it switched away from.
    wait_until("the clone to archive or be unable to", || {
        clone.sql("show archive_mode").is_ok_and(|m| m == "off")
            || clone
                .sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                .is_ok_and(|last| last.as_str() >= seg.as_str())
    });
    assert_eq!(
        histories(&shop, SOURCE),
        Vec::<u64>::new(),
        "the clone's history file reached production's source"
    );
    assert!(
        runs_on(&shop, SOURCE, 2).is_empty(),
        "the clone's WAL reached production's source"
    );
    assert_eq!(clone.sql("show archive_mode").unwrap(), "off");
    assert_eq!(report["archiving"]["mode"], "off", "{report}");
    // Neither streams from production nor waits for its synchronous standbys.
    assert_eq!(clone.sql("show primary_conninfo").unwrap(), "");
    assert_eq!(clone.sql("show synchronous_standby_names").unwrap(), "");
    drop(clone);

    // Production goes on archiving into its source, which holds nothing of the clone.
    shop.insert(3);
    shop.archive_now();
    assert_eq!(
        histories(&shop, SOURCE),
        Vec::<u64>::new(),
        "the clone's history file reached production's source"
    );
    assert!(
        runs_on(&shop, SOURCE, 2).is_empty(),
        "the clone's WAL reached production's source"
    );
    // A restore to "latest" therefore stays on production's timeline.
    let s = shop.restore_and_start(&["--latest"]);
    assert_eq!(ids(&s), "1,2,3");
    drop(s);

    // The operator says the restored cluster is the new production: it archives into the
    // source, as the backed-up configuration says.
    let (report, new_primary) = restore_and_promote(&shop, &["--latest", "--promote-as-source"]);
    assert_eq!(report["archiving"]["mode"], "as_source", "{report}");
    assert_eq!(report["archiving"]["source"], SOURCE, "{report}");
    new_primary
        .sql("insert into orders values (200, 'new production')")
        .unwrap();
    archive_now(&new_primary);
    wait_until("the new production's history file archived", || {
        histories(&shop, SOURCE).contains(&2)
    });
}

#[test]
fn r9_3_the_restore_says_what_archiving_does_afterwards() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.archive_now();
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let d = target.path().join("data").to_str().unwrap().to_string();
    let out = shop.lb(&["pg", "restore", "--source", SOURCE, "--target", &d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("archiving: off") && text.contains("--promote-as-source"),
        "the output must say that the restored cluster does not archive, and how to change it:\n{text}"
    );
    let conf = std::fs::read_to_string(Path::new(&d).join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("archive_mode = 'off'"), "{conf}");
}

/// The first line of an strace log that matches `pred`, as an index.
fn first(lines: &[&str], pred: impl Fn(&str) -> bool) -> Option<usize> {
    lines.iter().position(|l| pred(l))
}

#[test]
fn r9_4_every_restored_file_is_durable_before_backup_label_is_written() {
    let shop = Shop::new();
    shop.pg
        .sql("insert into orders select g, repeat('x', 200) from generate_series(1, 20000) g")
        .unwrap();
    shop.backup();
    shop.archive_now();
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let trace = target.path().join("strace.log");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,openat2,fsync,fdatasync,syncfs,sync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(common::pg::BIN)
        .arg("--repo")
        .arg(shop.repo())
        .arg("--password-file")
        .arg(shop.key())
        .args(["pg", "restore", "--source", SOURCE, "--target"])
        .arg(&data)
        .env_remove("LIFEBOAT_PASSWORD")
        .output()
        .expect("strace (apt-get install strace)");
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let label = first(&lines, |l| {
        l.contains("openat(") && l.contains("/backup_label")
    })
    .unwrap_or_else(|| panic!("backup_label never opened:\n{log}"));
    // Relation files were written before; a syncfs of their filesystem (or a sync) must
    // come after the last of them and before backup_label exists.
    // The restore creates files relative to the target's descriptor (openat2 with
    // RESOLVE_BENEATH, ADR 0025): "base/…", or "…/base/…" through plain openat.
    let last_relation = lines
        .iter()
        .rposition(|l| {
            (l.contains("openat(") || l.contains("openat2("))
                && (l.contains("/base/") || l.contains("\"base/"))
                && l.contains("O_CREAT")
        })
        .unwrap_or_else(|| panic!("no relation file written:\n{log}"));
    assert!(last_relation < label);
    let synced = lines[last_relation..label]
        .iter()
        .any(|l| (l.contains("syncfs(") || l.contains(" sync(")) && l.contains("= 0"));
    assert!(
        synced,
        "nothing made the restored relation files durable before backup_label was written:\n{}",
        lines[last_relation..=label].join("\n")
    );
    // And backup_label, the signal file and the settings are durable, with their directory
    // entries, before the command exits 0: the data directory is fsynced after the last.
    let signal = first(&lines, |l| {
        l.contains("openat(") && l.contains("/recovery.signal")
    })
    .unwrap_or_else(|| panic!("recovery.signal never opened:\n{log}"));
    assert!(signal > label, "recovery.signal before backup_label");
    let dir = format!("\"{}\"", data.display());
    let dir_synced = lines[signal..].iter().enumerate().any(|(i, l)| {
        let Some(fd) = l
            .contains("openat(")
            .then_some(())
            .filter(|()| l.contains(&dir))
            .and_then(|()| l.rsplit("= ").next())
            .map(str::trim)
        else {
            return false;
        };
        lines[signal + i..]
            .iter()
            .any(|m| m.contains(&format!("fsync({fd})")) && m.contains("= 0"))
    });
    assert!(
        dir_synced,
        "the data directory is not fsynced after the recovery files:\n{}",
        lines[signal..].join("\n")
    );
    // The restored cluster starts and holds the rows.
    let s = PgServer::adopt(&data, &[]).unwrap();
    s.wait_for("select pg_is_in_recovery()", "f").unwrap();
    assert_eq!(s.sql("select count(*) from orders").unwrap(), "20000");
}

#[test]
fn r9_3_a_drill_can_keep_its_wal_in_another_source() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.archive_now();
    // The source restored from is refused as a target of --archive-to.
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let d = target.path().join("data").to_str().unwrap().to_string();
    let out = shop.lb(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        &d,
        "--archive-to",
        SOURCE,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--promote-as-source"),
        "{}",
        stderr(&out)
    );

    let (report, clone) = restore_and_promote(&shop, &["--latest", "--archive-to", "orders-drill"]);
    assert_eq!(report["archiving"]["mode"], "to_source", "{report}");
    assert_eq!(report["archiving"]["source"], "orders-drill", "{report}");
    clone
        .sql("insert into orders values (100, 'drill')")
        .unwrap();
    archive_now(&clone);
    wait_until("the drill's history file in its own source", || {
        histories(&shop, "orders-drill").contains(&2)
    });
    assert!(!runs_on(&shop, "orders-drill", 2).is_empty());
    assert_eq!(histories(&shop, SOURCE), Vec::<u64>::new());
    assert!(runs_on(&shop, SOURCE, 2).is_empty());
}
