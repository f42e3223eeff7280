//! `pg stream` against a real PostgreSQL 15: the RPO when the primary is killed under write
//! load (counted in acknowledged transactions), and following a failover to a promoted
//! standby onto its new timeline.
//!
//! These tests run `lifeboat` as root on a repository of root's (killing a `runuser`
//! wrapper would not stop the streamer); restored data directories are handed to the
//! `postgres` user by `PgServer::adopt`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_testkit::postgres::owner_tempdir;
use lifeboat_testkit::PgServer;

use common::{code, stderr, Env};

const SOURCE: &str = "orders";

/// A running `lifeboat pg stream --json`, with its events collected by a reader thread.
struct Streamer {
    child: Child,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Streamer {
    fn start(env: &Env, dsn: &str) -> Streamer {
        let mut child = env
            .cmd()
            .args(["pg", "stream", "--source", SOURCE, "--dsn", dsn, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    ev.lock().unwrap().push(v);
                }
            }
        });
        Streamer {
            child,
            events,
            reader: Some(reader),
        }
    }

    /// Waits until an event satisfies `pred`.
    fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.events.lock().unwrap().iter().any(&pred) {
                return;
            }
            assert!(Instant::now() < deadline, "streamer never reported {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait: it flushes what it holds and exits 0.
    fn stop(mut self) {
        let pid = self.child.id();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "pg stream exited with {status}");
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        // Every line is one event in the vocabulary of docs/json.md.
        for e in self.events.lock().unwrap().iter() {
            common::assert_schema("pg-stream", e);
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two tests run one at a time: each runs PostgreSQL servers, pgbench and a streamer,
/// and beside each other on two cores they starve the streamer of CPU, which measures the
/// machine rather than Lifeboat's RPO (a CI run lost an order acknowledged 1.4 s before the
/// kill that way).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lsn_of(v: &serde_json::Value) -> u64 {
    let s = v["lsn"].as_str().unwrap_or("0/0");
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn restore_latest(env: &Env) -> PgServer {
    // The restored server runs restore_command as `postgres`: it needs to reach the
    // repository and a password file (a password in the environment is never written
    // into the server's configuration).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pw = env.path("password");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = owner_tempdir("lifeboat-restore-").unwrap();
    let data = target.path().join("data");
    env.ok(&[
        "--password-file",
        pw.to_str().unwrap(),
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
        "--latest",
    ]);
    let s = PgServer::adopt(&data, &["archive_mode = off"]).unwrap();
    s.wait_for("select pg_is_in_recovery()", "f").unwrap();
    s
}

#[test]
fn killing_the_primary_under_load_loses_at_most_a_fraction_of_a_second_of_commits() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    env.init();
    let pg = PgServer::start(&["max_wal_size = 1GB"]).unwrap();
    pg.sql("create table acks(id bigint primary key, at timestamptz default clock_timestamp())")
        .unwrap();
    let streamer = Streamer::start(&env, &pg.dsn());
    streamer.wait_for("streaming", |e| e["event"] == "streaming");
    // A base backup: its WAL reaches the repository through the streamer alone.
    env.ok(&[
        "pg",
        "backup",
        "--source",
        SOURCE,
        "--dsn",
        &pg.dsn(),
        "--wal-wait",
        "60s",
    ]);

    // Background load: pgbench on its own tables.
    let bench = |args: &[&str]| {
        std::process::Command::new(pg.bin_dir().join("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port().to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(bench(&["-i", "-s", "5", "-q"]).wait().unwrap().success());
    let mut load = bench(&["-c", "2", "-j", "1", "-T", "60", "-n"]);

    // The shop's orders: one transaction each, and the moment each was acknowledged.
    let acked = Arc::new(AtomicU64::new(0));
    let times: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(vec![Instant::now()]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, times, stop, dsn) = (acked.clone(), times.clone(), stop.clone(), pg.dsn());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
            let mut id = 1u64;
            while !stop.load(Ordering::Relaxed) {
                if c.execute("insert into acks(id) values ($1)", &[&(id as i64)])
                    .is_err()
                {
                    break; // the primary is gone
                }
                times.lock().unwrap().push(Instant::now());
                acked.store(id, Ordering::SeqCst);
                id += 1;
            }
        })
    };
    // Let it run long enough to fill a few segments, then the disaster.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 3000 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    streamer.wait_for("a complete segment", |e| e["event"] == "segment");
    // The moment of the signal: `kill` returns only once every backend has noticed the
    // postmaster is gone, which took 1.4 s in one CI run. Backends that had not noticed yet
    // may still acknowledge orders in that time, but their WAL can no longer be streamed.
    let killed_at = Instant::now();
    pg.kill().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let _ = load.kill();
    let _ = load.wait();
    streamer.wait_for("the lost connection", |e| e["event"] == "disconnected");
    let durable = streamer
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "flushed")
        .map(lsn_of)
        .max()
        .unwrap_or(0);
    streamer.stop();

    // From the repository alone.
    let restored = restore_latest(&env);
    let acked = acked.load(Ordering::SeqCst);
    let count: u64 = restored
        .sql("select count(*) from acks")
        .unwrap()
        .parse()
        .unwrap();
    let max: u64 = restored
        .sql("select coalesce(max(id), 0) from acks")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(count, max, "no hole in the restored orders");
    let missing = acked.saturating_sub(max);
    let times = times.lock().unwrap();
    // How long before the kill signal the first lost acknowledgement came (zero when every
    // lost order was acknowledged after it, by a backend orphaned by the kill).
    let window = times
        .get(max as usize + 1)
        .map_or(Duration::ZERO, |t| killed_at.saturating_duration_since(*t));
    let after_kill = times.iter().skip(1).filter(|t| **t > killed_at).count();
    let rate = acked as f64 / times[acked as usize].duration_since(times[0]).as_secs_f64();
    println!(
        "RPO under load: {acked} orders acknowledged ({rate:.0}/s beside pgbench; {after_kill} \
         after the kill signal), {max} restored, {missing} missing = the last {:.3} s before \
         the kill; repository durable to {durable:X}",
        window.as_secs_f64()
    );
    assert!(
        window <= Duration::from_secs(1),
        "lost {missing} acknowledged orders spanning {window:?} (> 1 s)"
    );
    assert!(missing as f64 <= rate * 1.0 + 1.0, "lost {missing} orders");
}

#[test]
fn the_streamer_follows_a_failover_onto_the_new_timeline() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    env.init();
    let primary = PgServer::start(&[]).unwrap();
    primary
        .sql("create table orders(id int primary key)")
        .unwrap();
    let standby = PgServer::standby_of(&primary, &[]).unwrap();
    // Both servers: after the primary dies, the client connects to the next one.
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres connect_timeout=2",
        primary.port(),
        standby.port()
    );
    let streamer = Streamer::start(&env, &dsn);
    streamer.wait_for("streaming", |e| e["event"] == "streaming");
    env.ok(&[
        "pg",
        "backup",
        "--source",
        SOURCE,
        "--dsn",
        &primary.dsn(),
        "--wal-wait",
        "60s",
    ]);
    primary
        .sql("insert into orders select g from generate_series(1, 100) g")
        .unwrap();
    standby
        .wait_for("select count(*) from orders", "100")
        .unwrap();
    let end = primary.sql("select pg_current_wal_flush_lsn()").unwrap();
    streamer.wait_for(&format!("WAL to {end} durable"), |e| {
        e["event"] == "flushed"
            && lsn_of(e) >= {
                let (hi, lo) = end.split_once('/').unwrap();
                (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
            }
    });
    primary.kill().unwrap();
    standby.promote().unwrap();
    standby.wait_for("select pg_is_in_recovery()", "f").unwrap();
    standby
        .sql("insert into orders select g from generate_series(101, 150) g")
        .unwrap();
    streamer.wait_for("the switch to timeline 2", |e| {
        (e["event"] == "timeline" || e["event"] == "streaming") && e["timeline"] == 2
    });
    let end = standby.sql("select pg_current_wal_flush_lsn()").unwrap();
    let (hi, lo) = end.split_once('/').unwrap();
    let end = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    streamer.wait_for("timeline 2 WAL durable", |e| {
        e["event"] == "flushed" && lsn_of(e) >= end
    });
    streamer.stop();
    let listing = env.json(&["pg", "backups", "--source", SOURCE]);
    assert!(
        listing["histories"].as_array().unwrap().contains(&2.into()),
        "{listing}"
    );
    let restored = restore_latest(&env);
    assert_eq!(restored.sql("select count(*) from orders").unwrap(), "150");
    let o = env.run(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
