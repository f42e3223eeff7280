//! Single probes against real servers: what a PostgreSQL probe reports on a primary and a
//! standby, that every kind of probe fails within its timeout, and that secrets stay out of
//! errors.

mod common;

use std::time::{Duration, SystemTime};

use common::{is_gone, median, pg_target, probe_until, stub_port};
use lifeboat_health::{Prober, Target};
use lifeboat_testkit::{free_port, HangingServer, PgServer};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_millis(250);
/// What a loaded two-core CI machine may add to a timeout.
const SLACK: Duration = Duration::from_millis(250);
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_reports_its_role_and_an_advancing_lsn_over_one_connection() {
    let server = PgServer::start(&[]).unwrap();
    let mut prober = Prober::new(pg_target(server.port()), TIMEOUT).unwrap();

    let first = prober.probe().await;
    assert!(first.ok, "{first:#?}");
    assert_eq!(first.error, None);
    let pg = first.pg.clone().unwrap();
    assert!(!pg.in_recovery);
    assert_eq!(pg.timeline, Some(1));
    assert_eq!((pg.receive_lsn, pg.replay_lsn), (None, None));
    assert!(!pg.wal_receiver_streaming);
    assert_eq!(pg.sender, None);
    assert!(pg.replication.is_empty());
    assert_eq!(pg.synchronous_standby_names, "");
    assert_eq!(pg.generation, None);
    let before = pg.current_lsn.unwrap();

    server
        .sql("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 10000) g")
        .unwrap();
    let after = prober.probe().await;
    let lsn = after.pg.as_ref().and_then(|p| p.current_lsn).unwrap();
    assert!(lsn > before, "LSN {lsn:#x} did not pass {before:#x}");

    // The cost of a probe on a kept connection, and that it is kept: one backend.
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let o = prober.probe().await;
        assert!(o.ok, "{o:#?}");
        latencies.push(o.latency);
    }
    let backends = server
        .sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat-health'")
        .unwrap();
    assert_eq!(backends, "1", "the probe must reuse one connection");
    let fresh = Prober::new(pg_target(server.port()), Duration::from_secs(5))
        .unwrap()
        .probe()
        .await;
    println!(
        "primary probe: first (connect + query) {:?}, kept connection median {:?} max {:?}, \
         fresh prober {:?}",
        first.latency,
        median(&latencies),
        latencies.iter().max().unwrap(),
        fresh.latency
    );

    // The fencing generation the failover controller writes. (PostgreSQL 15's ALTER SYSTEM
    // refuses a custom setting the session has not seen, so write the file here.) A
    // running session takes the reload at its next command, so poll.
    let conf = server.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("lifeboat.generation = '7'\n");
    std::fs::write(&conf, text).unwrap();
    server.sql("SELECT pg_reload_conf()").unwrap();
    probe_until(&mut prober, "generation 7", WAIT, |o| {
        o.pg.as_ref().and_then(|p| p.generation) == Some(7)
    })
    .await;

    // A restart breaks the kept connection: probes fail while it is down, and the next
    // probe after it is back connects afresh.
    server.stop().unwrap();
    let down = prober.probe().await;
    assert!(!down.ok);
    println!("stopped primary: {:?}", down.error);
    server.start_server().unwrap();
    probe_until(&mut prober, "the restarted primary", WAIT, |o| o.ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reports_receive_and_replay_lsns_its_sender_and_the_primary_lists_it() {
    let primary = PgServer::start(&[]).unwrap();
    let standby = PgServer::standby_of(&primary, &[]).unwrap();
    let mut on_primary = Prober::new(pg_target(primary.port()), TIMEOUT).unwrap();
    let mut on_standby = Prober::new(pg_target(standby.port()), TIMEOUT).unwrap();

    let o = probe_until(&mut on_standby, "a streaming standby", WAIT, |o| {
        o.pg.as_ref().is_some_and(|p| p.wal_receiver_streaming)
    })
    .await;
    let s = o.pg.unwrap();
    assert!(s.in_recovery);
    assert_eq!(s.current_lsn, None, "a standby has no current LSN");
    assert!(s.receive_lsn.is_some() && s.replay_lsn.is_some(), "{s:#?}");
    assert_eq!(s.timeline, Some(1));
    let sender = s.sender.clone().unwrap();
    assert!(
        sender.ends_with(&format!(":{}", primary.port())),
        "sender {sender} is not the primary"
    );

    let o = probe_until(
        &mut on_primary,
        "the standby in pg_stat_replication",
        WAIT,
        |o| {
            o.pg.as_ref().is_some_and(|p| {
                p.replication
                    .iter()
                    .any(|r| r.state == "streaming" && r.flush_lsn.is_some())
            })
        },
    )
    .await;
    let p = o.pg.unwrap();
    let row = p
        .replication
        .iter()
        .find(|r| r.state == "streaming")
        .unwrap();
    assert_eq!(row.application_name, "walreceiver");
    assert_eq!(row.sync_state, "async");
    assert!(
        row.flush_lsn.is_some() && row.replay_lsn.is_some(),
        "{row:#?}"
    );

    // A write on the primary reaches the standby: received and replayed, with a replay
    // timestamp from the commit.
    primary
        .sql("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g")
        .unwrap();
    let written = on_primary.probe().await.pg.unwrap().current_lsn.unwrap();
    let o = probe_until(&mut on_standby, "the write replayed", WAIT, |o| {
        o.pg.as_ref()
            .is_some_and(|p| p.replay_lsn.unwrap_or(0) >= written)
    })
    .await;
    let s = o.pg.unwrap();
    assert!(s.receive_lsn.unwrap() >= written);
    let replayed_at = s.replay_timestamp.unwrap();
    let age = SystemTime::now()
        .duration_since(replayed_at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "replay timestamp {age:?} old"
    );

    // Synchronous replication as the failover controller checks it.
    primary
        .sql("ALTER SYSTEM SET synchronous_standby_names = 'walreceiver'")
        .unwrap();
    primary.sql("SELECT pg_reload_conf()").unwrap();
    probe_until(&mut on_primary, "a sync standby", WAIT, |o| {
        o.pg.as_ref().is_some_and(|p| {
            p.synchronous_standby_names == "walreceiver"
                && p.replication.iter().any(|r| r.sync_state == "sync")
        })
    })
    .await;

    // Promotion: the new primary reports timeline 2 at once (pg_control_checkpoint() may
    // still say 1 until the end-of-recovery checkpoint completes).
    standby.promote().unwrap();
    let o = on_standby.probe().await;
    let s =
        o.pg.unwrap_or_else(|| panic!("promoted standby: {:?}", o.error));
    assert!(!s.in_recovery);
    assert_eq!(s.timeline, Some(2));
    assert!(s.current_lsn.is_some());
    let checkpoint_tli = standby
        .sql("SELECT timeline_id FROM pg_control_checkpoint()")
        .unwrap();
    println!(
        "right after promotion: probe timeline 2, pg_control_checkpoint() says {checkpoint_tli}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_appears_and_an_unprivileged_user_can_probe() {
    let server = PgServer::start(&[]).unwrap();
    // Password authentication for one role, ahead of initdb's trust lines.
    let hba = server.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all probe 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    server
        .sql("CREATE ROLE probe LOGIN PASSWORD 'correct-horse-battery-9'")
        .unwrap();
    server.sql("SELECT pg_reload_conf()").unwrap();

    let target = |password: &str| Target::Postgres {
        host: "127.0.0.1".into(),
        port: server.port(),
        user: "probe".into(),
        dbname: "postgres".into(),
        password: Some(password.into()),
    };
    let wrong = target("wrong-staple-42");
    let mut prober = Prober::new(wrong.clone(), Duration::from_secs(2)).unwrap();
    let o = probe_until(&mut prober, "authentication to be enforced", WAIT, |o| {
        !o.ok
    })
    .await;
    let error = o.error.clone().unwrap();
    println!("wrong password: {error}");
    assert!(error.contains("password authentication failed"), "{error}");
    for text in [
        error,
        format!("{o:?}"),
        format!("{wrong:?}"),
        wrong.to_string(),
    ] {
        assert!(!text.contains("wrong-staple-42"), "{text}");
    }

    let mut prober = Prober::new(target("correct-horse-battery-9"), TIMEOUT * 4).unwrap();
    let o = prober.probe().await;
    assert!(o.ok, "{o:#?}");
    let pg = o.pg.unwrap();
    assert!(!pg.in_recovery && pg.current_lsn.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_probe_of_a_hung_server_fails_within_the_timeout() {
    let hung = HangingServer::start().unwrap();
    let port = stub_port(&hung.endpoint());
    let mut prober = Prober::new(pg_target(port), TIMEOUT).unwrap();
    for _ in 0..3 {
        let o = prober.probe().await;
        assert!(!o.ok);
        assert!(o.latency <= TIMEOUT + SLACK, "took {:?}", o.latency);
        let e = o.error.unwrap();
        assert!(e.contains("timed out after 250 ms"), "{e}");
        println!("hung server: {e} after {:?}", o.latency);
    }
    assert!(hung.accepted() >= 3, "each probe connects afresh");
    // TCP alone cannot tell: the port accepts.
    let mut tcp = Prober::new(
        Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        TIMEOUT,
    )
    .unwrap();
    assert!(tcp.probe().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_probe_of_a_closed_port_fails_at_once() {
    let port = free_port().unwrap();
    let mut prober = Prober::new(
        Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        TIMEOUT,
    )
    .unwrap();
    let o = prober.probe().await;
    assert!(!o.ok);
    assert!(
        o.latency < TIMEOUT,
        "a refused connection fails at once: {:?}",
        o.latency
    );
    let e = o.error.unwrap();
    assert!(e.contains("refused"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_probe_passes_on_exit_0_and_is_killed_with_its_children_at_the_timeout() {
    let cmd = |argv: &[&str]| {
        Prober::new(
            Target::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
            },
            TIMEOUT,
        )
        .unwrap()
    };
    assert!(cmd(&["true"]).probe().await.ok);
    let o = cmd(&["false"]).probe().await;
    assert_eq!(o.error.as_deref(), Some("false exited with status 1"));
    let o = cmd(&["/nonexistent/check"]).probe().await;
    assert!(!o.ok && o.error.unwrap().starts_with("start /nonexistent/check"));

    // A check that hangs, with a grandchild: both are gone after the timeout.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let o = cmd(&["sh", "-c", &script]).probe().await;
    let took = started.elapsed();
    assert!(!o.ok);
    assert_eq!(
        o.error.as_deref(),
        Some("timed out after 250 ms while running the command")
    );
    assert!(took <= TIMEOUT + SLACK, "took {took:?}");
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::poll("the grandchild to die", Duration::from_secs(5), || async {
        is_gone(grandchild).then_some(())
    })
    .await;
    println!("command probe timed out after {took:?}; its grandchild {grandchild} was killed");
}
