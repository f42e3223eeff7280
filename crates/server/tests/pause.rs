//! A paused primary (SIGSTOP of the postmaster and every child, as a hung VM or a long GC
//! pause would look): shorter than the detection threshold it causes no failover; longer,
//! it is failed over, and once resumed the old primary never takes a single write and
//! rejoins as a standby. Threshold with the defaults: fall 3 × interval 250 ms + timeout
//! 250 ms = 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_read_only, healthy_with, holds_for, missing_on, postmaster_pid, signal, tree, try_write,
    wait_status, Estate, Writer,
};

const THRESHOLD: Duration = Duration::from_millis(3 * 250 + 250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_below_the_threshold_is_ignored_and_a_longer_one_fails_over_safely() {
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(50, 20).await;
    let g0 = daemon.status().coordinator.generation;

    // Half the threshold: nothing happens.
    let pm = postmaster_pid(&estate.data_dir(1)).unwrap();
    let stopped = tree(pm);
    for p in &stopped {
        signal(*p, "STOP");
    }
    let t = Instant::now();
    tokio::time::sleep(THRESHOLD / 2).await;
    for p in &stopped {
        signal(*p, "CONT");
    }
    println!(
        "paused {} processes of m1 for {:.3} s",
        stopped.len(),
        t.elapsed().as_secs_f64()
    );
    // For two thresholds after the resume: the same primary, the same generation.
    holds_for(
        &daemon,
        THRESHOLD * 2,
        "no failover after a short pause",
        |s| s.primary.as_deref() == Some("m1") && s.coordinator.generation == g0,
    )
    .await;
    writer.wait_acked(20, 10).await;
    let s = daemon.status();
    assert_eq!(s.phase, "healthy");
    println!(
        "after the short pause: phase {}, generation {}, alerts {:?}",
        s.phase,
        s.coordinator.generation,
        s.alerts.iter().map(|a| &a.message).collect::<Vec<_>>()
    );

    // Twice the threshold: failover.
    let pm = postmaster_pid(&estate.data_dir(1)).unwrap();
    let stopped = tree(pm);
    for p in &stopped {
        signal(*p, "STOP");
    }
    let paused = Instant::now();
    let s = wait_status(&daemon, "m2 promoted while m1 is paused", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    let promoted = paused.elapsed();
    assert!(s.coordinator.generation > g0);
    let back = writer
        .wait_acked_after(paused, 20, &|| format!("{:#?}", daemon.status()))
        .await;
    println!(
        "paused at 0; m2 promoted after {:.3} s, writes back after {:.3} s; generation {}",
        promoted.as_secs_f64(),
        back.duration_since(paused).as_secs_f64(),
        s.coordinator.generation
    );
    // The pause lasts twice the threshold at least (it is the point).
    let left = (THRESHOLD * 2).saturating_sub(paused.elapsed());
    tokio::time::sleep(left).await;
    let alive = stopped.iter().filter(|p| common::alive(**p)).count();
    for p in &stopped {
        signal(*p, "CONT");
    }
    let resumed = Instant::now();
    println!(
        "resumed after {:.3} s; {alive} of {} paused processes still alive (the fence kills them)",
        resumed.duration_since(paused).as_secs_f64(),
        stopped.len()
    );

    // From the resume until it is a streaming standby: not one write taken on m1's port.
    let dsn1 = estate.dsn(1);
    let mut probes = 0u32;
    let mut refused = Vec::new();
    let deadline = resumed + Duration::from_secs(60);
    loop {
        let r = tokio::task::block_in_place(|| try_write(&dsn1, -1_000_000 - i64::from(probes)));
        probes += 1;
        match r {
            Ok(()) => panic!(
                "the old primary m1 took a write {:.3} s after its resume",
                resumed.elapsed().as_secs_f64()
            ),
            Err(e) => {
                if refused.last() != Some(&e) {
                    refused.push(e);
                }
            }
        }
        if healthy_with(&daemon.status(), "m2", "m1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m1 did not rejoin: {:#?}",
            daemon.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "m1 rejoined as a synchronous standby {:.3} s after its resume; {probes} direct writes to it all failed: {refused:?}",
        resumed.elapsed().as_secs_f64()
    );
    assert_read_only(&dsn1, "the rejoined m1");
    writer.wait_acked(20, 10).await;
    let w = writer.finish();
    println!(
        "{} writes acknowledged, {} failed statements or connects, longest gap {:.3} s",
        w.ids.len(),
        w.errors,
        w.max_gap.as_secs_f64()
    );
    let missing = missing_on(&estate.dsn(2), &w.ids);
    assert!(
        missing.is_empty(),
        "acknowledged orders missing on m2: {missing:?}"
    );
    daemon.stop().await;
}
