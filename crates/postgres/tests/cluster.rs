//! The high-availability cluster operations against real PostgreSQL 15 servers on free
//! 127.0.0.1 ports: init + clone, synchronous commit, promotion, fencing, repointing,
//! rejoining by pg_rewind and by re-clone. Each test owns a temp dir (owned by the
//! `postgres` OS user when run as root) and stops its servers when it ends.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lifeboat_postgres::cluster::{
    ClusterError, HostAuth, InitSettings, Member, Pg, RejoinPath, StopMode, SyncMode,
};
use lifeboat_testkit::free_port;
use lifeboat_testkit::postgres::{owner_tempdir, pg_bin_dir};
use lifeboat_types::Secret;

/// A test's members and its temp dir; stops every server when dropped (before the temp dir
/// goes).
struct Cluster {
    pg: Pg,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(names: &[&str]) -> Self {
        Self::with_pg(names, Pg::new("postgres"))
    }

    fn with_pg(names: &[&str], pg: Pg) -> Self {
        let dir = owner_tempdir("lifeboat-cluster-").unwrap();
        let members = names
            .iter()
            .map(|n| Member::new(*n, "127.0.0.1", free_port().unwrap(), dir.path().join(n)))
            .collect();
        Cluster {
            pg: pg.with_bin_dir(pg_bin_dir().unwrap()),
            members,
            dir,
        }
    }

    fn m(&self, name: &str) -> &Member {
        self.members.iter().find(|m| m.name == name).unwrap()
    }

    fn settings(&self) -> InitSettings {
        InitSettings {
            listen_addresses: "127.0.0.1".into(),
            allowed_networks: vec!["127.0.0.1".into()],
            auth: HostAuth::Trust,
            socket_dir: Some(self.dir.path().to_path_buf()),
            ..InitSettings::default()
        }
    }

    /// Runs `sql` on `m` and returns the first column of every row.
    fn sql(&self, m: &Member, sql: &str) -> Result<Vec<String>, postgres::Error> {
        let mut c = self.pg.connect(m).unwrap();
        Ok(c.simple_query(sql)?
            .into_iter()
            .filter_map(|r| match r {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .collect())
    }

    /// Waits until `sql` on `m` returns `want` (one row per element).
    fn wait_for(&self, m: &Member, sql: &str, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self
                .pg
                .connect(m)
                .ok()
                .and_then(|mut c| c.simple_query(sql).ok());
            let rows: Option<Vec<String>> = got.map(|msgs| {
                msgs.into_iter()
                    .filter_map(|r| match r {
                        postgres::SimpleQueryMessage::Row(r) => {
                            Some(r.get(0).unwrap_or("").to_string())
                        }
                        _ => None,
                    })
                    .collect()
            });
            if rows.as_deref().is_some_and(|r| r == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: `{sql}` gave {rows:?}, want {want:?}\n{}",
                m.name,
                self.pg.log_tail(m)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILLs `m`'s postmaster (a crash) and waits until it is gone.
    fn kill(&self, m: &Member) {
        let pid = self.pg.postmaster_pid(m).unwrap().expect("running");
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "postmaster {pid} survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &self.members {
            if let Err(e) = self.pg.stop(m, StopMode::Immediate) {
                eprintln!("stopping {}: {e}", m.name);
            }
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Two members: init + clone streams rows; synchronous commit waits for the standby;
/// generation; fence + promote; the fenced data dir restarts read-only; a rejoin whose
/// rewind cannot work (the old primary's WAL is gone) re-clones and says so.
#[test]
fn two_members_sync_promote_fence_and_reclone() {
    let c = Cluster::new(&["p", "s1"]);
    let (pg, p, s1) = (&c.pg, c.m("p"), c.m("s1"));

    let init = pg.init_primary(p, &c.settings()).unwrap();
    println!("init_primary: {}", ms(init.took));
    let adopted = pg.adopt(p).unwrap();
    assert!(adopted.running && adopted.data_checksums && adopted.wal_log_hints);
    assert_eq!(adopted.in_recovery, Some(false));

    let clone = pg.clone_standby(p, s1).unwrap();
    println!("clone_standby: {}", ms(clone.took));
    assert_eq!(clone.slot, "lifeboat_s1");
    assert!(clone.slot_created);
    assert!(pg.is_running(s1).unwrap());
    assert!(pg.status(s1).unwrap().in_recovery);

    // A row written on the primary is readable on the standby.
    c.sql(
        p,
        "create table t (id int primary key, v text); insert into t values (1, 'one')",
    )
    .unwrap();
    c.wait_for(s1, "select v from t where id = 1", &["one"]);

    // Synchronous: with s1 stopped a commit waits; it returns once s1 is back.
    pg.set_synchronous_standbys(p, &["s1"], SyncMode::Any(1))
        .unwrap();
    assert_eq!(
        c.sql(p, "show synchronous_standby_names").unwrap(),
        [r#"ANY 1 ("s1")"#]
    );
    c.sql(p, "insert into t values (2, 'two')").unwrap();
    pg.stop(s1, StopMode::Fast).unwrap();
    let (tx, rx) = mpsc::channel();
    {
        let (pg, p) = (pg.clone(), p.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = pg.connect(&p).and_then(|mut c| {
                c.simple_query("set statement_timeout = '60s'; insert into t values (3, 'sync')")
                    .map_err(|e| ClusterError::Invalid(e.to_string()))
            });
            let _ = tx.send((r.map(|_| ()), started.elapsed()));
        });
    }
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_secs(1)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "a synchronous commit returned while its only standby was down"
    );
    let restart = Instant::now();
    pg.start(s1).unwrap();
    let (r, waited) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    r.unwrap();
    println!(
        "sync commit waited {} in all, {} after s1 was started again",
        ms(waited),
        ms(restart.elapsed())
    );
    c.wait_for(s1, "select v from t where id = 3", &["sync"]);
    pg.set_synchronous_standbys(p, &[], SyncMode::Any(1))
        .unwrap();
    assert_eq!(c.sql(p, "show synchronous_standby_names").unwrap(), [""]);

    // Generation.
    pg.set_generation(p, 1).unwrap();
    assert_eq!(pg.generation(p).unwrap(), Some(1));
    assert_eq!(
        c.sql(p, "select current_setting('lifeboat.generation', true)")
            .unwrap(),
        ["1"]
    );
    let stale = pg.set_generation(p, 0).unwrap_err();
    assert!(
        matches!(
            stale,
            ClusterError::StaleGeneration {
                current: 1,
                given: 0,
                ..
            }
        ),
        "{stale}"
    );

    // Fence the primary, promote the standby.
    let fence = pg.fence(p).unwrap();
    println!("fence (running primary): {}", ms(fence.took));
    assert!(fence.was_running && !fence.killed);
    assert!(!pg.is_running(p).unwrap());
    assert!(p.data_dir.join("standby.signal").is_file());
    let before = pg.status(s1).unwrap();
    let promoted = pg.promote(s1, Duration::from_secs(5)).unwrap();
    println!(
        "promote: {} (timeline {:?} -> {})",
        ms(promoted.took),
        promoted.previous_timeline,
        promoted.timeline
    );
    assert_eq!(before.timeline, Some(1));
    assert_eq!(promoted.previous_timeline, Some(1));
    assert_eq!(promoted.timeline, 2);
    let after = pg.status(s1).unwrap();
    assert!(!after.in_recovery);
    assert_eq!(after.timeline, Some(2));
    c.sql(s1, "insert into t values (4, 'on s1')").unwrap();
    assert!(matches!(
        pg.promote(s1, Duration::from_secs(5)),
        Err(ClusterError::AlreadyPrimary { .. })
    ));

    // A fenced data dir comes up read-only.
    pg.start(p).unwrap();
    assert!(pg.status(p).unwrap().in_recovery);
    assert_eq!(c.sql(p, "select pg_is_in_recovery()").unwrap(), ["t"]);
    let write = c
        .sql(p, "insert into t values (5, 'split brain')")
        .unwrap_err();
    assert_eq!(
        write.code(),
        Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{write}"
    );
    assert!(matches!(
        pg.rejoin(p, s1),
        Err(ClusterError::StillRunning { .. })
    ));
    pg.stop(p, StopMode::Fast).unwrap();

    // Its WAL gone, pg_rewind cannot work: rejoin re-clones and keeps the old dir.
    let wal = p.data_dir.join("pg_wal");
    for e in std::fs::read_dir(&wal).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let rejoin = pg.rejoin(p, s1).unwrap();
    println!("rejoin by re-clone: {}", ms(rejoin.took));
    match &rejoin.path {
        RejoinPath::Recloned {
            set_aside,
            rewind_error,
        } => {
            assert!(set_aside.join("PG_VERSION").is_file(), "{set_aside:?}");
            assert!(rewind_error.contains("pg_rewind"), "{rewind_error}");
            println!("  rewind failed with: {rewind_error}");
        }
        other => panic!("expected a re-clone, got {other:?}"),
    }
    assert!(pg.status(p).unwrap().in_recovery);
    c.wait_for(p, "select v from t where id = 4", &["on s1"]);
    c.sql(s1, "insert into t values (6, 'streams')").unwrap();
    c.wait_for(p, "select v from t where id = 6", &["streams"]);
    let w = pg.wal_receiver(p).unwrap().unwrap();
    assert_eq!(w.sender_port, Some(s1.port));
    assert_eq!(w.received_tli, Some(2));
}

/// Four members: the primary crashes after a write s1 and s2 never got but s3 did; s1 is
/// promoted; s2 is repointed to it; s3 cannot follow (it diverged) and says so at once, and
/// rejoins by pg_rewind like the old primary; divergent rows are gone everywhere.
#[test]
fn crash_promote_repoint_and_rewind() {
    let c = Cluster::new(&["p", "s1", "s2", "s3"]);
    let (pg, p, s1, s2, s3) = (&c.pg, c.m("p"), c.m("s1"), c.m("s2"), c.m("s3"));

    pg.init_primary(p, &c.settings()).unwrap();
    for s in [s1, s2, s3] {
        pg.clone_standby(p, s).unwrap();
    }
    c.sql(
        p,
        "create table t (id int primary key, v text); insert into t values (1, 'one')",
    )
    .unwrap();
    for s in [s1, s2, s3] {
        c.wait_for(s, "select v from t where id = 1", &["one"]);
    }

    // s2 stops first, so it never holds WAL that s1 lacks; s3 keeps streaming and gets
    // the write that s1 and s2 miss.
    pg.stop(s2, StopMode::Fast).unwrap();
    pg.stop(s1, StopMode::Fast).unwrap();
    c.sql(p, "insert into t values (100, 'divergent')").unwrap();
    c.wait_for(s3, "select v from t where id = 100", &["divergent"]);
    c.kill(p);
    let fence = pg.fence(p).unwrap();
    assert!(!fence.was_running);
    assert!(p.data_dir.join("standby.signal").is_file());

    pg.start(s1).unwrap();
    pg.start(s2).unwrap();
    let promoted = pg.promote(s1, Duration::from_secs(5)).unwrap();
    println!("promote (after a crash): {}", ms(promoted.took));
    assert_eq!(promoted.timeline, 2);
    c.sql(s1, "insert into t values (2, 'after failover')")
        .unwrap();

    // s2 follows s1 onto timeline 2.
    let repoint = pg.repoint(s2, s1).unwrap();
    println!("repoint: {}", ms(repoint.took));
    assert_eq!(repoint.timeline, 2);
    assert_eq!(repoint.slot, "lifeboat_s2");
    c.wait_for(s2, "select v from t where id = 2", &["after failover"]);
    c.wait_for(s2, "select count(*) from t where id = 100", &["0"]);

    // s3 has WAL past the fork: repoint says so instead of waiting out its timeout.
    let t = Instant::now();
    let diverged = pg.repoint(s3, s1).unwrap_err();
    println!(
        "repoint of a diverged standby failed after {}: {diverged}",
        ms(t.elapsed())
    );
    assert!(
        matches!(diverged, ClusterError::Diverged { .. }),
        "{diverged}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    pg.fence(s3).unwrap();
    let rejoin = pg.rejoin(s3, s1).unwrap();
    println!(
        "rejoin of the diverged standby: {} ({:?})",
        ms(rejoin.took),
        rejoin.path
    );
    assert_eq!(rejoin.path, RejoinPath::Rewound);
    c.wait_for(s3, "select count(*) from t where id = 100", &["0"]);
    // The WAL kept for pg_rewind's crash recovery is not kept any longer.
    assert_eq!(c.sql(s3, "show wal_keep_size").unwrap(), ["0"]);

    // The crashed old primary rejoins by rewind; its divergent row is gone.
    let rejoin = pg.rejoin(p, s1).unwrap();
    println!(
        "rejoin of the crashed primary by pg_rewind: {} ({:?})",
        ms(rejoin.took),
        rejoin.path
    );
    assert_eq!(rejoin.path, RejoinPath::Rewound);
    // pg_rewind removes the old primary's slots (PostgreSQL 14+); none hold WAL on it.
    assert_eq!(
        c.sql(p, "select count(*) from pg_replication_slots")
            .unwrap(),
        ["0"]
    );
    let st = pg.status(p).unwrap();
    assert!(st.in_recovery);
    assert_eq!(st.timeline, Some(2));
    c.wait_for(p, "select count(*) from t where id = 100", &["0"]);
    c.wait_for(p, "select v from t where id = 2", &["after failover"]);
    c.sql(s1, "insert into t values (3, 'streams to all')")
        .unwrap();
    for m in [p, s2, s3] {
        c.wait_for(m, "select v from t where id = 3", &["streams to all"]);
    }
    let slots = c
        .sql(
            s1,
            "select slot_name || ':' || active from pg_replication_slots order by 1",
        )
        .unwrap();
    assert_eq!(
        slots,
        ["lifeboat_p:true", "lifeboat_s2:true", "lifeboat_s3:true"]
    );

    // A standby that never diverged needs no rewind; a slot it kept for a former standby
    // (it would hold WAL forever) is dropped.
    c.sql(
        s2,
        "select pg_create_physical_replication_slot('lifeboat_gone', true)",
    )
    .unwrap();
    pg.stop(s2, StopMode::Fast).unwrap();
    let rejoin = pg.rejoin(s2, s1).unwrap();
    println!(
        "rejoin of a standby that never diverged: {}",
        ms(rejoin.took)
    );
    assert_eq!(rejoin.path, RejoinPath::NoRewindNeeded);
    assert_eq!(rejoin.dropped_slots, ["lifeboat_gone"]);

    // A member whose data directory is gone (a replaced disk) rejoins by a plain clone.
    pg.stop(s2, StopMode::Fast).unwrap();
    std::fs::rename(&s2.data_dir, c.dir.path().join("s2-old-disk")).unwrap();
    let rejoin = pg.rejoin(s2, s1).unwrap();
    println!("rejoin without a data dir: {}", ms(rejoin.took));
    assert_eq!(rejoin.path, RejoinPath::Cloned);
    c.wait_for(s2, "select v from t where id = 3", &["streams to all"]);
}

/// adopt says exactly what to change, running and stopped; scram with a password works and
/// errors never show it.
#[test]
fn adopt_reports_what_to_change_and_errors_hide_the_password() {
    let password = "n0t-in-any-error";
    let c = Cluster::with_pg(
        &["old", "s", "q", "r"],
        Pg::new("postgres").with_password(Secret::new(password.to_string())),
    );
    let (pg, old, s) = (&c.pg, c.m("old"), c.m("s"));
    let settings = InitSettings {
        auth: HostAuth::ScramSha256,
        data_checksums: false,
        extra: vec![
            ("wal_level".into(), "minimal".into()),
            ("max_wal_senders".into(), "0".into()),
            ("wal_log_hints".into(), "off".into()),
        ],
        ..c.settings()
    };
    pg.init_primary(old, &settings).unwrap();

    // scram: the right password connects, a wrong one is refused.
    assert_eq!(c.sql(old, "select 1").unwrap(), ["1"]);
    let wrong = Pg::new("postgres").with_password(Secret::new("wrong".to_string()));
    let Err(refused) = wrong.connect(old) else {
        panic!("a wrong password connected")
    };
    assert!(
        matches!(&refused, ClusterError::Sql { code: Some(c), .. } if c == "28P01"),
        "{refused}"
    );

    let running = pg.adopt(old).unwrap_err();
    println!("{running}");
    let text = running.to_string();
    assert!(matches!(running, ClusterError::Unusable { ref problems, .. } if problems.len() == 3));
    for want in [
        "wal_level = replica",
        "wal_log_hints = on",
        "max_wal_senders = 10",
        "member old",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }

    let clone = pg.clone_standby(old, s).unwrap_err();
    println!("{clone}");
    assert!(clone.to_string().contains("member old"), "{clone}");
    assert!(!format!("{clone} {clone:?}").contains(password));

    pg.stop(old, StopMode::Fast).unwrap();
    let stopped = pg.adopt(old).unwrap_err().to_string();
    for want in [
        "wal_level = replica",
        "wal_log_hints = on",
        "max_wal_senders = 10",
    ] {
        assert!(stopped.contains(want), "missing {want:?} in {stopped}");
    }
    assert!(!format!("{running:?} {stopped}").contains(password));

    // Replication with scram: the standby reads the password from its password file; it
    // is in no log, in no postgresql.auto.conf.
    let (q, r) = (c.m("q"), c.m("r"));
    let settings = InitSettings {
        auth: HostAuth::ScramSha256,
        ..c.settings()
    };
    pg.init_primary(q, &settings).unwrap();
    pg.clone_standby(q, r).unwrap();
    c.sql(q, "create table t (v text); insert into t values ('scram')")
        .unwrap();
    c.wait_for(r, "select v from t", &["scram"]);
    pg.repoint(r, q).unwrap();
    let passfile = std::fs::metadata(r.passfile_path()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&passfile.permissions()) & 0o777,
        0o600
    );
    for f in [
        q.log_path(),
        r.log_path(),
        r.data_dir.join("postgresql.auto.conf"),
        q.data_dir.join("postgresql.auto.conf"),
    ] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(password),
            "{} holds the password",
            f.display()
        );
    }
}
