//! A full disk on the standby: its pg_wal lives on a small tmpfs that the test fills while
//! the writer runs. What happens must show in status and alerts, and when the primary is
//! then killed, the standby that lacks acknowledged writes must not be promoted. Needs
//! root (mount); skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{holds_for, missing_on, postmaster_pid, signal, wait_status, Estate, Writer};

/// A tmpfs mounted by this test, unmounted when dropped (also after a failure), wherever
/// it was moved (a re-clone sets the old data directory aside, mount and all).
struct Tmpfs {
    source: String,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let source = format!("lifeboat-test-{}", std::process::id());
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                &source,
            ])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { source })
    }

    fn mount_points(&self) -> Vec<PathBuf> {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(self.source.as_str()))
                    .then(|| PathBuf::from(f.next().unwrap_or("")))
            })
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for p in self.mount_points() {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_disk_on_the_standby_is_reported_and_it_is_never_promoted_without_the_acknowledged_writes()
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(full_disk());
    // The daemon's repair of m2 may still wait for it to stream (up to a minute): it is
    // left behind, its servers are gone.
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn full_disk() {
    let estate = Estate::new(2, "");
    let walfs_dir = estate.root.join("m2-wal");
    // Unmounted lazily when dropped, even while a server still has it open.
    let tmpfs = match Tmpfs::mount(&walfs_dir, "256M") {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED: cannot mount a tmpfs (root needed): {e}");
            return;
        }
    };
    estate.bootstrap().await;

    // m2's pg_wal onto the tmpfs (a symlink, as initdb -X makes it).
    let config = estate.config();
    let pg = lifeboat_server::bootstrap::pg_for(&config, None);
    let members = lifeboat_server::bootstrap::members_of(&config);
    let m2 = members.iter().find(|m| m.name == "m2").unwrap();
    tokio::task::block_in_place(|| {
        pg.stop(m2, lifeboat_postgres::cluster::StopMode::Fast)
            .unwrap();
        let wal = estate.data_dir(2).join("pg_wal");
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", wal.display()))
            .arg(&walfs_dir));
        run(Command::new("chown")
            .arg("--reference")
            .arg(estate.data_dir(2))
            .arg(&walfs_dir));
        std::fs::remove_dir_all(&wal).unwrap();
        std::os::unix::fs::symlink(&walfs_dir, &wal).unwrap();
        pg.start(m2).unwrap();
    });
    let daemon = estate.daemon().await;
    let writer = Writer::start(daemon.write_addr().unwrap());
    writer.wait_acked(50, 20).await;
    let g0 = daemon.status().coordinator.generation;

    // Fill it, then make the standby need a new WAL segment.
    let filled = Instant::now();
    let mut bytes = 0u64;
    {
        let mut f = std::fs::File::create(walfs_dir.join("filler")).unwrap();
        let chunk = vec![0x55u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {
            bytes += chunk.len() as u64;
        }
        let _ = f.sync_all();
    }
    println!("filled m2's pg_wal tmpfs with {} MiB", bytes >> 20);
    let dsn1 = estate.dsn(1);
    tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(&dsn1, postgres::NoTls).unwrap();
        c.batch_execute("select pg_switch_wal()").unwrap();
    });

    // Reported: m2 no longer streams, commits are no longer replicated.
    let s = wait_status(&daemon, "m2's trouble reported", 30, |s| {
        s.alerts
            .iter()
            .any(|a| a.message.contains("no standby is streaming"))
            && s.members.iter().any(|m| m.name == "m2" && !m.streaming)
    })
    .await;
    let reported = filled.elapsed();
    let m2s = s.members.iter().find(|m| m.name == "m2").unwrap();
    println!(
        "{:.3} s after the fill: m2 {} {} streaming={} lag {:?} B, last error {:?}; alerts {:#?}",
        reported.as_secs_f64(),
        m2s.role,
        m2s.state,
        m2s.streaming,
        m2s.lag_bytes,
        m2s.last_error,
        s.alerts.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
    let log = std::fs::read_to_string(m2.log_path()).unwrap_or_default();
    let enospc: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("No space left"))
        .take(2)
        .collect();
    println!("m2's server log: {enospc:?}");
    // The primary keeps taking writes (acknowledged by itself alone now).
    let t = Instant::now();
    let back = writer
        .wait_acked_after(filled, 30, &|| format!("{:#?}", daemon.status()))
        .await;
    writer.wait_acked(20, 20).await;
    println!(
        "writes acknowledged again {:.3} s after the fill (waited {:.3} s here)",
        back.duration_since(filled).as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // The primary dies: m2 lacks acknowledged writes, so it must not be promoted.
    let acked_before_kill: Vec<i64> = writer
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    let killed = Instant::now();
    signal(postmaster_pid(&estate.data_dir(1)).unwrap(), "KILL");
    let s = wait_status(&daemon, "the primary's loss reported", 10, |s| {
        s.members
            .iter()
            .any(|m| m.name == "m1" && m.state == "down")
    })
    .await;
    println!(
        "{:.3} s after the kill: phase {}, reason {:?}, failover target {:?}",
        killed.elapsed().as_secs_f64(),
        s.phase,
        s.reason,
        s.failover_target
    );
    let promoted = |s: &lifeboat_server::Status| s.primary.as_deref() == Some("m2");
    let mut rx = daemon.watch_status();
    let until = Instant::now() + Duration::from_secs(3);
    let mut went_to_m2 = false;
    while Instant::now() < until {
        if promoted(&rx.borrow_and_update()) {
            went_to_m2 = true;
            break;
        }
        let _ = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            rx.changed(),
        )
        .await;
    }
    if went_to_m2 {
        // Only safe if it holds every acknowledged write.
        let missing = missing_on(&estate.dsn(2), &acked_before_kill);
        assert!(
            missing.is_empty(),
            "m2 was promoted without {} acknowledged writes: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        println!("m2 was promoted, and holds every acknowledged write");
    } else {
        holds_for(&daemon, Duration::ZERO, "no promotion", |s| {
            s.coordinator.generation == g0 && s.phase == "awaiting_approval"
        })
        .await;
        // What promoting it would have lost.
        let dsn2 = estate.dsn(2);
        let on_m2 = tokio::task::block_in_place(|| {
            postgres::Client::connect(&dsn2, postgres::NoTls)
                .and_then(|mut c| c.query("select id from orders", &[]))
                .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        match on_m2 {
            Ok(ids) => println!(
                "m2 lacks {} of the {} acknowledged writes: promoting it would have lost them",
                acked_before_kill
                    .iter()
                    .filter(|i| !ids.contains(i))
                    .count(),
                acked_before_kill.len()
            ),
            Err(e) => println!("m2 cannot be read: {}", common::why(&e)),
        }
        let s = daemon.status();
        println!(
            "not promoted 3 s after the kill: phase {}, reason {:?}; last alert {:?}",
            s.phase,
            s.reason,
            s.alerts.last().map(|a| &a.message)
        );
    }
    let w = writer.finish();
    println!(
        "{} writes acknowledged, {} failed statements or connects, longest gap {:.3} s",
        w.ids.len(),
        w.errors,
        w.max_gap.as_secs_f64()
    );
    let t = Instant::now();
    daemon.stop().await;
    drop(estate);
    drop(tmpfs);
    println!(
        "stopped and cleaned up in {:.3} s",
        t.elapsed().as_secs_f64()
    );
}
