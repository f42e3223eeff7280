//! `lifeboat maintenance on` pauses automation: the primary's loss is reported but nothing
//! is promoted; `maintenance off` resumes it and the failover happens, losing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{api, holds_for, missing_on, postmaster_pid, signal, wait_status, Estate, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_holds_a_failover_until_it_is_turned_off() {
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(50, 20).await;
    let g0 = daemon.status().coordinator.generation;

    let (code, body) = api(daemon.api_addr(), "POST", "/maintenance", r#"{"on":true}"#).await;
    println!("maintenance on: {code} {body}");
    assert_eq!(code, 200, "{body}");
    wait_status(&daemon, "maintenance shown", 5, |s| s.maintenance).await;

    let killed = Instant::now();
    signal(postmaster_pid(&estate.data_dir(1)).unwrap(), "KILL");
    let s = wait_status(&daemon, "m1 seen down", 10, |s| {
        s.members
            .iter()
            .any(|m| m.name == "m1" && m.state == "down")
    })
    .await;
    println!(
        "m1 down {:.3} s after the kill; phase {}, maintenance {}, alerts {:?}",
        killed.elapsed().as_secs_f64(),
        s.phase,
        s.maintenance,
        s.alerts.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
    holds_for(
        &daemon,
        Duration::from_secs(3),
        "no promotion in maintenance",
        |s| s.maintenance && s.primary.as_deref() == Some("m1") && s.coordinator.generation == g0,
    )
    .await;
    // Nobody is told that writes are taken.
    let s = daemon.status();
    assert_eq!(s.phase, "awaiting_approval", "{s:#?}");
    assert!(
        s.reason.as_deref().unwrap_or("").contains("maintenance"),
        "{s:#?}"
    );
    let (code, body) = api(daemon.api_addr(), "GET", "/health", "").await;
    assert_eq!(code, 503, "/health while the primary is down: {body}");
    println!(
        "in maintenance with m1 down: phase {}, reason {:?}, /health {code}",
        s.phase, s.reason
    );
    let s = daemon.status();
    assert!(
        s.members
            .iter()
            .any(|m| m.name == "m2" && m.role == "standby"),
        "{s:#?}"
    );

    let off = Instant::now();
    let (code, body) = api(daemon.api_addr(), "POST", "/maintenance", r#"{"on":false}"#).await;
    println!("maintenance off: {code} {body}");
    assert_eq!(code, 200, "{body}");
    let s = wait_status(&daemon, "m2 promoted", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    assert!(!s.maintenance);
    assert_eq!(s.coordinator.generation, g0 + 1);
    let back = writer
        .wait_acked_after(off, 20, &|| format!("{:#?}", daemon.status()))
        .await;
    println!(
        "writes back {:.3} s after maintenance off",
        back.duration_since(off).as_secs_f64()
    );
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
