//! `[health] command` and `host_port`: a member whose own check command fails counts as
//! down even while PostgreSQL answers (the primary is failed over, fenced, and comes back as
//! a standby once its check passes again); the host's TCP port shows in status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{missing_on, wait_status, Estate, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_command_fails_the_primary_over() {
    // The check fails while DATA_DIR.fail exists; the "host" port is PostgreSQL's own.
    let mut estate = Estate::new(
        2,
        "[health]\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {data_dir}.fail\"]\n",
    );
    // One host port for every member: all members share 127.0.0.1 here, so m1's
    // PostgreSQL port stands for a reachable host.
    let port = estate.ports[0];
    estate.config_text = estate
        .config_text
        .replace("[health]\n", &format!("[health]\nhost_port = {port}\n"));
    std::fs::write(estate.config_path(), &estate.config_text).unwrap();
    let daemon = estate.start().await;
    let s = wait_status(&daemon, "checks reported", 10, |s| {
        s.members
            .iter()
            .all(|m| m.check.as_deref() == Some("up") && m.host_reachable == Some(true))
    })
    .await;
    println!(
        "checks: {:?}",
        s.members
            .iter()
            .map(|m| (&m.name, &m.check, m.host_reachable))
            .collect::<Vec<_>>()
    );

    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(30, 20).await;
    let flag = format!("{}.fail", estate.data_dir(1).display());
    let failed = Instant::now();
    std::fs::write(&flag, b"").unwrap();
    let s = wait_status(&daemon, "m2 promoted after m1's check failed", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.phase == "healthy"
    })
    .await;
    println!(
        "failed over {:.3} s after the check began to fail; m1: {:?}",
        failed.elapsed().as_secs_f64(),
        s.members
            .iter()
            .find(|m| m.name == "m1")
            .map(|m| (&m.state, &m.check, &m.last_error))
    );
    let m1 = s.members.iter().find(|m| m.name == "m1").unwrap();
    assert_eq!(m1.check.as_deref(), Some("down"));
    assert!(
        m1.last_error
            .as_deref()
            .unwrap_or("")
            .contains("check command"),
        "{:?}",
        m1.last_error
    );
    writer
        .wait_acked_after(failed, 20, &|| "a write on m2".to_string())
        .await;

    // Its check passes again: it follows m2 as a standby.
    std::fs::remove_file(&flag).unwrap();
    wait_status(&daemon, "m1 back as a standby", 90, |s| {
        common::healthy_with(s, "m2", "m1")
    })
    .await;
    let written = writer.finish();
    let missing = tokio::task::block_in_place(|| missing_on(&estate.dsn(2), &written.ids));
    assert!(
        missing.is_empty(),
        "acknowledged orders missing on m2: {missing:?}"
    );
    assert!(!written.ids.is_empty());
    daemon.stop().await;
}
