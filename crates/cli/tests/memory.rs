//! Memory stays bounded by design: backing up far more data than the bound does not raise
//! peak memory above it.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;

/// Peak resident set (VmHWM) of a running process, in KiB.
fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_400_mib_stream_backs_up_in_under_100_mib_of_memory() {
    let env = Env::new();
    env.init();
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "big.sql",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(k) = hwm_kib(pid) {
                    peak.fetch_max(k, Ordering::Relaxed);
                }
                std::thread::park_timeout(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    // 400 MiB: alternating compressible text and incompressible noise, 4 MiB at a time.
    for i in 0..100u64 {
        let block = if i % 2 == 0 {
            text(4 << 20, i)
        } else {
            noise(4 << 20, i)
        };
        stdin.write_all(&block).unwrap();
    }
    drop(stdin);
    // Sample until the process is about to be reaped: wait() would free its /proc entry.
    while child.try_wait().unwrap().is_none() {
        if let Some(k) = hwm_kib(pid) {
            peak.fetch_max(k, Ordering::Relaxed);
        }
        std::thread::park_timeout(std::time::Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    assert!(peak_mib > 0, "could not sample the process");
    assert!(
        peak_mib < 100,
        "peak memory {peak_mib} MiB for a 400 MiB stream"
    );
    eprintln!("peak memory {peak_mib} MiB for a 400 MiB stream");
    // And the data is all there.
    let o = env.run(&["dump", "latest:big.sql"]);
    assert_eq!(o.stdout.len(), 400 << 20);
}
