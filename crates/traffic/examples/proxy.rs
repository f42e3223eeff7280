//! The Lifeboat proxy standalone, with a fixed route (for benchmarks until the daemon runs
//! it behind the failover controller).
//!
//! ```text
//! proxy --listen ADDR --primary ADDR [--read-listen ADDR --replica ADDR...]
//!       [--threads N | --pinned N | --reuseport N] [--hold-ms MS] [--buffer BYTES]
//! ```
//!
//! `--threads 1` (the default) runs the proxy on a current-thread runtime, `N > 1` on a
//! multi-thread runtime with N workers; `--pinned N` accepts on a current-thread runtime and
//! hands each connection to one of N current-thread runtimes on their own threads, round
//! robin; `--reuseport N` runs N current-thread runtimes on their own threads, each accepting
//! on its own `SO_REUSEPORT` listener (ADR 0020 compares them). It runs until SIGINT or
//! SIGTERM and then prints each port's counters to stderr.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use lifeboat_traffic::{Port, ProxyOptions, Role, Route};

struct Args {
    listen: SocketAddr,
    primary: SocketAddr,
    read_listen: Option<SocketAddr>,
    replicas: Vec<SocketAddr>,
    threads: usize,
    pinned: usize,
    reuseport: usize,
    options: ProxyOptions,
}

const USAGE: &str = "usage: proxy --listen ADDR --primary ADDR [--read-listen ADDR --replica ADDR...] [--threads N | --pinned N] [--hold-ms MS] [--buffer BYTES]";

fn parse() -> Result<Args, String> {
    let mut listen = None;
    let mut primary = None;
    let mut read_listen = None;
    let mut replicas = Vec::new();
    let mut threads = 1;
    let mut pinned = 0;
    let mut reuseport = 0;
    let mut options = ProxyOptions::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let addr = |v: String| -> Result<SocketAddr, String> {
            v.parse().map_err(|e| format!("{flag} {v}: {e}"))
        };
        let num = |v: String| -> Result<u64, String> {
            v.parse().map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr(value()?)?),
            "--primary" => primary = Some(addr(value()?)?),
            "--read-listen" => read_listen = Some(addr(value()?)?),
            "--replica" => replicas.push(addr(value()?)?),
            "--threads" => threads = num(value()?)?.max(1) as usize,
            "--pinned" => pinned = num(value()?)? as usize,
            "--reuseport" => reuseport = num(value()?)? as usize,
            "--hold-ms" => options = options.with_hold(Duration::from_millis(num(value()?)?)),
            "--buffer" => options = options.with_buffer_size(num(value()?)? as usize),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        primary: primary.ok_or_else(|| format!("--primary is required\n{USAGE}"))?,
        read_listen,
        replicas,
        threads,
        pinned,
        reuseport,
        options,
    })
}

/// `n` current-thread runtimes, each parked on its own thread until the process exits.
fn pinned_workers(n: usize) -> Result<Vec<tokio::runtime::Handle>, String> {
    (0..n)
        .map(|i| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("build worker runtime {i}: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("start worker thread {i}: {e}"))?;
            Ok(handle)
        })
        .collect()
}

async fn run(args: Args) -> Result<(), String> {
    let workers = pinned_workers(args.pinned)?;
    let reuse_workers = pinned_workers(args.reuseport)?;
    let (tx, rx) = tokio::sync::watch::channel(Route {
        generation: 1,
        primary: Some(args.primary),
        replicas: args.replicas.clone(),
    });
    let mut ports = vec![(Role::Write, args.listen)];
    ports.extend(args.read_listen.map(|a| (Role::Read, a)));
    let mut counters = Vec::new();
    for (role, addr) in ports {
        if !reuse_workers.is_empty() {
            let group =
                Port::bind_reuseport(role, addr, rx.clone(), args.options.clone(), &reuse_workers)
                    .map_err(|e| e.to_string())?;
            if let Some(first) = group.first() {
                eprintln!(
                    "proxy: {role:?} port on {} ({} SO_REUSEPORT listeners)",
                    first.local_addr(),
                    group.len()
                );
                counters.push((role, first.counters()));
            }
            for (port, worker) in group.into_iter().zip(&reuse_workers) {
                worker.spawn(port.serve());
            }
            continue;
        }
        let port = Port::bind(role, addr, rx.clone(), args.options.clone())
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("proxy: {role:?} port on {}", port.local_addr());
        counters.push((role, port.counters()));
        let workers = workers.clone();
        tokio::spawn(async move { port.serve_on(&workers).await });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("install SIGTERM handler: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("wait for SIGINT: {e}"))?,
    }
    for (role, c) in counters {
        eprintln!("proxy: {role:?} port counters: {:?}", c.snapshot());
    }
    drop(tx);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: build the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}
