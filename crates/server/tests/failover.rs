//! The daemon against real PostgreSQL 15: a two-member `sync` cluster bootstrapped by
//! Lifeboat, a writer inserting through the proxy every ~10 ms and logging each
//! acknowledged id, then the disaster. What a shop cares about is asserted: how long
//! writes were unavailable (RTO), that no acknowledged order is missing on the new primary,
//! that the old primary never takes another write and comes back as a standby.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_server::bootstrap::bootstrap;
use lifeboat_server::{Daemon, DaemonOptions, Status};
use lifeboat_testkit::free_port;

struct Estate {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ports: Vec<u16>,
    config_text: String,
}

impl Estate {
    fn new(members: usize, extra: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("lb-ha-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().to_path_buf();
        let ports: Vec<u16> = (0..members).map(|_| free_port().unwrap()).collect();
        let mut text = format!(
            "[cluster]\nname = \"orders\"\nreplication = \"sync\"\n{extra}\n\
             [coordinator]\nurl = \"embedded\"\nstate = \"{}/state.sqlite\"\n\
             [proxy]\nlisten = \"127.0.0.1:{}\"\nread_listen = \"127.0.0.1:{}\"\n\
             [api]\nlisten = \"127.0.0.1:{}\"\ntoken = \"test-token-0123456789\"\n",
            root.display(),
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        for (i, port) in ports.iter().enumerate() {
            text.push_str(&format!(
                "[[cluster.member]]\nname = \"m{}\"\nhost = \"127.0.0.1\"\nport = {port}\ndata_dir = \"{}/pg/m{}\"\n",
                i + 1,
                root.display(),
                i + 1
            ));
        }
        Estate {
            _dir: dir,
            root,
            ports,
            config_text: text,
        }
    }

    fn config(&self) -> lifeboat_config::Config {
        lifeboat_config::parse("lifeboat.toml", &self.config_text, &self.root, &|_| None)
            .unwrap_or_else(|p| panic!("{p}"))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("pg/m{i}"))
    }

    fn dsn(&self, i: usize) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.ports[i - 1]
        )
    }
}

impl Drop for Estate {
    fn drop(&mut self) {
        for i in 1..=self.ports.len() {
            let d = self.data_dir(i);
            if let Some(pid) = postmaster_pid(&d) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

async fn wait_status(d: &Daemon, what: &str, secs: u64, f: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rx = d.watch_status();
    loop {
        let s = rx.borrow_and_update().clone();
        if f(&s) {
            return s;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}: {s:#?}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn healthy_with(s: &Status, primary: &str, standby: &str) -> bool {
    s.phase == "healthy"
        && s.primary.as_deref() == Some(primary)
        && s.proxy.routed_to.is_some()
        && s.members
            .iter()
            .any(|m| m.name == standby && m.role == "standby" && m.streaming && !m.needs_rejoin)
        && s.sync_set.iter().any(|n| n == standby)
        && s.failover_target.as_deref() == Some(standby)
}

/// The writer: one insert per ~10 ms through the proxy, reconnecting after errors; logs
/// each acknowledged id with its time.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    errors: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(proxy: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, a, e) = (stop.clone(), acked.clone(), errors.clone());
        let dsn = format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=2",
            proxy.ip(),
            proxy.port()
        );
        let thread = std::thread::spawn(move || {
            let mut id = 0i64;
            let mut client: Option<postgres::Client> = None;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = postgres::Client::connect(&dsn, postgres::NoTls).ok();
                    if client.is_none() {
                        e.lock().unwrap().push(Instant::now());
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
                id += 1;
                let r = client
                    .as_mut()
                    .map(|c| c.execute("insert into orders(id) values ($1)", &[&id]));
                match r {
                    Some(Ok(_)) => a.lock().unwrap().push((id, Instant::now())),
                    _ => {
                        e.lock().unwrap().push(Instant::now());
                        client = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            stop,
            acked,
            errors,
            thread: Some(thread),
        }
    }

    fn acked_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > t)
            .map(|(_, at)| *at)
    }

    fn finish(mut self) -> (Vec<i64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ids = self.acked.lock().unwrap().iter().map(|(i, _)| *i).collect();
        (ids, self.errors.lock().unwrap().len())
    }
}

fn ids_on(dsn: &str) -> Vec<i64> {
    let mut c = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
    c.query("select id from orders order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_primary_under_writes_fails_over_in_seconds_and_loses_nothing() {
    let estate = Estate::new(2, "");
    let config = estate.config();
    let boot = bootstrap(&config, None).await.unwrap();
    println!("bootstrap: {boot:?}");
    assert_eq!(boot.primary, "m1");
    let daemon = Daemon::start(estate.config(), DaemonOptions::default())
        .await
        .unwrap();
    wait_status(&daemon, "a healthy cluster", 30, |s| {
        healthy_with(s, "m1", "m2")
    })
    .await;
    tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(&estate.dsn(1), postgres::NoTls).unwrap();
        c.batch_execute("create table orders(id bigint primary key, at timestamptz default now())")
            .unwrap();
    });
    let writer = Writer::start(daemon.write_addr().unwrap());
    // Let it write for a second, then the disaster.
    let t0 = Instant::now();
    while writer.acked.lock().unwrap().len() < 50 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the writer made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = postmaster_pid(&estate.data_dir(1)).unwrap();
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();

    // Writes come back through the proxy, on m2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        if let Some(t) = writer.acked_after(killed) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged 30 s after the kill: {:#?}",
            daemon.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rto = back.duration_since(killed);
    let s = daemon.status();
    println!(
        "RTO {:.3} s; last failover: {}",
        rto.as_secs_f64(),
        serde_json::to_string_pretty(&s.last_transition).unwrap()
    );
    assert_eq!(s.primary.as_deref(), Some("m2"));
    assert!(rto < Duration::from_secs(10), "RTO {rto:?}");

    // The old primary is rewound and follows m2; the cluster is whole again.
    let s = wait_status(&daemon, "m1 back as a synchronous standby", 90, |s| {
        healthy_with(s, "m2", "m1")
    })
    .await;
    let (acked, errors) = writer.finish();
    println!(
        "{} writes acknowledged, {errors} failed statements or connects; generation {}",
        acked.len(),
        s.coordinator.generation
    );
    // No acknowledged order is missing on the new primary, nor on the rejoined standby.
    let on_m2 = tokio::task::block_in_place(|| ids_on(&estate.dsn(2)));
    let missing: Vec<i64> = acked
        .iter()
        .filter(|i| on_m2.binary_search(i).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged orders missing on m2: {missing:?}"
    );
    tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(&estate.dsn(1), postgres::NoTls).unwrap();
        let r: bool = c
            .query_one("select pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(r, "the old primary must come back read-only");
        assert!(c
            .execute("insert into orders(id) values (-1)", &[])
            .is_err());
    });
    daemon.stop().await;
}
