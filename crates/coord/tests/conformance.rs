//! One suite, both backends: every case runs against the embedded coordinator (a real
//! SQLite file in a temp dir) and against a real single-member etcd.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

use std::time::Duration;

use lifeboat_coord::{Coordinator, EmbeddedOptions, Error, EtcdOptions};
use lifeboat_testkit::EtcdServer;
use serde_json::json;
use tokio::time::Instant;

const CLUSTER: &str = "shop";

/// A backend's state, and a way to open more coordinators on it (another process, or the
/// same one after a restart).
enum Fixture {
    Embedded { dir: tempfile::TempDir },
    Etcd { server: EtcdServer },
}

impl Fixture {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Fixture::Embedded { dir }
    }

    async fn etcd() -> Self {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .unwrap()
            .unwrap();
        Fixture::Etcd { server }
    }

    fn is_etcd(&self) -> bool {
        matches!(self, Fixture::Etcd { .. })
    }

    /// A new coordinator on this fixture's state, reports attached to a 1 s lease (etcd).
    async fn open(&self) -> Coordinator {
        match self {
            Fixture::Embedded { dir } => Coordinator::open_embedded(EmbeddedOptions::new(
                dir.path().join("state.db"),
                CLUSTER,
            ))
            .await
            .unwrap(),
            Fixture::Etcd { server } => {
                let mut o = EtcdOptions::new(server.endpoints().split(','), CLUSTER);
                o.report_ttl = Duration::from_secs(1);
                Coordinator::connect_etcd(o).await.unwrap()
            }
        }
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, failing after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn promote_is_compare_and_swap(f: Fixture) {
    let c = f.open().await;
    let s = c.state().await.unwrap();
    assert_eq!((s.generation, s.primary.as_deref()), (0, None));
    assert_eq!(c.promote(0, "db1").await.unwrap(), 1);
    match c.promote(0, "db2").await {
        Err(Error::Stale { expected, found }) => assert_eq!((expected, found), (0, 1)),
        other => panic!("a stale promote must be refused, got {other:?}"),
    }
    let s = c.state().await.unwrap();
    assert_eq!((s.generation, s.primary.as_deref()), (1, Some("db1")));
    assert_eq!(c.promote(1, "db2").await.unwrap(), 2);
    match c.promote(5, "db3").await {
        Err(e @ Error::Stale { .. }) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("generation 5 is stale"), "{e}");
            assert!(e.to_string().contains("generation 2"), "{e}");
        }
        other => panic!("a promote from the future must be refused, got {other:?}"),
    }
    let s = c.state().await.unwrap();
    assert_eq!((s.generation, s.primary.as_deref()), (2, Some("db2")));
}

async fn concurrent_promotes_one_wins(f: Fixture) {
    let c = f.open().await;
    assert_eq!(c.promote(0, "db0").await.unwrap(), 1);
    let mut coords = Vec::new();
    for _ in 0..8 {
        coords.push(f.open().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = coords
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                (i, c.promote(1, &format!("db{i}")).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(g) => {
                assert_eq!(g, 2);
                winners.push(i);
            }
            Err(Error::Stale { expected, found }) => assert_eq!((expected, found), (1, 2)),
            Err(e) => panic!("promote {i}: {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of 8 promotes wins: {winners:?}"
    );
    let s = c.state().await.unwrap();
    assert_eq!(s.generation, 2);
    assert_eq!(s.primary, Some(format!("db{}", winners[0])));
}

async fn generation_survives_reopen(f: Fixture) {
    {
        let c = f.open().await;
        c.promote(0, "db1").await.unwrap();
        c.promote(1, "db2").await.unwrap();
        c.set_maintenance(true).await.unwrap();
    }
    let c = f.open().await;
    let s = c.state().await.unwrap();
    assert_eq!(s.generation, 2);
    assert_eq!(s.primary.as_deref(), Some("db2"));
    assert!(s.maintenance);
    assert!(matches!(
        c.promote(1, "db3").await,
        Err(Error::Stale { found: 2, .. })
    ));
}

async fn leader_lease_is_exclusive(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let ttl = Duration::from_secs(5);
    let lease = a.acquire_leader("db1", ttl).await.unwrap().expect("free");
    assert_eq!(lease.member(), "db1");
    assert!(b.acquire_leader("db2", ttl).await.unwrap().is_none());
    assert!(a.acquire_leader("db1", ttl).await.unwrap().is_none());
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("db1"));
    assert_eq!(b.state().await.unwrap().leader.as_deref(), Some("db1"));
    let before = Instant::now();
    let until = a.renew(&lease).await.unwrap();
    assert!(until >= before + ttl && until <= Instant::now() + ttl);
    a.release(lease).await.unwrap();
    assert_eq!(b.leader().await.unwrap(), None);
    let lease2 = b
        .acquire_leader("db2", ttl)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("db2"));
    b.release(lease2).await.unwrap();
}

async fn expired_lease_lets_another_take_it(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let ttl = Duration::from_secs(1);
    let lease = a.acquire_leader("db1", ttl).await.unwrap().expect("free");
    assert!(lease.acquired_until() <= Instant::now() + ttl);
    // The last renewal: its answer is the local deadline the holder self-fences by.
    let valid_until = a.renew(&lease).await.unwrap();
    let start = Instant::now();
    let taken = poll(
        "db2 takes the lapsed lease",
        Duration::from_secs(5),
        || async { b.acquire_leader("db2", ttl).await.unwrap() },
    )
    .await;
    let took = start.elapsed();
    // Safety: nobody else holds it before the holder's own (conservative) deadline.
    let now = Instant::now();
    assert!(now >= valid_until, "taken before the holder's deadline");
    println!(
        "{}: lease of ttl {ttl:?} taken by another {took:?} after its last renewal, {:?} after the holder's local deadline",
        if f.is_etcd() { "etcd" } else { "embedded" },
        now - valid_until
    );
    assert!(took >= ttl - Duration::from_millis(100), "{took:?}");
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("db2"));
    match a.renew(&lease).await {
        Err(Error::LeaseLost { member, .. }) => assert_eq!(member, "db1"),
        other => panic!("renewing a lapsed lease must fail, got {other:?}"),
    }
    b.release(taken).await.unwrap();
    // Releasing a lease that already lapsed is not an error.
    a.release(lease).await.unwrap();
}

async fn promote_as_leader_needs_the_live_lease(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let ttl = Duration::from_secs(1);
    let lease = a.acquire_leader("db1", ttl).await.unwrap().expect("free");
    assert_eq!(a.promote_as_leader(&lease, 0, "db2").await.unwrap(), 1);
    match a.promote_as_leader(&lease, 0, "db3").await {
        Err(Error::Stale { expected, found }) => assert_eq!((expected, found), (0, 1)),
        other => panic!("stale, got {other:?}"),
    }
    // The lease lapses and another member takes it: the old leader's promote is refused
    // although its generation is current.
    let taken = poll(
        "db2 takes the lapsed lease",
        Duration::from_secs(5),
        || async { b.acquire_leader("db2", ttl).await.unwrap() },
    )
    .await;
    match a.promote_as_leader(&lease, 1, "db1").await {
        Err(Error::LeaseLost { member, .. }) => assert_eq!(member, "db1"),
        other => panic!("a deposed leader must not promote, got {other:?}"),
    }
    assert_eq!(b.promote_as_leader(&taken, 1, "db3").await.unwrap(), 2);
    b.release(taken).await.unwrap();
    let s = a.state().await.unwrap();
    assert_eq!((s.generation, s.primary.as_deref()), (2, Some("db3")));
}

async fn reports_of_dead_agents(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    a.publish("db1", &json!({"lsn": "0/1"})).await.unwrap();
    a.publish("db1", &json!({"lsn": "0/2"})).await.unwrap();
    b.publish("db2", &json!({"lsn": "0/3"})).await.unwrap();
    let r = a.reports().await.unwrap();
    let names: Vec<&str> = r.iter().map(|r| r.member.as_str()).collect();
    assert_eq!(names, ["db1", "db2"]);
    assert_eq!(r[0].report, json!({"lsn": "0/2"}));
    assert!(r[0].age < Duration::from_secs(2));
    drop(b); // the agent of db2 stops publishing (as if it died)
    let start = Instant::now();
    if f.is_etcd() {
        poll("db2's report vanishes", Duration::from_secs(5), || async {
            let r = a.reports().await.unwrap();
            (!r.iter().any(|r| r.member == "db2")).then_some(())
        })
        .await;
        println!(
            "etcd: a dead agent's report (report_ttl 1 s) vanished {:?} after its last publish",
            start.elapsed()
        );
    } else {
        // Waiting is the point: the report must age.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = a.reports().await.unwrap();
        let db2 = r.iter().find(|r| r.member == "db2").expect("kept");
        assert!(db2.age >= Duration::from_millis(300), "{:?}", db2.age);
    }
    // An agent that closes takes its report with it (etcd at once; embedded keeps it).
    let c = f.open().await;
    c.publish("db3", &json!({})).await.unwrap();
    c.close().await.unwrap();
    let r = a.reports().await.unwrap();
    assert_eq!(r.iter().any(|r| r.member == "db3"), !f.is_etcd());
    // The live agent's report stays.
    a.publish("db1", &json!({"lsn": "0/4"})).await.unwrap();
    let r = a.reports().await.unwrap();
    assert_eq!(r[0].member, "db1");
    assert_eq!(r[0].report, json!({"lsn": "0/4"}));
}

async fn maintenance_and_approval_round_trip(f: Fixture) {
    let c = f.open().await;
    assert!(!c.state().await.unwrap().maintenance);
    c.set_maintenance(true).await.unwrap();
    assert!(c.state().await.unwrap().maintenance);
    c.set_maintenance(false).await.unwrap();
    assert!(!c.state().await.unwrap().maintenance);

    assert!(matches!(
        c.approve(None).await,
        Err(Error::NothingToApprove { .. })
    ));
    c.promote(0, "db1").await.unwrap();
    c.request_approval(1, Some("db2")).await.unwrap();
    let p = c.state().await.unwrap().pending_approval.expect("pending");
    assert_eq!(
        (p.to.as_deref(), p.generation, p.approved_at),
        (Some("db2"), 1, None)
    );
    let a = c.approve(Some("db3")).await.unwrap();
    assert_eq!(a.to.as_deref(), Some("db3"));
    assert!(a.approved_at.is_some());
    let p = c.state().await.unwrap().pending_approval.expect("approved");
    assert_eq!(p, a);
    c.clear_approval().await.unwrap();
    assert_eq!(c.state().await.unwrap().pending_approval, None);
    // A promotion ends the generation the request belonged to.
    c.request_approval(1, None).await.unwrap();
    let a = c.approve(None).await.unwrap();
    assert_eq!(a.to, None);
    c.promote(1, "db2").await.unwrap();
    assert_eq!(c.state().await.unwrap().pending_approval, None);
}

async fn history_keeps_order(f: Fixture) {
    let c = f.open().await;
    assert!(c.history(10).await.unwrap().is_empty());
    for n in 0..5 {
        c.record(&json!({"step": "promote", "n": n})).await.unwrap();
    }
    let all = c.history(100).await.unwrap();
    let ns: Vec<i64> = all.iter().map(|e| e.event["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [0, 1, 2, 3, 4]);
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    let last = c.history(3).await.unwrap();
    let ns: Vec<i64> = last
        .iter()
        .map(|e| e.event["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [2, 3, 4]);
    // Another coordinator (agent, or the monitor after a restart) sees the same history.
    let d = f.open().await;
    assert_eq!(d.history(100).await.unwrap(), all);
}

async fn changes_wake_the_reader(f: Fixture) {
    let c = f.open().await;
    let mut changes = c.changes().await.unwrap();
    c.set_maintenance(true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a change notification")
        .unwrap();
    c.promote(0, "db1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a change notification")
        .unwrap();
}

async fn names_are_checked(f: Fixture) {
    let c = f.open().await;
    for bad in ["", "a/b", "..", "with space"] {
        match c.promote(0, bad).await {
            Err(e @ Error::InvalidName { .. }) => assert!(e.to_string().contains("letters")),
            other => panic!("{bad:?} must be refused, got {other:?}"),
        }
    }
    assert_eq!(c.state().await.unwrap().generation, 0);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::embedded().await).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::etcd().await).await;
                }
            )*
        }
    };
}

conformance!(
    promote_is_compare_and_swap,
    concurrent_promotes_one_wins,
    generation_survives_reopen,
    leader_lease_is_exclusive,
    expired_lease_lets_another_take_it,
    promote_as_leader_needs_the_live_lease,
    reports_of_dead_agents,
    maintenance_and_approval_round_trip,
    history_keeps_order,
    changes_wake_the_reader,
    names_are_checked,
);
