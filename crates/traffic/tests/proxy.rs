//! The proxy in front of real PostgreSQL 15 servers (lifeboat-testkit): queries through the
//! write port, switches that close old connections, clients held during a failover, the
//! read port's round robin and fallback, and a dead backend that fails fast.
//!
//! Every wait is a poll on a condition with a deadline; measured times are printed
//! (`cargo test -p lifeboat-traffic -- --nocapture`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_testkit::{free_port, PgServer};
use lifeboat_traffic::{Counters, CountersSnapshot, Port, ProxyOptions, Role, Route};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

const DEADLINE: Duration = Duration::from_secs(20);

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A proxy port for `role` on a free port, served on its own task.
async fn proxy(
    role: Role,
    routes: watch::Receiver<Route>,
    options: ProxyOptions,
) -> (SocketAddr, Arc<Counters>, JoinHandle<()>) {
    let port = Port::bind(role, local(0), routes, options)
        .await
        .expect("bind proxy");
    let (addr, counters) = (port.local_addr(), port.counters());
    (addr, counters, tokio::spawn(port.serve()))
}

/// A client through `addr`; the handle ends when the connection closes.
async fn connect(
    addr: SocketAddr,
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), tokio_postgres::Error> {
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=30",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    Ok((client, tokio::spawn(conn)))
}

/// The port of the server a client landed on, and whether it is a standby.
async fn landed(client: &Client) -> (u16, bool) {
    let row = client
        .query_one("select inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .expect("query through the proxy");
    let port: i32 = row.get(0);
    (u16::try_from(port).expect("port"), row.get(1))
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn counters_until(
    counters: &Counters,
    what: &str,
    f: impl Fn(&CountersSnapshot) -> bool,
) -> CountersSnapshot {
    until(what, || {
        let s = counters.snapshot();
        let ok = f(&s);
        async move { ok.then_some(s) }
    })
    .await
}

/// Waits until a client connection ends (the proxy closed it). Its own result does not
/// matter: a close in the middle of the protocol may surface as an error or as the end.
async fn closed(conn: JoinHandle<Result<(), tokio_postgres::Error>>, what: &str) {
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    assert!(matches!(ended, Ok(Ok(_))), "{what}: {ended:?}");
}

/// Client backends on `server` other than the asking one.
async fn client_backends(server: &PgServer) -> i64 {
    let (c, _conn) = connect(local(server.port())).await.expect("direct connect");
    c.query_one(
        "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
        &[],
    )
    .await
    .expect("count backends")
    .get(0)
}

#[test]
fn write_port_follows_the_primary_and_closes_old_connections_at_once() {
    let a = PgServer::start(&[]).expect("server a");
    let b = PgServer::start(&[]).expect("server b");
    runtime().block_on(async {
        let (tx, rx) = watch::channel(Route::with_primary(1, local(a.port())));
        let (addr, counters, serving) = proxy(Role::Write, rx, ProxyOptions::default()).await;

        let mut old = Vec::new();
        for _ in 0..3 {
            let (c, conn) = connect(addr).await.expect("connect through the proxy");
            assert_eq!(landed(&c).await, (a.port(), false));
            c.batch_execute("create temp table t(x int); insert into t values (1)")
                .await
                .expect("write through the proxy");
            old.push((c, conn));
        }
        assert_eq!(client_backends(&a).await, 3);
        assert_eq!(counters.snapshot().connected_to(local(a.port())), 3);

        // The switch: every connection to a closes, on both sides, without client traffic.
        let t0 = Instant::now();
        tx.send_replace(Route::with_primary(2, local(b.port())));
        let mut client_closed = Duration::ZERO;
        for (c, conn) in old {
            closed(conn, "old connection closed by the proxy").await;
            client_closed = client_closed.max(t0.elapsed());
            assert!(c.is_closed());
        }
        until("a's backends to exit", || async {
            (client_backends(&a).await == 0).then_some(())
        })
        .await;
        let server_closed = t0.elapsed();
        counters_until(&counters, "nothing connected to a", |s| {
            s.connected_to(local(a.port())) == 0
        })
        .await;
        eprintln!(
            "measured: switch closed 3 clients in {:.2} ms; a's backends gone after {:.1} ms",
            client_closed.as_secs_f64() * 1e3,
            server_closed.as_secs_f64() * 1e3
        );
        assert!(client_closed < Duration::from_secs(1), "{client_closed:?}");

        // New connections land on b.
        let (c, _conn) = connect(addr).await.expect("connect after the switch");
        assert_eq!(landed(&c).await, (b.port(), false));

        // A new generation on the same address also closes (the node was fenced and back).
        let (_, conn_b) = (c, _conn);
        tx.send_replace(Route::with_primary(3, local(b.port())));
        closed(conn_b, "closed on a generation change").await;

        let s = counters.snapshot();
        assert_eq!(s.closed_on_switch, 4, "{s:?}");
        assert_eq!(s.forwarded.get(&local(a.port())), Some(&3), "{s:?}");
        assert_eq!(s.forwarded.get(&local(b.port())), Some(&1), "{s:?}");
        assert_eq!(s.accepted, 4);
        counters_until(&counters, "no active connections", |s| s.active == 0).await;

        // Dropping the publisher stops the port.
        drop(tx);
        tokio::time::timeout(DEADLINE, serving)
            .await
            .expect("serve returns when the publisher is gone")
            .expect("serve task");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    });
}

#[test]
fn a_client_is_held_while_there_is_no_primary_and_served_when_one_appears() {
    let a = PgServer::start(&[]).expect("server a");
    runtime().block_on(async {
        let (tx, rx) = watch::channel(Route {
            generation: 7,
            primary: None,
            replicas: vec![],
        });
        let (addr, counters, _serving) = proxy(Role::Write, rx, ProxyOptions::default()).await;
        let t0 = Instant::now();
        let client = tokio::spawn(async move {
            let (c, conn) = connect(addr).await.expect("served after the hold");
            let at = landed(&c).await;
            (at, conn, c)
        });
        counters_until(&counters, "the client to be held", |s| s.holding == 1).await;
        let published = Instant::now();
        tx.send_replace(Route::with_primary(8, local(a.port())));
        let ((port, standby), _conn, _c) = tokio::time::timeout(DEADLINE, client)
            .await
            .expect("client served")
            .expect("client task");
        assert_eq!((port, standby), (a.port(), false));
        eprintln!(
            "measured: held client served {:.1} ms after the primary was published ({:.1} ms after it connected)",
            published.elapsed().as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3
        );
        let s = counters.snapshot();
        assert_eq!((s.held, s.holding, s.hold_timeouts), (1, 0, 0), "{s:?}");
        assert_eq!(s.forwarded_total(), 1);
    });
}

#[test]
fn a_held_client_is_closed_after_the_hold_time() {
    runtime().block_on(async {
        let (_tx, rx) = watch::channel(Route::default());
        let hold = Duration::from_millis(300);
        let (addr, counters, _serving) =
            proxy(Role::Write, rx, ProxyOptions::default().with_hold(hold)).await;
        let t0 = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("accepted");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("closed by the proxy")
            .unwrap_or(0);
        let waited = t0.elapsed();
        eprintln!(
            "measured: hold {} ms, client closed after {:.1} ms",
            hold.as_millis(),
            waited.as_secs_f64() * 1e3
        );
        assert_eq!(n, 0, "EOF, no bytes");
        assert!(waited >= hold, "{waited:?}");
        assert!(waited < hold + Duration::from_secs(2), "{waited:?}");
        let s = counters_until(&counters, "the hold timeout to count", |s| {
            s.hold_timeouts == 1
        })
        .await;
        assert_eq!((s.held, s.holding), (1, 0), "{s:?}");
        // A Postgres client sees the same close as an error, not a hang.
        let t0 = Instant::now();
        assert!(connect(addr).await.is_err());
        assert!(t0.elapsed() < hold + Duration::from_secs(2));
    });
}

#[test]
fn the_read_port_balances_over_standbys_and_falls_back_to_the_primary() {
    let p = PgServer::start(&[]).expect("primary");
    let s1 = PgServer::standby_of(&p, &[]).expect("standby 1");
    let s2 = PgServer::standby_of(&p, &[]).expect("standby 2");
    runtime().block_on(async {
        let (tx, rx) = watch::channel(Route {
            generation: 1,
            primary: Some(local(p.port())),
            replicas: vec![local(s1.port()), local(s2.port())],
        });
        let (addr, counters, _serving) = proxy(Role::Read, rx, ProxyOptions::default()).await;

        let mut seen = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (c, conn) = connect(addr).await.expect("connect to the read port");
            let (port, standby) = landed(&c).await;
            assert!(standby, "read connections go to standbys");
            seen.push(port);
            conns.push((c, conn, port));
        }
        assert_eq!(seen, [s1.port(), s2.port(), s1.port(), s2.port()]);

        // A listed standby that refuses is skipped: the next one serves.
        let dead = local(free_port().expect("free port"));
        let t0 = Instant::now();
        tx.send_replace(Route {
            generation: 1,
            primary: Some(local(p.port())),
            replicas: vec![dead, local(s1.port())],
        });
        // s2 left the list: its two connections close; s1's stay.
        for (c, conn, port) in conns {
            if port == s2.port() {
                closed(conn, "s2's connection closed").await;
            } else {
                assert_eq!(landed(&c).await.0, s1.port(), "s1's connection stays open");
            }
        }
        eprintln!(
            "measured: standby removed, its connections closed after {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        for _ in 0..2 {
            let (c, _conn) = connect(addr).await.expect("skips the dead standby");
            assert_eq!(landed(&c).await, (s1.port(), true));
        }
        let s = counters.snapshot();
        assert!(s.connect_failures >= 1, "{s:?}");
        assert_eq!(s.closed_on_switch, 2, "{s:?}");

        // No standby listed: reads go to the primary.
        tx.send_replace(Route::with_primary(1, local(p.port())));
        let (c, _conn) = connect(addr).await.expect("falls back to the primary");
        assert_eq!(landed(&c).await, (p.port(), false));
        let s = counters.snapshot();
        assert_eq!(s.forwarded.get(&local(p.port())), Some(&1), "{s:?}");
        assert_eq!(s.forwarded.get(&local(s1.port())), Some(&4), "{s:?}");
        assert_eq!(s.forwarded.get(&local(s2.port())), Some(&2), "{s:?}");
    });
}

#[test]
fn a_dead_backend_makes_the_client_fail_fast() {
    runtime().block_on(async {
        let dead = local(free_port().expect("free port"));
        let (_tx, rx) = watch::channel(Route::with_primary(1, dead));
        let (addr, counters, _serving) = proxy(Role::Write, rx, ProxyOptions::default()).await;
        let t0 = Instant::now();
        let r = connect(addr).await;
        let took = t0.elapsed();
        eprintln!(
            "measured: client of a dead backend failed after {:.2} ms",
            took.as_secs_f64() * 1e3
        );
        assert!(r.is_err(), "no server behind the proxy");
        assert!(took < Duration::from_secs(1), "{took:?}");
        let s = counters_until(&counters, "the connection to end", |s| s.active == 0).await;
        assert_eq!((s.connect_failures, s.forwarded_total()), (1, 0), "{s:?}");
    });
}

/// `n` current-thread runtimes on their own threads (as the daemon runs the proxy); they
/// stop when the returned senders are dropped.
fn worker_runtimes(
    n: usize,
) -> (
    Vec<tokio::runtime::Handle>,
    Vec<tokio::sync::oneshot::Sender<()>>,
    Vec<std::thread::JoinHandle<()>>,
) {
    let (mut handles, mut stops, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("worker runtime");
        handles.push(rt.handle().clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        threads.push(std::thread::spawn(move || {
            let _ = rt.block_on(stopped);
        }));
    }
    (handles, stops, threads)
}

/// Four clients through `addr` land on `a`; a switch to no primary closes them all.
async fn forwarded_then_closed(
    addr: SocketAddr,
    a: &PgServer,
    tx: &watch::Sender<Route>,
    counters: &Counters,
) {
    let mut conns = Vec::new();
    for _ in 0..4 {
        let (c, conn) = connect(addr).await.expect("connect through a worker");
        assert_eq!(landed(&c).await, (a.port(), false));
        conns.push((c, conn));
    }
    tx.send_replace(Route {
        generation: 2,
        primary: None,
        replicas: vec![],
    });
    for (_c, conn) in conns {
        closed(conn, "closed on its worker by the switch").await;
    }
    let s = counters_until(counters, "nothing connected", |s| {
        s.connected_to(local(a.port())) == 0 && s.active == 0
    })
    .await;
    assert_eq!((s.accepted, s.closed_on_switch), (4, 4), "{s:?}");
}

#[test]
fn reuseport_workers_forward_and_close_on_switch() {
    let a = PgServer::start(&[]).expect("server a");
    let (workers, stops, threads) = worker_runtimes(2);
    runtime().block_on(async {
        // Each worker accepts on its own SO_REUSEPORT listener.
        let (tx, rx) = watch::channel(Route::with_primary(1, local(a.port())));
        let ports =
            Port::bind_reuseport(Role::Write, local(0), rx, ProxyOptions::default(), &workers)
                .expect("bind SO_REUSEPORT listeners");
        assert_eq!(ports.len(), 2);
        let addr = ports[0].local_addr();
        assert_eq!(ports[1].local_addr(), addr, "one port, two listeners");
        let counters = ports[0].counters();
        for (port, worker) in ports.into_iter().zip(&workers) {
            worker.spawn(port.serve());
        }
        forwarded_then_closed(addr, &a, &tx, &counters).await;

        // A port something already listens on is refused, not silently shared.
        let (_tx, rx) = watch::channel(Route::default());
        let taken = Port::bind_reuseport(Role::Write, addr, rx, ProxyOptions::default(), &workers);
        assert!(
            matches!(taken, Err(lifeboat_traffic::Error::Bind { .. })),
            "{taken:?}"
        );
    });
    drop(stops);
    for t in threads {
        t.join().expect("worker thread");
    }
}
