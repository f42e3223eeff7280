//! The PostgreSQL fixture of the end-to-end tests: a repository with a human and a machine
//! key, and a primary that archives into it with `lifeboat pg wal-push`, everything owned by
//! and run as the `postgres` OS user (the tests run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat_testkit::postgres::{as_owner, give_to_owner, owner_tempdir};
use lifeboat_testkit::PgServer;

use super::stderr;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
/// The source name every test uses.
pub const SOURCE: &str = "orders";

/// Polls `cond` with a deadline (never a fixed sleep).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A repository (with a human and a machine key) and an archiving primary with an
/// `orders(id int primary key, note text)` table.
pub struct Shop {
    pub dir: tempfile::TempDir,
    pub pg: PgServer,
}

impl Shop {
    /// `archive_command` pushing synchronously into the shop in `dir`.
    pub fn archive_command(dir: &Path) -> String {
        format!(
            "archive_command = '{BIN} pg wal-push --source {SOURCE} --repo {} --password-file {} %p'",
            dir.join("repo").display(),
            dir.join("machine.key").display()
        )
    }

    /// A shop archiving synchronously.
    pub fn new() -> Shop {
        Self::with_archive(Self::archive_command)
    }

    /// A shop whose primary archives asynchronously through a spool in the shop's dir.
    pub fn new_async() -> Shop {
        Self::with_archive(|dir| {
            format!(
                "archive_command = '{BIN} pg wal-push --async --spool {} --source {SOURCE} --repo {} --password-file {} %p'",
                dir.join("spool").display(),
                dir.join("repo").display(),
                dir.join("machine.key").display()
            )
        })
    }

    fn with_archive(archive_command: fn(&Path) -> String) -> Shop {
        let dir = owner_tempdir("lifeboat-shop-").unwrap();
        std::fs::write(
            dir.path().join("human.pw"),
            "correct horse battery staple\n",
        )
        .unwrap();
        give_to_owner(dir.path()).unwrap();
        let run = |args: &[&str]| {
            let o = as_owner(BIN)
                .env("LIFEBOAT_INSECURE_KDF_FOR_TESTS", "1") // --kdf-memory 1MiB
                .arg("--repo")
                .arg(dir.path().join("repo"))
                .arg("--password-file")
                .arg(dir.path().join("human.pw"))
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        };
        run(&["init", "--kdf-memory", "1MiB", "--pack-size", "4MiB"]);
        run(&[
            "key",
            "add",
            "--generate",
            dir.path().join("machine.key").to_str().unwrap(),
        ]);
        let archive = archive_command(dir.path());
        let pg = PgServer::start(&["archive_mode = on", &archive]).unwrap();
        pg.sql("create table orders(id int primary key, note text)")
            .unwrap();
        Shop { dir, pg }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("machine.key")
    }

    /// `lifeboat ARGS` as the cluster owner with this shop's repository and machine key.
    pub fn lb(&self, args: &[&str]) -> Output {
        self.with_repo(as_owner(BIN), args)
    }

    /// `lifeboat ARGS` as root.
    pub fn lb_root(&self, args: &[&str]) -> Output {
        self.with_repo(Command::new(BIN), args)
    }

    fn with_repo(&self, mut cmd: Command, args: &[&str]) -> Output {
        cmd.env_remove("LIFEBOAT_PASSWORD")
            .arg("--repo")
            .arg(self.repo())
            .arg("--password-file")
            .arg(self.key())
            .args(args)
            .output()
            .unwrap()
    }

    /// `lifeboat ARGS`, asserting exit 0; returns stdout.
    pub fn lb_ok(&self, args: &[&str]) -> String {
        let o = self.lb(args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} exited {:?}: {}",
            o.status.code(),
            stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A base backup; its `--json` report.
    pub fn backup(&self) -> serde_json::Value {
        let out = self.lb_ok(&[
            "pg",
            "backup",
            "--source",
            SOURCE,
            "--dsn",
            &self.pg.dsn(),
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// Inserts order `id`.
    pub fn insert(&self, id: u32) {
        self.pg
            .sql(&format!("insert into orders values ({id}, 'order {id}')"))
            .unwrap();
    }

    /// The server's clock now, RFC 3339 in UTC.
    pub fn now(&self) -> String {
        self.pg
            .sql(
                "select to_char(clock_timestamp() at time zone 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            )
            .unwrap()
    }

    /// Switches this shop's primary to a new WAL segment and waits until the old one is
    /// archived; returns its name.
    pub fn archive_now(&self) -> String {
        archive_now(&self.pg)
    }

    /// `pg restore ARGS` into a new directory; starts the result and returns it once it
    /// accepts queries (promoted, or paused at the target).
    pub fn restore_and_start(&self, args: &[&str]) -> PgServer {
        let target = owner_tempdir("lifeboat-restore-").unwrap();
        let data = target.path().join("data");
        let mut a = vec!["pg", "restore", "--source", SOURCE, "--target"];
        let d = data.to_str().unwrap().to_string();
        a.push(&d);
        a.extend_from_slice(args);
        self.lb_ok(&a);
        // The restored cluster must not archive into the shop's source.
        let server = PgServer::adopt(&data, &["archive_mode = off"]).unwrap();
        wait_until("recovery to finish or pause", || {
            server
                .sql(
                    "select case when pg_is_in_recovery() \
                     then pg_get_wal_replay_pause_state() else 'done' end",
                )
                .is_ok_and(|s| s == "done" || s == "paused")
        });
        server
    }
}

/// Switches `server` to a new WAL segment and waits until the old one is archived; returns
/// its name.
pub fn archive_now(server: &PgServer) -> String {
    let seg = server
        .sql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    server.sql("select pg_switch_wal()").unwrap();
    wait_until(&format!("{seg} archived"), || {
        server
            .sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
            .is_ok_and(|last| last.as_str() >= seg.as_str())
    });
    seg
}

/// The ids of `orders`, comma-separated, in order.
pub fn ids(server: &PgServer) -> String {
    server
        .sql("select coalesce(string_agg(id::text, ',' order by id), '') from orders")
        .unwrap()
}
