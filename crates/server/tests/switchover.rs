//! A planned switchover under a 10 ms insert loop through the proxy: how long writes stop
//! (the longest interval between two consecutive acknowledged writes), how many statements
//! fail, that no acknowledged write is lost and that the old primary follows as a standby.
//! The issue's target is a write gap of at most 0.5 s (Patroni here: 1.3 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{api, assert_read_only, healthy_with, missing_on, wait_status, Estate, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_writes_loses_nothing_and_stops_writes_briefly() {
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(100, 20).await;
    let g0 = daemon.status().coordinator.generation;
    let before = writer.acked_count();

    let asked = Instant::now();
    let (code, body) = api(daemon.api_addr(), "POST", "/switchover", r#"{"to":"m2"}"#).await;
    let answered = asked.elapsed();
    println!(
        "switchover: {code} {body} (answered in {:.3} s)",
        answered.as_secs_f64()
    );
    assert_eq!(code, 200, "{body}");
    let s = wait_status(&daemon, "m2 promoted", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    assert_eq!(s.coordinator.generation, g0 + 1);
    let back = writer
        .wait_acked_after(asked, 20, &|| format!("{:#?}", daemon.status()))
        .await;
    // The old primary follows the new one.
    let s = wait_status(&daemon, "m1 back as a synchronous standby", 60, |s| {
        healthy_with(s, "m2", "m1")
    })
    .await;
    let followed = asked.elapsed();
    writer.wait_acked(50, 10).await;
    let w = writer.finish();
    let t = s.last_transition.clone().unwrap_or_default();
    let first = t["steps"][0]["at_seconds"].as_f64().unwrap_or(0.0);
    for st in t["steps"].as_array().cloned().unwrap_or_default() {
        println!(
            "  +{:>5.0} ms  {}",
            (st["at_seconds"].as_f64().unwrap_or(0.0) - first) * 1000.0,
            st["what"].as_str().unwrap_or("")
        );
    }
    println!(
        "SWITCHOVER write gap {:.3} s (longest interval between acknowledged writes), {} failed statements or connects; first write after the request {:.3} s; m1 streaming from m2 after {:.3} s; {} writes acknowledged ({} before)",
        w.max_gap.as_secs_f64(),
        w.errors,
        back.duration_since(asked).as_secs_f64(),
        followed.as_secs_f64(),
        w.ids.len(),
        before
    );
    let missing = missing_on(&estate.dsn(2), &w.ids);
    assert!(
        missing.is_empty(),
        "acknowledged orders missing on m2: {missing:?}"
    );
    assert_read_only(&estate.dsn(1), "the old primary m1");
    // The target is 0.5 s (measured here 0.12–0.36 s); the bound leaves room for a loaded
    // machine and still catches a switchover that waits on a timeout.
    assert!(
        w.max_gap < Duration::from_millis(1500),
        "write gap {:?}",
        w.max_gap
    );
    daemon.stop().await;
}
