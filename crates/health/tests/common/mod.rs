//! Helpers shared by the real-server tests: targets for testkit servers, polling with a
//! deadline, and pausing a PostgreSQL server's whole process tree.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use lifeboat_health::{Observation, Prober, Target};
use rustix::process::{Pid, Signal};
use tokio::time::Instant;

/// A PostgreSQL target for a testkit server on 127.0.0.1.
pub fn pg_target(port: u16) -> Target {
    Target::Postgres {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        dbname: "postgres".into(),
        password: None,
    }
}

/// The port of a testkit stub (`http://127.0.0.1:PORT`).
pub fn stub_port(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("stub endpoint ends with a port")
}

/// Calls `f` until it returns `Some`, every 20 ms, failing the test after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Probes until an observation satisfies `want`; returns it.
pub async fn probe_until(
    prober: &mut Prober,
    what: &str,
    limit: Duration,
    want: impl Fn(&Observation) -> bool,
) -> Observation {
    let deadline = Instant::now() + limit;
    loop {
        let last = prober.probe().await;
        if want(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}; last observation: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pid`'s children, from the ppid field of /proc/*/stat.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // A child that exited meanwhile is fine.
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// SIGSTOPs the postmaster, then every child of it (it cannot fork new ones while
/// stopped); returns the pids stopped.
pub fn stop_tree(postmaster: u32) -> Vec<u32> {
    signal(postmaster, Signal::STOP);
    let mut stopped = vec![postmaster];
    // Twice: a fork that was completing when the postmaster stopped shows up late.
    for _ in 0..2 {
        for c in children_of(postmaster) {
            if !stopped.contains(&c) {
                signal(c, Signal::STOP);
                stopped.push(c);
            }
        }
    }
    stopped
}

/// SIGCONTs the processes [`stop_tree`] stopped, children first.
pub fn cont_tree(stopped: &[u32]) {
    for &p in stopped.iter().rev() {
        signal(p, Signal::CONT);
    }
}

/// SIGKILLs one process.
pub fn sigkill(pid: u32) {
    signal(pid, Signal::KILL);
}

/// Whether `pid` is gone (or a zombie nobody reaped).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Median of durations (sorted copy).
pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}
