//! The replication client against real PostgreSQL 15 servers: system identification,
//! slots, WAL that matches the server's segment files byte for byte, status updates that
//! move a slot, a timeline switch after a promotion, password authentication, and
//! keepalives that keep a quiet stream alive.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lifeboat_postgres::replication::{ReplicationConn, ReplicationError, StreamEvent, WalStream};
use lifeboat_testkit::PgServer;
use lifeboat_types::Lsn;

const SEGMENT: u64 = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a condition before failing.
const DEADLINE: Duration = Duration::from_secs(120);

fn connect(dsn: &str) -> ReplicationConn {
    ReplicationConn::connect(dsn, "lifeboat-test", TIMEOUT).unwrap()
}

fn segment_start(lsn: Lsn) -> Lsn {
    Lsn(lsn.0 / SEGMENT * SEGMENT)
}

/// The name of the segment of timeline 1 that starts at `start` (pg_walfile_name names the
/// segment of the byte before a position, hence the + 1).
fn segment_name(pg: &PgServer, start: Lsn) -> String {
    pg.sql(&format!("select pg_walfile_name('{start}'::pg_lsn + 1)"))
        .unwrap()
}

/// Receives WAL until it reaches `until`, checking that pieces are contiguous from `from`
/// and answering keepalives; returns the bytes from `from` to `until`.
fn receive(stream: &mut WalStream, from: Lsn, until: Lsn) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut end = from;
    while end < until {
        assert!(
            Instant::now() < deadline,
            "WAL stopped at {end}, want {until}"
        );
        match stream.next(Duration::from_secs(1)).unwrap() {
            StreamEvent::Data { start, data } => {
                assert_eq!(start, end, "WAL pieces are contiguous");
                got.extend_from_slice(&data);
                end = Lsn(end.0 + data.len() as u64);
            }
            StreamEvent::Keepalive {
                reply_requested: true,
                ..
            } => stream.send_status(end, end, Lsn::ZERO, false).unwrap(),
            StreamEvent::Keepalive { .. } | StreamEvent::Idle => {}
            e @ StreamEvent::TimelineEnded { .. } => panic!("unexpected {e:?} at {end}"),
        }
    }
    got.truncate((until.0 - from.0) as usize);
    got
}

#[test]
fn identify_system_show_and_dsn_forms() {
    let pg = PgServer::start(&[]).unwrap();
    let mut c = connect(&pg.dsn());
    let info = c.identify_system().unwrap();
    assert_eq!(
        info.system_id,
        pg.sql("select system_identifier from pg_control_system()")
            .unwrap()
    );
    assert_eq!(info.timeline, 1);
    assert_eq!(
        info.timeline.to_string(),
        pg.sql("select timeline_id from pg_control_checkpoint()")
            .unwrap()
    );
    let flushed: Lsn = pg
        .sql("select pg_current_wal_flush_lsn()")
        .unwrap()
        .parse()
        .unwrap();
    assert!(info.xlogpos > Lsn::ZERO && info.xlogpos <= flushed);
    assert_eq!(c.show("wal_segment_size").unwrap(), "16MB");

    // A server error names the server and SQLSTATE, and leaves the connection usable.
    let e = c.show("no_such_setting").unwrap_err();
    assert_eq!(e.sqlstate(), Some("42704"), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", pg.port())),
        "{e}"
    );
    assert!(c.show("bad name;").is_err());
    assert_eq!(c.show("wal_level").unwrap(), "replica");
    // The application name reaches the server (an idle walsender shows there too).
    pg.wait_for(
        "select count(*) from pg_stat_replication where application_name = 'lifeboat-test'",
        "1",
    )
    .unwrap();
    drop(c);

    // The Unix socket, a URL, and a list of hosts whose first one is down.
    let unix = format!(
        "host={} port={} user=postgres",
        pg.socket_dir().display(),
        pg.port()
    );
    let mut c = connect(&unix);
    assert!(c.target().ends_with(&format!(".s.PGSQL.{}", pg.port())));
    assert_eq!(c.identify_system().unwrap().system_id, info.system_id);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port());
    assert_eq!(
        connect(&url).identify_system().unwrap().system_id,
        info.system_id
    );
    let down = lifeboat_testkit::free_port().unwrap();
    let two = format!(
        "host=127.0.0.1,127.0.0.1 port={down},{} user=postgres",
        pg.port()
    );
    let mut c = connect(&two);
    assert_eq!(c.target(), format!("127.0.0.1:{}", pg.port()));
    assert_eq!(c.show("wal_segment_size").unwrap(), "16MB");
    let e = ReplicationConn::connect(
        &format!("host=127.0.0.1 port={down} user=postgres"),
        "t",
        TIMEOUT,
    )
    .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(matches!(
        ReplicationConn::connect("host='x", "t", TIMEOUT),
        Err(ReplicationError::Dsn(_))
    ));
}

#[test]
fn physical_slots() {
    let pg = PgServer::start(&[]).unwrap();
    let mut c = connect(&pg.dsn());
    assert_eq!(c.read_slot("lifeboat").unwrap(), None);
    assert!(c.create_physical_slot("lifeboat").unwrap());
    assert!(!c.create_physical_slot("lifeboat").unwrap());
    let slot = c.read_slot("lifeboat").unwrap().unwrap();
    let restart = slot.restart_lsn.unwrap();
    assert!(restart > Lsn::ZERO);
    assert_eq!(slot.timeline, Some(1));
    assert_eq!(
        pg.sql(
            "select slot_type, restart_lsn from pg_replication_slots where slot_name = 'lifeboat'"
        )
        .unwrap(),
        format!("physical|{restart}")
    );
    assert!(matches!(
        c.create_physical_slot("Not-A-Slot"),
        Err(ReplicationError::Invalid(_))
    ));
}

/// WAL streamed from the start of a segment equals the server's segment file byte for
/// byte, and status updates move the slot's restart_lsn to the flushed position.
#[test]
fn streamed_segment_matches_the_server_file() {
    let pg = PgServer::start(&[]).unwrap();
    pg.sql("create table orders(id int, note text)").unwrap();
    let mut c = connect(&pg.dsn());
    assert!(c.create_physical_slot("lifeboat").unwrap());
    let info = c.identify_system().unwrap();
    let start = segment_start(info.xlogpos);
    let end = Lsn(start.0 + SEGMENT);
    let name = segment_name(&pg, start);
    let mut stream = c
        .start_physical(Some("lifeboat"), start, info.timeline)
        .unwrap();

    // WAL arrives while it is written: a few MB of inserts, then a switch ends the segment.
    let wal = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for _ in 0..4 {
                pg.sql("insert into orders select g, repeat(md5(g::text), 20) from generate_series(1, 5000) g")
                    .unwrap();
            }
            pg.sql("select pg_switch_wal()").unwrap();
        });
        let wal = receive(&mut stream, start, end);
        writer.join().unwrap();
        wal
    });
    assert_eq!(wal.len() as u64, SEGMENT);
    let file = std::fs::read(pg.data_dir().join("pg_wal").join(&name)).unwrap();
    assert_eq!(file.len(), wal.len());
    assert!(file == wal, "segment {name} differs from the streamed WAL");

    stream.send_status(end, end, Lsn::ZERO, false).unwrap();
    pg.wait_for(
        "select restart_lsn from pg_replication_slots where slot_name = 'lifeboat'",
        &end.to_string(),
    )
    .unwrap();

    // Ending the copy ourselves returns to command mode.
    let mut c = stream.finish().unwrap();
    assert_eq!(c.identify_system().unwrap().system_id, info.system_id);
}

/// On a promoted standby, timeline 1 streams up to the switch point and ends with the next
/// timeline; the history file names the switch; timeline 2 streams on.
#[test]
fn timeline_switch_after_promotion() {
    let primary = PgServer::start(&[]).unwrap();
    primary
        .sql("create table orders(id int); insert into orders select generate_series(1, 1000)")
        .unwrap();
    let standby = PgServer::standby_of(&primary, &[]).unwrap();
    primary
        .sql("insert into orders select generate_series(1, 1000)")
        .unwrap();
    standby
        .wait_for("select count(*) from orders", "2000")
        .unwrap();
    standby.promote().unwrap();
    standby.wait_for("select pg_is_in_recovery()", "f").unwrap();
    standby
        .sql("insert into orders select generate_series(1, 1000)")
        .unwrap();

    let history =
        std::fs::read_to_string(standby.data_dir().join("pg_wal/00000002.history")).unwrap();
    let switch: Lsn = history.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut c = connect(&standby.dsn());
    assert_eq!(c.identify_system().unwrap().timeline, 2);

    let start = segment_start(Lsn(switch.0 - 1));
    let mut stream = c.start_physical(None, start, 1).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut end = start;
    let next = loop {
        assert!(
            Instant::now() < deadline,
            "timeline 1 did not end (at {end})"
        );
        match stream.next(Duration::from_secs(1)).unwrap() {
            StreamEvent::Data { start, data } => {
                assert_eq!(start, end);
                end = Lsn(end.0 + data.len() as u64);
            }
            StreamEvent::Keepalive {
                reply_requested: true,
                ..
            } => stream.send_status(end, end, Lsn::ZERO, false).unwrap(),
            StreamEvent::Keepalive { .. } | StreamEvent::Idle => {}
            StreamEvent::TimelineEnded {
                next_timeline,
                next_start,
            } => break (next_timeline, next_start),
        }
    };
    assert_eq!(next, (2, switch));
    assert_eq!(end, switch, "timeline 1 streams up to the switch point");
    // The end is sticky until finish().
    assert!(matches!(
        stream.next(Duration::ZERO).unwrap(),
        StreamEvent::TimelineEnded {
            next_timeline: 2,
            ..
        }
    ));

    let mut c = stream.finish().unwrap();
    let (name, content) = c.timeline_history(2).unwrap();
    assert_eq!(name, "00000002.history");
    assert_eq!(String::from_utf8(content).unwrap(), history);
    assert!(history.contains(&switch.to_string()));

    // Starting exactly at the switch point on timeline 1 ends at once.
    let mut stream = c.start_physical(None, switch, 1).unwrap();
    assert_eq!(
        stream.next(Duration::ZERO).unwrap(),
        StreamEvent::TimelineEnded {
            next_timeline: 2,
            next_start: switch
        }
    );
    let c = stream.finish().unwrap();

    // Timeline 2 streams from the start of the segment holding the switch.
    let mut stream = c.start_physical(None, start, 2).unwrap();
    let wal = receive(&mut stream, start, Lsn(switch.0 + 1));
    assert!(wal.len() as u64 > switch.0 - start.0);
}

/// Writes pg_hba.conf: trust for everything except replication over TCP, which needs
/// `method`.
fn require_for_replication(pg: &PgServer, method: &str) {
    std::fs::write(
        pg.data_dir().join("pg_hba.conf"),
        format!(
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 {method}\n"
        ),
    )
    .unwrap();
}

#[test]
fn password_authentication() {
    let pg = PgServer::start(&["log_connections = on"]).unwrap();
    for (method, encryption, right, wrong) in [
        (
            "scram-sha-256",
            "scram-sha-256",
            "Scram-Right-1",
            "Scram-Wrong-1",
        ),
        ("md5", "md5", "Md5-Right-2", "Md5-Wrong-2"),
        (
            "password",
            "scram-sha-256",
            "Clear-Right-3",
            "Clear-Wrong-3",
        ),
    ] {
        pg.sql(&format!(
            "set password_encryption = '{encryption}'; alter user postgres password '{right}'"
        ))
        .unwrap();
        require_for_replication(&pg, method);
        pg.sql("select pg_reload_conf()").unwrap();
        let dsn = |pw: &str| format!("{} password={pw}", pg.dsn());
        // Wait until the new rules are in force: the right password then works by
        // `method`, as the server log says.
        let deadline = Instant::now() + DEADLINE;
        let logged = format!("method={method} ");
        loop {
            let ok = ReplicationConn::connect(&dsn(right), "t", TIMEOUT).is_ok();
            if ok
                && std::fs::read_to_string(pg.log_path())
                    .unwrap()
                    .contains(&logged)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no {method} login: {}",
                pg.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut c = connect(&dsn(right));
        assert_eq!(c.show("wal_segment_size").unwrap(), "16MB");
        // The same by URL.
        let url = format!(
            "postgresql://postgres:{right}@127.0.0.1:{}/postgres",
            pg.port()
        );
        connect(&url).identify_system().unwrap();

        for (dsn, why) in [(dsn(wrong), "wrong"), (pg.dsn(), "missing")] {
            let e = ReplicationConn::connect(&dsn, "t", TIMEOUT).unwrap_err();
            let shown = format!("{e} | {e:?} | {:?}", std::error::Error::source(&e));
            assert!(
                matches!(e, ReplicationError::Auth { .. }),
                "{method}, {why} password: {shown}"
            );
            assert!(!e.is_transient());
            assert!(shown.contains("\"postgres\""), "{shown}");
            assert!(
                shown.contains(&format!("127.0.0.1:{}", pg.port())),
                "{shown}"
            );
            for secret in [right, wrong] {
                assert!(!shown.contains(secret), "{method}: {shown}");
            }
        }
        // Debug output of a connection holds no password either.
        assert!(!format!("{c:?}").contains(right));
    }
}

/// A quiet stream returns Idle, and answering the keepalives the server asks for keeps it
/// alive past `wal_sender_timeout`; a stream that does not answer is dropped.
#[test]
fn keepalives_keep_a_quiet_stream_alive() {
    let pg = PgServer::start(&["wal_sender_timeout = '2s'"]).unwrap();
    let mut c = connect(&pg.dsn());
    let info = c.identify_system().unwrap();
    let mut stream = c
        .start_physical(None, segment_start(info.xlogpos), 1)
        .unwrap();
    let begin = Instant::now();
    let (mut idle, mut answered, mut end) = (0, 0, Lsn::ZERO);
    while answered < 3 || idle < 3 || begin.elapsed() < Duration::from_secs(5) {
        assert!(
            begin.elapsed() < DEADLINE,
            "{idle} idle, {answered} answered"
        );
        match stream.next(Duration::from_millis(200)).unwrap() {
            StreamEvent::Idle => idle += 1,
            StreamEvent::Data { start, data } => end = Lsn(start.0 + data.len() as u64),
            StreamEvent::Keepalive {
                reply_requested,
                server_end,
            } => {
                assert!(server_end >= end);
                if reply_requested {
                    stream.send_status(end, end, Lsn::ZERO, false).unwrap();
                    answered += 1;
                }
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        pg.sql("select count(*) from pg_stat_replication where application_name = 'lifeboat-test'")
            .unwrap(),
        "1"
    );

    // Without answers the server ends the stream after wal_sender_timeout.
    let mut c = connect(&pg.dsn());
    let info = c.identify_system().unwrap();
    let mut silent = c
        .start_physical(None, segment_start(info.xlogpos), 1)
        .unwrap();
    let err = loop {
        assert!(
            begin.elapsed() < DEADLINE,
            "the silent stream was never dropped"
        );
        match silent.next(Duration::from_millis(200)) {
            Ok(_) => {}
            Err(e) => break e,
        }
        // Keep the answering stream answering meanwhile.
        if let StreamEvent::Keepalive {
            reply_requested: true,
            ..
        } = stream.next(Duration::ZERO).unwrap()
        {
            stream.send_status(end, end, Lsn::ZERO, false).unwrap();
        }
    };
    assert!(err.is_transient(), "{err}");
    assert!(matches!(
        silent.next(Duration::ZERO),
        Err(ReplicationError::Invalid(_))
    ));
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Streams ~512 MiB of WAL that the server already has and prints the rate and the
/// client's CPU time (`cargo test -p lifeboat-postgres --test replication -- --ignored
/// --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn stream_throughput() {
    let pg = PgServer::start(&["max_wal_size = '4GB'", "checkpoint_timeout = '1h'"]).unwrap();
    let mut c = connect(&pg.dsn());
    c.create_physical_slot("lifeboat").unwrap();
    let start = segment_start(c.identify_system().unwrap().xlogpos);
    pg.sql("create table big(id int, note text)").unwrap();
    for _ in 0..4 {
        pg.sql(
            "insert into big select g, repeat(md5(g::text), 30) from generate_series(1, 100000) g",
        )
        .unwrap();
    }
    let end = Lsn(segment_start(c.identify_system().unwrap().xlogpos).0);
    let mut stream = c.start_physical(Some("lifeboat"), start, 1).unwrap();
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let mut pos = start;
    let mut messages = 0u64;
    while pos < end {
        if let StreamEvent::Data { start, data } = stream.next(TIMEOUT).unwrap() {
            assert_eq!(start, pos);
            pos = Lsn(pos.0 + data.len() as u64);
            messages += 1;
        }
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let mib = (pos.0 - start.0) as f64 / f64::from(1 << 20);
    println!(
        "{mib:.0} MiB in {messages} messages: {:.0} MiB/s, client CPU {cpu:.2} s ({:.0} MiB per CPU second)",
        mib / secs,
        mib / cpu.max(0.01)
    );
}
