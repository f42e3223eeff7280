//! Issue 10: PostgreSQL commands that answered a mistake with an empty success. A mistyped
//! `--source` is a usage error naming the sources the repository holds (`pg sources` lists
//! them); a recovery target time that has not happened yet is refused before anything is
//! restored, saying how far the repository's WAL reaches. Against a real PostgreSQL 15.
#![allow(clippy::unwrap_used)]

mod common;

use lifeboat_testkit::postgres::owner_tempdir;

use common::pg::{Shop, SOURCE};
use common::{assert_schema, code, stderr};

#[test]
fn r10_unknown_sources_and_future_targets_are_refused() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.archive_now();

    // `pg sources` lists the one source, with its backup and WAL.
    let all: serde_json::Value =
        serde_json::from_str(&shop.lb_ok(&["pg", "sources", "--json"])).unwrap();
    assert_schema("pg-sources", &all);
    let all = all["sources"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["source"], SOURCE);
    assert_eq!(all[0]["base_backups"], 1);
    assert!(all[0]["wal_objects"].as_u64().unwrap() >= 1, "{all:?}");
    assert!(shop.lb_ok(&["pg", "sources"]).contains(SOURCE));

    // A mistyped source: exit 2, naming the known ones, for `pg backups` and `pg restore`.
    let o = shop.lb(&["pg", "backups", "--source", "nosuch"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("\"nosuch\"") && err.contains(SOURCE), "{err}");
    assert!(err.contains("pg sources"), "says how to list them: {err}");
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let o = shop.lb(&[
        "pg",
        "restore",
        "--source",
        "nosuch",
        "--target",
        data.to_str().unwrap(),
        "--latest",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains(SOURCE), "{}", stderr(&o));
    assert!(
        !data.exists(),
        "a refused restore created the data directory"
    );

    // A target time in the future: exit 2 before anything is restored, naming how far the
    // WAL reaches and the way out.
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();
    let o = shop.lb(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
        "--to-time",
        &future,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("in the future") && err.contains("reaches"),
        "{err}"
    );
    assert!(err.contains("--latest"), "{err}");
    assert!(
        !data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(),
        "a refused restore wrote files"
    );
}

/// `pg verify` takes the recovery targets `pg restore` takes (one set of flags): here
/// `--immediate` (the base backup alone) proves the backup without the WAL after it, and
/// a malformed or doubled target is a usage error before anything is restored.
#[test]
fn r10_pg_verify_takes_the_recovery_targets_of_pg_restore() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.insert(2); // after the backup: --immediate must not see it
    shop.archive_now();
    let o = shop.lb(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--immediate",
        "--sql",
        "select string_agg(id::text, ',' order by id) from orders",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = report.to_string();
    assert!(rows.contains("\"1\"") && !rows.contains("1,2"), "{rows}");

    let o = shop.lb(&["pg", "verify", "--source", SOURCE, "--to-lsn", "nonsense"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--to-lsn"), "{}", stderr(&o));
    let o = shop.lb(&[
        "pg", "verify", "--source", SOURCE, "--latest", "--to-xid", "5",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// Restoring beside the running cluster: `--port auto` gives the copy a free port (written
/// to postgresql.auto.conf, so it wins over the backed-up postgresql.conf) and says which;
/// archiving is off by default; a port that is not one is a usage error.
#[test]
fn r10_pg_restore_port_auto_gives_the_copy_a_free_port() {
    let shop = Shop::new();
    shop.insert(1);
    shop.backup();
    shop.archive_now();
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let d = data.to_str().unwrap();
    let o = shop.lb(&[
        "pg", "restore", "--source", SOURCE, "--target", d, "--port", "nope",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--port"), "{}", stderr(&o));
    let o = shop.lb(&[
        "pg", "restore", "--source", SOURCE, "--target", d, "--port", "auto",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    let port: u16 = auto
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("port = "))
        .unwrap_or_else(|| panic!("no port in postgresql.auto.conf:\n{auto}"))
        .trim()
        .parse()
        .unwrap();
    assert_ne!(
        port,
        shop.pg.port(),
        "the copy would collide with production"
    );
    assert!(out.contains(&format!("(port {port})")), "{out}");
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is taken"
    );
}

/// A `pg stream` stopped for good leaves its slot behind, and the primary keeps every WAL
/// segment from it on. `pg slots` shows the WAL each slot holds back and flags an unused one
/// past `--max-retained` (exit 1); `pg stream --drop-slot` drops it.
#[test]
fn r10_pg_slots_finds_an_abandoned_slot_and_drop_slot_removes_it() {
    let shop = Shop::new();
    let dsn = shop.pg.dsn();
    shop.pg
        .sql("select pg_create_physical_replication_slot('lifeboat_orders', true)")
        .unwrap();
    shop.insert(1);
    shop.archive_now(); // a segment switch: the slot now holds back WAL
    let o = shop.lb(&["pg", "slots", "--dsn", &dsn, "--json"]);
    assert_eq!(code(&o), 0, "under the default 1 GiB: {}", stderr(&o));
    let slots: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_schema("pg-slots", &slots);
    let slot = &slots["slots"].as_array().unwrap()[0];
    assert_eq!(slot["slot"], "lifeboat_orders");
    assert_eq!(slot["active"], false);
    let held = slot["retained_bytes"].as_u64().unwrap();
    assert!(held > 0, "{slots}");

    let o = shop.lb(&["pg", "slots", "--dsn", &dsn, "--max-retained", "1KiB"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("lifeboat_orders") && err.contains("--drop-slot"),
        "{err}"
    );

    let out = shop.lb_ok(&[
        "pg",
        "stream",
        "--source",
        SOURCE,
        "--dsn",
        &dsn,
        "--drop-slot",
    ]);
    assert!(
        out.contains("dropped replication slot lifeboat_orders"),
        "{out}"
    );
    let left = shop
        .pg
        .sql("select count(*) from pg_replication_slots")
        .unwrap();
    assert!(left.trim() == "0", "slots left: {left}");
    // Again: nothing to drop is not an error.
    let out = shop.lb_ok(&[
        "pg",
        "stream",
        "--source",
        SOURCE,
        "--dsn",
        &dsn,
        "--drop-slot",
    ]);
    assert!(out.contains("nothing to drop"), "{out}");
}
