//! PostgreSQL continuous protection, end to end against a real PostgreSQL 15: archiving
//! with `pg wal-push`, base backups, point-in-time restores that the server then recovers,
//! timelines, a killed `wal-push`, and damage that must stop recovery.
//!
//! Servers run as the `postgres` OS user (the tests run as root), and so does every
//! `lifeboat` command that touches the repository, like a real archive_command would.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use std::time::Duration;

use lifeboat_testkit::postgres::owner_tempdir;
use lifeboat_testkit::PgServer;

use common::pg::{archive_now, ids, wait_until, Shop, SOURCE};
use common::{code, stderr};

#[test]
fn point_in_time_restores_hold_exactly_the_rows_committed_before_the_target() {
    let shop = Shop::new();
    shop.pg
        .sql("insert into orders values (1, 'before the backup')")
        .unwrap();
    let b = shop.backup();
    assert_eq!(b["postgres"]["source"], SOURCE);
    assert_eq!(b["postgres"]["timeline"], 1);

    // Orders 2..=7, each its own transaction, with a time, an LSN and a restore point
    // recorded right after some of them.
    let mut after_time = Vec::new();
    let mut after_lsn = Vec::new();
    for id in 2..=7 {
        shop.pg
            .sql(&format!("insert into orders values ({id}, 'order {id}')"))
            .unwrap();
        after_time.push(shop.pg.sql("select clock_timestamp()").unwrap());
        after_lsn.push(shop.pg.sql("select pg_current_wal_insert_lsn()").unwrap());
        if id == 4 {
            shop.pg
                .sql("select pg_create_restore_point('after order 4')")
                .unwrap();
        }
        // Commits 40 ms apart, so a time between two of them is unambiguous.
        shop.pg.sql("select pg_sleep(0.04)").unwrap();
    }
    shop.archive_now();

    let listing: serde_json::Value =
        serde_json::from_str(&shop.lb_ok(&["pg", "backups", "--source", SOURCE, "--json"]))
            .unwrap();
    assert_eq!(listing["backups"].as_array().unwrap().len(), 1);
    assert_eq!(listing["gaps"].as_array().unwrap().len(), 0, "{listing}");

    // A time after order 3 committed and before order 4 did.
    let s = shop.restore_and_start(&["--to-time", &after_time[1]]);
    assert_eq!(ids(&s), "1,2,3", "--to-time {}", after_time[1]);
    drop(s);
    // The position right after order 5's commit.
    let s = shop.restore_and_start(&["--to-lsn", &after_lsn[3]]);
    assert_eq!(ids(&s), "1,2,3,4,5", "--to-lsn {}", after_lsn[3]);
    drop(s);
    let s = shop.restore_and_start(&["--to-name", "after order 4"]);
    assert_eq!(ids(&s), "1,2,3,4");
    drop(s);
    // Paused at the target: read-only, for inspection first.
    let s = shop.restore_and_start(&["--to-time", &after_time[0], "--target-action", "pause"]);
    assert_eq!(ids(&s), "1,2");
    assert_eq!(s.sql("select pg_is_in_recovery()").unwrap(), "t");
    drop(s);
    let s = shop.restore_and_start(&["--latest"]);
    assert_eq!(ids(&s), "1,2,3,4,5,6,7");
    assert_eq!(
        s.sql("select note from orders where id = 7").unwrap(),
        "order 7"
    );
}

#[test]
fn restores_follow_a_promoted_standby_or_stay_on_the_old_timeline() {
    let shop = Shop::new();
    shop.pg
        .sql("insert into orders values (1, 'a'), (2, 'b')")
        .unwrap();
    shop.backup();
    shop.pg.sql("insert into orders values (3, 'c')").unwrap();
    // The standby's configuration is a copy of the primary's: it archives into the same
    // source once it is promoted.
    let standby = PgServer::standby_of(&shop.pg, &[]).unwrap();
    standby
        .wait_for("select count(*) from orders", "3")
        .unwrap();
    standby.promote().unwrap();
    standby.wait_for("select pg_is_in_recovery()", "f").unwrap();
    standby
        .sql("insert into orders values (100, 'written on timeline 2')")
        .unwrap();
    archive_now(&standby);
    wait_until("00000002.history archived", || {
        serde_json::from_slice::<serde_json::Value>(
            &shop
                .lb(&["pg", "backups", "--source", SOURCE, "--json"])
                .stdout,
        )
        .is_ok_and(|v| {
            v["histories"]
                .as_array()
                .is_some_and(|h| h.contains(&2.into()))
        })
    });
    // The old primary goes on writing on timeline 1 (split brain, or a test cluster).
    shop.pg
        .sql("insert into orders values (50, 'written on timeline 1')")
        .unwrap();
    shop.archive_now();

    let latest = shop.restore_and_start(&["--latest"]);
    assert_eq!(
        ids(&latest),
        "1,2,3,100",
        "timeline latest follows the promotion"
    );
    drop(latest);
    let old = shop.restore_and_start(&["--latest", "--timeline", "1"]);
    assert_eq!(
        ids(&old),
        "1,2,3,50",
        "timeline 1 stays on the old primary's history"
    );
}

#[test]
fn a_killed_wal_push_leaves_no_partial_segment_and_the_next_push_succeeds() {
    // As root, on a repository of root's: killing `runuser` would not kill lifeboat.
    let env = common::Env::new();
    env.init();
    let pg = PgServer::start(&[]).unwrap();
    pg.sql("create table t(x text)").unwrap();
    pg.sql("insert into t select md5(g::text) from generate_series(1, 200000) g")
        .unwrap();
    let name = pg
        .sql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    pg.sql("select pg_switch_wal()").unwrap();
    let seg = env.path(&name);
    std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &seg).unwrap();
    let original = std::fs::read(&seg).unwrap();
    let object = env.repo.join("wal").join(SOURCE).join(&name);
    let fetched = env.path("fetched");

    // Seeded kill points between 0 and 60 ms into the push.
    let seed: u64 = std::env::var("LIFEBOAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("kill seed {seed} (LIFEBOAT_CRASH_SEED replays)");
    let mut x = seed | 1;
    let mut stored_before_kill = 0;
    for _ in 0..20 {
        if object.exists() {
            std::fs::remove_file(&object).unwrap();
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_micros(x % 60_000);
        let mut child = env
            .cmd()
            .args(["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(delay); // the randomized kill point, not a synchronisation
        let _ = child.kill();
        let _ = child.wait();
        // Either nothing, or the whole segment.
        if object.exists() {
            stored_before_kill += 1;
            let o = env.run(&[
                "pg",
                "wal-fetch",
                "--source",
                SOURCE,
                &name,
                fetched.to_str().unwrap(),
            ]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert_eq!(std::fs::read(&fetched).unwrap(), original);
        }
    }
    println!("{stored_before_kill} of 20 pushes completed before the kill");
    // The next push succeeds (stored, or already there) and the segment is intact.
    env.ok(&["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()]);
    env.ok(&["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()]);
    env.ok(&[
        "pg",
        "wal-fetch",
        "--source",
        SOURCE,
        &name,
        fetched.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&fetched).unwrap(), original);
    // Different content under the same name is refused and nothing is overwritten.
    let mut other = original.clone();
    other[100] ^= 1;
    std::fs::write(&seg, &other).unwrap();
    let o = env.run(&["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    env.ok(&[
        "pg",
        "wal-fetch",
        "--source",
        SOURCE,
        &name,
        fetched.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&fetched).unwrap(), original);
    let check = env.run(&["check", "--read-data"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
}

/// Flips one byte in the middle of a repository file.
fn corrupt(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_wal_stops_recovery_and_is_found_by_check() {
    let shop = Shop::new();
    shop.pg.sql("insert into orders values (1, 'a')").unwrap();
    shop.backup();
    shop.pg.sql("insert into orders values (2, 'b')").unwrap();
    let seg = shop
        .pg
        .sql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    shop.archive_now();
    shop.pg.sql("insert into orders values (3, 'c')").unwrap();
    shop.archive_now();
    let object = shop.repo().join("wal").join(SOURCE).join(&seg);
    corrupt(&object);

    // restore_command: exit 126, naming the object, so PostgreSQL stops.
    let dest = shop.dir.path().join("fetched");
    let o = shop.lb(&[
        "pg",
        "wal-fetch",
        "--source",
        SOURCE,
        &seg,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("wal/{SOURCE}/{seg}")),
        "{}",
        stderr(&o)
    );
    // check --read-data finds it.
    let o = shop.lb(&["check", "--read-data"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&seg), "{}", stderr(&o));

    // A restore to the latest point: the server must refuse to finish recovery rather
    // than promote without orders 2 and 3.
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    shop.lb_ok(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
        "--latest",
    ]);
    let started = PgServer::adopt(&data, &["archive_mode = off"]);
    let log = match &started {
        // pg_ctl may return before recovery reaches the bad segment: wait for the server
        // to stop on its own.
        Ok(s) => {
            wait_until("the server to stop at the damaged segment", || {
                s.pid().is_none()
            });
            std::fs::read_to_string(s.log_path()).unwrap()
        }
        Err(e) => e.to_string(),
    };
    assert!(log.contains("FATAL"), "{log}");
    assert!(log.contains(&seg), "{log}");
}

#[test]
fn a_damaged_base_backup_fails_the_restore_naming_the_file() {
    let shop = Shop::new();
    shop.pg
        .sql("insert into orders select g, md5(g::text) from generate_series(1, 20000) g")
        .unwrap();
    shop.backup();
    // Damage every pack: whichever holds the orders table, the restore must name it.
    let mut packs = Vec::new();
    for d in std::fs::read_dir(shop.repo().join("data")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            packs.push(f.unwrap().path());
        }
    }
    for p in &packs {
        corrupt(p);
    }
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let o = shop.lb(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("data/"), "{}", stderr(&o));
    assert!(stderr(&o).contains("do not start"), "{}", stderr(&o));
}

#[test]
fn retention_removes_exactly_the_wal_no_kept_backup_needs() {
    let shop = Shop::new();
    let mut backups = Vec::new();
    for round in 0..3 {
        shop.pg
            .sql(&format!(
                "insert into orders select g, 'round {round}' from generate_series({}, {}) g",
                round * 1000 + 1,
                round * 1000 + 1000
            ))
            .unwrap();
        shop.archive_now();
        backups.push(shop.backup());
        shop.archive_now();
    }
    let wal_names = |shop: &Shop| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(shop.repo().join("wal").join(SOURCE))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = wal_names(&shop);
    let out = shop.lb_ok(&["forget", "--keep-last", "2", "--prune", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["remove"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["remove"][0], backups[0]["snapshot_id"]);
    let after = wal_names(&shop);
    // What went is exactly the WAL before the oldest kept backup's start segment.
    let oldest = backups[1]["postgres"]["start_lsn"].as_str().unwrap();
    let (hi, lo) = oldest.split_once('/').unwrap();
    let seg_no =
        ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) >> 24;
    for name in &before {
        let is_segment = name.len() >= 24 && name[..24].bytes().all(|b| b.is_ascii_hexdigit());
        let number = is_segment.then(|| {
            u64::from_str_radix(&name[8..16], 16).unwrap() * 256
                + u64::from_str_radix(&name[16..24], 16).unwrap()
        });
        let should_stay = number.is_none_or(|n| n >= seg_no);
        assert_eq!(
            after.contains(name),
            should_stay,
            "{name} (oldest kept segment {seg_no:X})"
        );
    }
    assert!(after.len() < before.len(), "nothing was removed");
    let o = shop.lb(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Every kept backup still restores, to the end of the WAL.
    for b in &backups[1..] {
        let id = b["snapshot_id"].as_str().unwrap();
        let s = shop.restore_and_start(&["--backup", id, "--latest"]);
        assert_eq!(
            s.sql("select count(*) from orders").unwrap(),
            "3000",
            "from {id}"
        );
    }
}

#[test]
fn asynchronous_archiving_keeps_up_and_a_prefetching_restore_replays_it() {
    let shop = Shop::new_async();
    shop.pg
        .sql("insert into orders values (1, 'first')")
        .unwrap();
    shop.backup();
    // A burst: ten segments ready at once; the background pusher takes them two at a time.
    shop.pg
        .sql("create table filler as select g, md5(g::text) || md5((g + 1)::text) as pad from generate_series(1, 700000) g")
        .unwrap();
    shop.pg
        .sql("insert into orders values (2, 'after the burst')")
        .unwrap();
    shop.archive_now();
    let failed = shop
        .pg
        .sql("select failed_count from pg_stat_archiver")
        .unwrap();
    assert_eq!(failed, "0", "{}", shop.pg.log_tail());
    let log = std::fs::read_to_string(
        shop.dir
            .path()
            .join("spool")
            .join(SOURCE)
            .join("archive")
            .join("pusher.log"),
    )
    .unwrap_or_default();
    assert!(!log.contains("error"), "{log}");
    // Restored with prefetch (the default): every row, and the spool is cleaned up.
    let s = shop.restore_and_start(&["--latest", "--prefetch", "4"]);
    assert_eq!(ids(&s), "1,2");
    assert_eq!(s.sql("select count(*) from filler").unwrap(), "700000");
}

#[test]
fn updates_spread_over_a_table_store_a_small_layer_that_restores_exactly() {
    // 5 % of the rows, spread evenly: nearly every page of the table changes a little. The
    // second backup stores XOR layers over the first (ADR 0016), and a restore rebuilds
    // the exact table.
    let shop = Shop::new();
    shop.pg
        .sql(
            "create table accounts (aid int primary key, abalance int not null, filler text) \
             with (autovacuum_enabled = off); \
             insert into accounts select g, 0, md5(g::text) || md5((g + 1)::text) \
             from generate_series(1, 60000) g; checkpoint",
        )
        .unwrap();
    let full = shop.backup();
    shop.pg
        .sql("update accounts set abalance = abalance + 7 where aid % 20 = 3; checkpoint")
        .unwrap();
    let second = shop.backup();
    let stored = |v: &serde_json::Value| v["summary"]["stored_bytes"].as_u64().unwrap();
    assert!(
        stored(&second) * 100 <= stored(&full) * 15,
        "the second backup stored {} bytes, the full one {}",
        stored(&second),
        stored(&full)
    );
    let check =
        "select count(*), sum(abalance), md5(string_agg(filler || abalance, ',' order by aid)) \
                 from accounts";
    let want = shop.pg.sql(check).unwrap();
    shop.archive_now();
    let restored = shop.restore_and_start(&["--latest"]);
    assert_eq!(restored.sql(check).unwrap(), want);
    assert_eq!(
        restored
            .sql("select count(*) from accounts where abalance = 7")
            .unwrap(),
        "3000"
    );
}

#[test]
fn a_delta_restore_rewrites_only_what_differs() {
    let shop = Shop::new();
    shop.pg
        .sql("insert into orders select g, md5(g::text) from generate_series(1, 50000) g")
        .unwrap();
    shop.backup();
    shop.archive_now();
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let d = data.to_str().unwrap();
    let restore = |extra: &[&str]| {
        let mut a = vec![
            "pg",
            "restore",
            "--source",
            SOURCE,
            "--target",
            d,
            "--immediate",
            "--json",
        ];
        a.extend_from_slice(extra);
        shop.lb(&a)
    };
    let first = restore(&[]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    // Without --delta a second restore into the same directory is refused.
    let again = restore(&[]);
    assert_eq!(code(&again), 2, "{}", stderr(&again));
    assert!(stderr(&again).contains("--delta"), "{}", stderr(&again));
    // Damage the copy: change bytes of the orders table, drop a file, add a stray one.
    let rel = shop
        .pg
        .sql("select pg_relation_filepath('orders')")
        .unwrap();
    let table = data.join(&rel);
    let mut bytes = std::fs::read(&table).unwrap();
    let len = bytes.len();
    bytes[len / 2] ^= 0xff;
    std::fs::write(&table, &bytes).unwrap();
    std::fs::remove_file(data.join("PG_VERSION")).unwrap();
    std::fs::write(data.join("stray.txt"), b"not from the backup").unwrap();
    let out = restore(&["--delta"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = v["files"]["files"].as_u64().unwrap();
    let kept = v["files"]["files_kept"].as_u64().unwrap();
    assert!(kept > 500, "most files were already right: {v}");
    assert!(
        (2..=10).contains(&written),
        "only the changed and the missing files are written (and the few PostgreSQL \
         files a restore replaces): {written} written, {kept} kept"
    );
    assert!(v["files"]["removed"].as_u64().unwrap() >= 1, "{v}");
    assert!(!data.join("stray.txt").exists());
    lifeboat_testkit::postgres::give_to_owner(&data).unwrap();
    let s = PgServer::adopt(&data, &["archive_mode = off"]).unwrap();
    s.wait_for("select pg_is_in_recovery()", "f").unwrap();
    assert_eq!(s.sql("select count(*) from orders").unwrap(), "50000");
    assert_eq!(
        s.sql("select note from orders where id = 4242").unwrap(),
        s.sql("select md5('4242')").unwrap()
    );
}

#[test]
fn a_missing_segment_is_reported_as_a_gap_that_limits_the_restore() {
    let shop = Shop::new();
    shop.pg.sql("insert into orders values (1, 'a')").unwrap();
    shop.backup();
    let mut segments = Vec::new();
    for id in 2..=4 {
        shop.pg
            .sql(&format!("insert into orders values ({id}, 'x')"))
            .unwrap();
        segments.push(
            shop.pg
                .sql("select pg_walfile_name(pg_current_wal_lsn())")
                .unwrap(),
        );
        shop.archive_now();
    }
    // Lose the segment holding order 3.
    std::fs::remove_file(shop.repo().join("wal").join(SOURCE).join(&segments[1])).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&shop.lb_ok(&["pg", "backups", "--source", SOURCE, "--json"]))
            .unwrap();
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v}");
    assert_eq!(gaps[0]["first_missing"], segments[1].as_str());
    let text = shop.lb_ok(&["pg", "backups", "--source", SOURCE]);
    assert!(text.contains("GAP"), "{text}");
    // A restore to the latest point says how far the WAL reaches, and gets there only.
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    let out = shop.lb_ok(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
        "--latest",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["wal_available_to"], gaps[0]["from"], "{r}");
    let s = PgServer::adopt(&data, &["archive_mode = off"]).unwrap();
    s.wait_for("select pg_is_in_recovery()", "f").unwrap();
    assert_eq!(ids(&s), "1,2");
}
