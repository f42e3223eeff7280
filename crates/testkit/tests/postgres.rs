//! The PostgreSQL harness itself: a primary starts on a free port, a standby clones it and
//! follows, a promotion moves to timeline 2, and a SIGKILL really kills.
#![allow(clippy::unwrap_used)]

use lifeboat_testkit::PgServer;

#[test]
fn primary_standby_promotion_and_kill() {
    let primary = PgServer::start(&[]).unwrap();
    primary
        .sql("create table orders(id int primary key, placed timestamptz default now())")
        .unwrap();
    primary
        .sql("insert into orders(id) values (1), (2)")
        .unwrap();
    assert_eq!(primary.sql("select count(*) from orders").unwrap(), "2");
    assert_eq!(primary.sql("select pg_is_in_recovery()").unwrap(), "f");

    let standby = PgServer::standby_of(&primary, &[]).unwrap();
    assert_eq!(standby.sql("select pg_is_in_recovery()").unwrap(), "t");
    primary.sql("insert into orders(id) values (3)").unwrap();
    standby
        .wait_for("select count(*) from orders", "3")
        .unwrap();
    standby.promote().unwrap();
    standby.wait_for("select pg_is_in_recovery()", "f").unwrap();
    assert_eq!(
        standby
            .sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
            .unwrap(),
        "00000002"
    );

    let pid = primary.pid().unwrap();
    primary.kill().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(primary.sql("select 1").is_err());
}
