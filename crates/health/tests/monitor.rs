//! The monitor against real servers, with the default settings (250 ms / 250 ms / 3 / 2):
//! how fast a crashed postmaster is declared down, that a pause shorter than the threshold
//! never is, and that a longer one is and comes back up after `rise` probes.
//!
//! The tests here measure time, so they run one at a time.

mod common;

use std::time::Duration;

use common::{cont_tree, median, pg_target, poll, sigkill, stop_tree};
use lifeboat_health::{Error, HealthEvent, Member, Monitor, ProbeSettings, Target, Verdict};
use lifeboat_testkit::PgServer;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Timing tests must not share the two cores with each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a loaded two-core machine may add to a bound.
const SLACK: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(30);

fn one_member(port: u16) -> Vec<Member> {
    vec![Member {
        name: "db1".into(),
        target: pg_target(port),
    }]
}

/// The next event that satisfies `want`, within `limit`.
async fn next_event(
    events: &mut broadcast::Receiver<HealthEvent>,
    what: &str,
    limit: Duration,
    mut want: impl FnMut(&HealthEvent) -> bool,
) -> HealthEvent {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) if want(&e) => return e,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream broke while waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within {limit:?}"),
        }
    }
}

async fn wait_up(monitor: &Monitor) {
    poll("db1 to be up", WAIT, || async {
        (monitor.health("db1")?.verdict == Verdict::Up).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_is_down_within_fall_intervals_plus_a_timeout() {
    let _serial = SERIAL.lock().await;
    let server = PgServer::start(&[]).unwrap();
    let settings = ProbeSettings::default();
    let monitor = Monitor::start(settings, one_member(server.port())).unwrap();
    let bound = settings.interval * settings.fall + settings.timeout + SLACK;

    let mut detections = Vec::new();
    // The kill lands at different points between two probes.
    for (trial, phase_ms) in [0u64, 110, 220].into_iter().enumerate() {
        if trial > 0 {
            server.start_server().unwrap();
        }
        wait_up(&monitor).await;
        let mut events = monitor.events();
        let ok = next_event(&mut events, "a passing probe", WAIT, |e| e.health.last.ok).await;
        tokio::time::sleep(Duration::from_millis(phase_ms)).await; // shapes the fault
        let pid = server.pid().unwrap();
        let killed = Instant::now();
        let since_probe = killed
            .into_std()
            .saturating_duration_since(ok.health.last.at);
        sigkill(pid);
        let down = next_event(&mut events, "Down", WAIT, |e| {
            e.health.verdict == Verdict::Down
        })
        .await;
        let seen = killed.elapsed();
        let t = down.transition.unwrap();
        assert_eq!((t.from, t.to), (Verdict::Up, Verdict::Down));
        assert_eq!(down.health.consecutive_failures, settings.fall);
        println!(
            "SIGKILL {since_probe:?} after a probe started -> Down in {seen:?} (bound {bound:?}); \
             last error: {}",
            down.health.last.error.as_deref().unwrap_or("")
        );
        assert!(seen <= bound, "Down after {seen:?}, bound {bound:?}");
        detections.push(seen);
        // The next start refuses while the old postmaster's pid exists, even as a zombie.
        poll("the crashed postmaster to be reaped", WAIT, || async {
            let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
            (gone && common::children_of(pid).is_empty()).then_some(())
        })
        .await;
    }
    println!(
        "SIGKILL detection with defaults: median {:?}, max {:?} over {} trials",
        median(&detections),
        detections.iter().max().unwrap(),
        detections.len()
    );

    // Dropping the monitor stops its probers: the event stream ends.
    let mut events = monitor.events();
    drop(monitor);
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(broadcast::error::RecvError::Closed) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the probers did not stop after the drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_shorter_than_the_threshold_never_flips_a_longer_one_does_and_recovers() {
    let _serial = SERIAL.lock().await;
    let server = PgServer::start(&[]).unwrap();
    let settings = ProbeSettings::default();
    let monitor = Monitor::start(settings, one_member(server.port())).unwrap();
    wait_up(&monitor).await;
    let pid = server.pid().unwrap();

    // A SIGSTOP of every process of the server for half the threshold (ADR 0017: ≤ 0.5 s
    // never reaches `fall`), started at several points between two probes.
    let short = Duration::from_millis(500);
    let mut worst = 0;
    for phase_ms in [0u64, 80, 160, 240] {
        let mut events = monitor.events();
        next_event(&mut events, "a passing probe", WAIT, |e| e.health.last.ok).await;
        // Where in the interval the pause starts, and then the fault's duration: sleeps
        // that shape the fault, not synchronisation.
        tokio::time::sleep(Duration::from_millis(phase_ms)).await;
        let stopped = stop_tree(pid);
        tokio::time::sleep(short).await;
        cont_tree(&stopped);
        let resumed = Instant::now().into_std();
        let mut failures = 0;
        // Until `rise` successes in a row that started after the resume.
        let back = next_event(&mut events, "probes passing after the pause", WAIT, |e| {
            assert_ne!(
                e.health.verdict,
                Verdict::Down,
                "a {short:?} pause {phase_ms} ms after a probe flipped the verdict: {e:#?}"
            );
            failures = failures.max(e.health.consecutive_failures);
            e.health.last.at >= resumed && e.health.consecutive_successes >= settings.rise
        })
        .await;
        assert_eq!(back.health.verdict, Verdict::Up);
        println!(
            "a {short:?} SIGSTOP of {} processes, {phase_ms} ms after a probe: \
             {failures} failed probes in a row (fall {})",
            stopped.len(),
            settings.fall
        );
        worst = worst.max(failures);
    }
    assert!(worst < settings.fall);

    // A pause that lasts until the monitor says Down.
    let mut events = monitor.events();
    let stopped = stop_tree(pid);
    let paused = Instant::now();
    let down = next_event(&mut events, "Down during a long pause", WAIT, |e| {
        e.health.verdict == Verdict::Down
    })
    .await;
    let to_down = paused.elapsed();
    let bound = settings.detection_bound() + SLACK;
    println!(
        "SIGSTOP -> Down in {to_down:?} (bound {bound:?}); last error: {}",
        down.health.last.error.as_deref().unwrap_or("")
    );
    assert!(to_down <= bound, "Down after {to_down:?}, bound {bound:?}");
    assert!(down
        .health
        .last
        .error
        .as_deref()
        .is_some_and(|e| e.contains("timed out")));

    cont_tree(&stopped);
    let resumed = Instant::now();
    let up = next_event(&mut events, "Up after SIGCONT", WAIT, |e| {
        e.health.verdict == Verdict::Up
    })
    .await;
    let to_up = resumed.elapsed();
    let t = up.transition.unwrap();
    assert_eq!((t.from, t.to), (Verdict::Down, Verdict::Up));
    assert_eq!(up.health.consecutive_successes, settings.rise);
    let bound = settings.interval * settings.rise + settings.timeout + SLACK;
    println!(
        "SIGCONT -> Up in {to_up:?} after {} probes (bound {bound:?})",
        settings.rise
    );
    assert!(to_up <= bound, "Up after {to_up:?}, bound {bound:?}");
    assert_eq!(up.health.since, up.health.last.at);

    // A clean shutdown closes the probe's connection on the server.
    monitor.shutdown().await;
    poll("the probe's backend to exit", WAIT, || async {
        let n = server
            .sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat-health'")
            .ok()?;
        (n == "0").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_of_one_member_never_overlap_and_a_failing_command_goes_down() {
    // A command slower than the interval: each probe starts after the previous ended.
    let settings = ProbeSettings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        fall: 2,
        rise: 1,
    };
    let slow = Member {
        name: "slow".into(),
        target: Target::Command {
            argv: vec!["sleep".into(), "0.15".into()],
        },
    };
    let failing = Member {
        name: "failing".into(),
        target: Target::Command {
            argv: vec!["false".into()],
        },
    };
    let monitor = Monitor::start(settings, vec![slow, failing]).unwrap();
    assert_eq!(monitor.members().collect::<Vec<_>>(), ["slow", "failing"]);
    let mut events = monitor.events();
    let mut previous: Option<HealthEvent> = None;
    let mut checked = 0;
    while checked < 4 {
        let e = next_event(&mut events, "a probe of slow", WAIT, |e| {
            e.health.member == "slow"
        })
        .await;
        assert!(e.health.last.ok, "{e:#?}");
        if let Some(p) = previous {
            assert!(
                e.health.last.at >= p.health.last.finished(),
                "a probe started before the previous one finished: {p:#?} {e:#?}"
            );
            checked += 1;
        }
        previous = Some(e);
    }
    let failing = poll("failing to be down", WAIT, || async {
        monitor
            .health("failing")
            .filter(|h| h.verdict == Verdict::Down)
    })
    .await;
    assert_eq!(
        failing.last.error.as_deref(),
        Some("false exited with status 1")
    );
    assert_eq!(monitor.snapshot().len(), 2);
    assert!(monitor.health("nobody").is_none() && monitor.subscribe("nobody").is_none());

    // A watch ends when the monitor shuts down.
    let mut watch = monitor.subscribe("slow").unwrap();
    monitor.shutdown().await;
    let ended = tokio::time::timeout(WAIT, async { while watch.changed().await.is_ok() {} }).await;
    assert!(ended.is_ok());
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_starts() {
    let m = |name: &str| Member {
        name: name.into(),
        target: Target::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        },
    };
    let e = Monitor::start(ProbeSettings::default(), vec![m("a"), m("a")]).unwrap_err();
    assert!(matches!(e, Error::DuplicateMember { .. }), "{e}");
    let e = Monitor::start(
        ProbeSettings {
            fall: 0,
            ..ProbeSettings::default()
        },
        vec![m("a")],
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidSettings { .. }), "{e}");
    let empty = Member {
        name: "x".into(),
        target: Target::Command { argv: vec![] },
    };
    let e = Monitor::start(ProbeSettings::default(), vec![empty]).unwrap_err();
    assert!(matches!(e, Error::InvalidTarget { .. }), "{e}");
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let e = Monitor::start(ProbeSettings::default(), vec![]).unwrap_err();
    assert!(matches!(e, Error::NoRuntime), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_shutdown_token_stops_the_probers() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let member = Member {
        name: "closed".into(),
        target: Target::Tcp {
            host: "127.0.0.1".into(),
            port: lifeboat_testkit::free_port().unwrap(),
        },
    };
    let monitor =
        Monitor::start_with_shutdown(ProbeSettings::default(), vec![member], &shutdown).unwrap();
    let mut watch = monitor.subscribe("closed").unwrap();
    let first = poll("a first probe", WAIT, || async { monitor.health("closed") }).await;
    assert!(!first.last.ok && first.verdict == Verdict::Unknown);
    assert!(first
        .last
        .error
        .as_deref()
        .is_some_and(|e| e.contains("refused")));
    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, async { while watch.changed().await.is_ok() {} }).await;
    assert!(
        ended.is_ok(),
        "the prober kept running after the shutdown signal"
    );
    // The monitor still answers with the last state.
    assert_eq!(monitor.snapshot().len(), 1);
}
