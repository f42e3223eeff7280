//! A standby that refuses to start: status shows it down with its error, the alerts name
//! it, the primary keeps serving, and nothing is promoted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{alive, healthy_with, postmaster_pid, signal, wait_status, Estate, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_refuses_to_start_is_reported_and_the_primary_keeps_serving() {
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(50, 20).await;
    let g0 = daemon.status().coordinator.generation;

    // A broken setting, then a stop: it cannot come back as it is.
    let conf = estate.data_dir(2).join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .unwrap()
        .write_all(b"shared_buffers = 'plenty'\n")
        .unwrap();
    let pm = postmaster_pid(&estate.data_dir(2)).unwrap();
    let stopped = Instant::now();
    signal(pm, "INT"); // a fast shutdown
    while alive(pm) {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "m2 did not stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let s = wait_status(&daemon, "m2 reported down with a reason", 20, |s| {
        s.members
            .iter()
            .any(|m| m.name == "m2" && m.state == "down" && m.last_error.is_some())
            && s.alerts.iter().any(|a| a.message.contains("m2"))
    })
    .await;
    let m2 = s.members.iter().find(|m| m.name == "m2").unwrap();
    println!(
        "{:.3} s after the stop: m2 {} ({}), last error {:?}; alerts {:#?}",
        stopped.elapsed().as_secs_f64(),
        m2.role,
        m2.state,
        m2.last_error,
        s.alerts
            .iter()
            .map(|a| (&a.severity, &a.message))
            .collect::<Vec<_>>()
    );
    // Why it does not start must be told: the daemon tries to start it, and says how that went.
    let s = wait_status(&daemon, "an alert with why m2 does not start", 30, |s| {
        s.alerts
            .iter()
            .any(|a| a.message.contains("m2") && a.message.contains("shared_buffers"))
    })
    .await;
    println!(
        "{:.3} s after the stop, alerts: {:#?}",
        stopped.elapsed().as_secs_f64(),
        s.alerts
            .iter()
            .map(|a| (&a.severity, &a.message))
            .collect::<Vec<_>>()
    );
    // It was cloned anew (its old data directory kept): a synchronous standby again.
    let s = wait_status(&daemon, "m2 back as a synchronous standby", 60, |s| {
        healthy_with(s, "m1", "m2")
    })
    .await;
    println!(
        "m2 streaming again {:.3} s after the stop; set aside: {:?}",
        stopped.elapsed().as_secs_f64(),
        std::fs::read_dir(estate.root.join("pg"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    assert_eq!(s.coordinator.generation, g0);
    // The primary keeps serving, and nothing was promoted.
    writer.wait_acked(50, 20).await;
    let s = daemon.status();
    assert_eq!(s.primary.as_deref(), Some("m1"));
    assert_eq!(s.coordinator.generation, g0);
    let w = writer.finish();
    println!(
        "{} writes acknowledged, {} failed statements or connects, longest gap {:.3} s",
        w.ids.len(),
        w.errors,
        w.max_gap.as_secs_f64()
    );
    daemon.stop().await;
}
