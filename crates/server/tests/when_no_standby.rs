//! `when_no_standby` in `sync` mode, with the only standby frozen (SIGSTOP of all its
//! processes) for 3 s under the writer: with `"continue"` (the default) writes go on,
//! unreplicated, after about the detection threshold; with `"wait"` not one write is
//! acknowledged until the standby takes commits again. Either way nothing acknowledged is
//! lost and the standby is synchronous again afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{healthy_with, missing_on, postmaster_pid, signal, tree, wait_status, Estate, Writer};

/// Freezes m2 for `pause` under the writer; returns the acknowledgements that came while
/// it was frozen (after the first 0.1 s) and the longest write gap.
async fn freeze_the_standby(extra: &str, pause: Duration) -> (usize, Duration) {
    let estate = Estate::new(2, extra);
    let daemon = estate.start().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(30, 20).await;
    let pids = tree(postmaster_pid(&estate.data_dir(2)).unwrap());
    let stopped = Instant::now();
    for p in &pids {
        signal(*p, "STOP");
    }
    tokio::time::sleep(pause).await;
    let resumed = Instant::now();
    for p in &pids {
        signal(*p, "CONT");
    }
    let during = writer
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > stopped + Duration::from_millis(100) && *at < resumed)
        .count();
    writer
        .wait_acked_after(resumed, 20, &|| format!("{:#?}", daemon.status()))
        .await;
    wait_status(&daemon, "m2 synchronous again", 60, |s| {
        healthy_with(s, "m1", "m2")
    })
    .await;
    let written = writer.finish();
    let missing = tokio::task::block_in_place(|| missing_on(&estate.dsn(1), &written.ids));
    assert!(
        missing.is_empty(),
        "acknowledged orders missing: {missing:?}"
    );
    daemon.stop().await;
    (during, written.max_gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_keeps_taking_writes_without_the_standby() {
    let (during, gap) = freeze_the_standby("", Duration::from_secs(3)).await;
    println!(
        "continue: {during} writes acknowledged while the standby was frozen; longest gap {gap:?}"
    );
    assert!(during > 0, "writes must go on without the standby");
    assert!(gap < Duration::from_millis(2500), "gap {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_acknowledges_nothing_without_a_standby() {
    let (during, gap) =
        freeze_the_standby("when_no_standby = \"wait\"", Duration::from_secs(3)).await;
    println!(
        "wait: {during} writes acknowledged while the standby was frozen; longest gap {gap:?}"
    );
    assert_eq!(
        during, 0,
        "no commit may be acknowledged before a standby has it"
    );
    assert!(gap >= Duration::from_millis(2800), "gap {gap:?}");
}
