//! The daemon against real PostgreSQL 15: a two-member `sync` cluster bootstrapped by
//! Lifeboat, a writer inserting through the proxy every ~10 ms and logging each
//! acknowledged id, then the disaster. What a shop cares about is asserted: how long
//! writes were unavailable (RTO), that no acknowledged order is missing on the new primary,
//! that the old primary never takes another write and comes back as a standby.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{healthy_with, ids_on, postmaster_pid, wait_status, Estate, Writer};
use lifeboat_server::bootstrap::bootstrap;
use lifeboat_server::{Daemon, DaemonOptions};

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
        // By m2: a backend of the killed postmaster may still finish the insert in flight.
        if let Some(t) = writer.acked_by_after(estate.ports[1], killed) {
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
    let w = writer.finish();
    let (acked, errors) = (w.ids, w.errors);
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
