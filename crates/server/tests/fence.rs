//! Issue 9 item 7: a fence that cannot be confirmed is never followed by a promotion.
//! The old primary's data directory is made immutable (`chattr +i`: even root cannot
//! create `standby.signal` in it), then the primary is killed. A restart of it (systemd)
//! would come up as a primary, so the daemon must not promote the standby on its own: it
//! waits for approval with a critical alert naming why, and an approval promotes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{api, holds_for, postmaster_pid, signal, wait_status, Estate};

/// `chattr +i` on a directory while it lives; `chattr -i` on drop (also on a failed
/// assertion), so the temp dir can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Self {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(
            st.success(),
            "chattr +i {} failed: the test needs a filesystem with the immutable flag (ext4, xfs)",
            dir.display()
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

fn in_recovery(dsn: &str) -> bool {
    tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
        c.query_one("select pg_is_in_recovery()", &[])
            .unwrap()
            .get::<_, bool>(0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_7_an_unconfirmed_fence_waits_for_approval_instead_of_promoting() {
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let g0 = daemon.status().coordinator.generation;
    let m1 = estate.data_dir(1);
    let immutable = Immutable::new(&m1);
    // Probe: root cannot create a file in it now.
    assert!(std::fs::File::create(m1.join("probe")).is_err());

    let killed = Instant::now();
    signal(postmaster_pid(&m1).unwrap(), "KILL");
    let s = wait_status(&daemon, "awaiting approval", 20, |s| {
        s.phase == "awaiting_approval" || s.primary.as_deref() == Some("m2")
    })
    .await;
    println!(
        "{:.3} s after the kill: phase {}, reason {:?}",
        killed.elapsed().as_secs_f64(),
        s.phase,
        s.reason
    );
    assert_eq!(
        s.phase, "awaiting_approval",
        "promoted after a fence that could not write standby.signal: {s:#?}"
    );
    let reason = s.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("m1")
            && reason.contains("standby.signal")
            && reason.contains("failover approve"),
        "the reason must name the member, the cause and the way on: {reason}"
    );
    assert!(
        s.alerts
            .iter()
            .any(|a| a.severity == "critical" && a.message.contains("standby.signal")),
        "{:#?}",
        s.alerts
    );
    // Nothing is promoted while nobody approves.
    holds_for(
        &daemon,
        Duration::from_secs(3),
        "no promotion without approval",
        |s| s.phase == "awaiting_approval" && s.primary.as_deref() != Some("m2"),
    )
    .await;
    assert!(
        in_recovery(&estate.dsn(2)),
        "m2 was promoted without approval"
    );

    // The operator has made sure m1 cannot come back as a primary, and approves.
    let approved = Instant::now();
    let (code, body) = api(daemon.api_addr(), "POST", "/failover/approve", "{}").await;
    assert_eq!(code, 200, "{body}");
    let s = wait_status(&daemon, "m2 promoted", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    println!(
        "promoted {:.3} s after the approval; last transition {}",
        approved.elapsed().as_secs_f64(),
        serde_json::to_string(&s.last_transition).unwrap()
    );
    assert!(!in_recovery(&estate.dsn(2)));
    assert!(s.coordinator.generation > g0);
    assert_eq!(s.last_transition.as_ref().unwrap()["approved"], true);
    drop(immutable);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_7_a_killed_primary_with_a_writable_data_dir_is_fenced_at_once() {
    // The fast path stays fast: standby.signal written, postmaster gone, port closed.
    let estate = Estate::new(2, "");
    let daemon = estate.start().await;
    let killed = Instant::now();
    signal(postmaster_pid(&estate.data_dir(1)).unwrap(), "KILL");
    let s = wait_status(&daemon, "m2 promoted", 20, |s| {
        s.primary.as_deref() == Some("m2") && s.proxy.routed_to.is_some()
    })
    .await;
    println!(
        "promoted {:.3} s after the kill; {}",
        killed.elapsed().as_secs_f64(),
        serde_json::to_string(&s.last_transition).unwrap()
    );
    assert!(estate.data_dir(1).join("standby.signal").exists());
    assert_eq!(s.last_transition.as_ref().unwrap()["approved"], false);
    daemon.stop().await;
}
