//! `failover = "manual"`: the primary's loss is detected and reported, nothing is promoted
//! until an operator approves (`POST /failover/approve`, what `lifeboat failover approve`
//! sends), then the standby is promoted and no acknowledged write is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{api, holds_for, missing_on, postmaster_pid, signal, wait_status, Estate, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_waits_for_approval_then_fails_over_without_loss() {
    let estate = Estate::new(2, "failover = \"manual\"");
    let daemon = estate.start().await;
    assert_eq!(daemon.status().failover, "manual");
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(50, 20).await;
    let g0 = daemon.status().coordinator.generation;

    let killed = Instant::now();
    signal(postmaster_pid(&estate.data_dir(1)).unwrap(), "KILL");
    let s = wait_status(&daemon, "awaiting approval", 10, |s| {
        s.phase == "awaiting_approval"
    })
    .await;
    println!(
        "awaiting approval {:.3} s after the kill: {:?}; last alert {:?}",
        killed.elapsed().as_secs_f64(),
        s.reason,
        s.alerts.last().map(|a| &a.message)
    );
    assert!(
        s.reason.as_deref().unwrap_or("").contains("approve"),
        "the reason must say how to go on: {:?}",
        s.reason
    );
    assert!(s
        .alerts
        .iter()
        .any(|a| a.severity == "critical" && a.message.contains("m1")));
    // No promotion while nobody approves.
    holds_for(
        &daemon,
        Duration::from_secs(3),
        "no promotion without approval",
        |s| {
            s.phase == "awaiting_approval"
                && s.primary.as_deref() == Some("m1")
                && s.coordinator.generation == g0
                && s.members
                    .iter()
                    .any(|m| m.name == "m2" && m.role == "standby")
        },
    )
    .await;
    let acked_waiting = writer.acked_after(killed + Duration::from_millis(100));
    assert!(
        acked_waiting.is_none(),
        "a write was acknowledged while no primary was approved"
    );

    let approved = Instant::now();
    let (code, body) = api(daemon.api_addr(), "POST", "/failover/approve", "{}").await;
    println!("approve: {code} {body}");
    assert_eq!(code, 200, "{body}");
    let s = wait_status(&daemon, "m2 promoted", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    assert_eq!(s.coordinator.generation, g0 + 1);
    let back = writer
        .wait_acked_after(approved, 20, &|| format!("{:#?}", daemon.status()))
        .await;
    println!(
        "writes back {:.3} s after the approval; last transition {}",
        back.duration_since(approved).as_secs_f64(),
        serde_json::to_string(&s.last_transition).unwrap()
    );
    assert_eq!(s.last_transition.as_ref().unwrap()["approved"], true);
    writer.wait_acked(20, 10).await;
    let w = writer.finish();
    println!(
        "{} writes acknowledged, {} failed statements or connects",
        w.ids.len(),
        w.errors
    );
    let missing = missing_on(&estate.dsn(2), &w.ids);
    assert!(
        missing.is_empty(),
        "acknowledged orders missing on m2: {missing:?}"
    );
    daemon.stop().await;
}
