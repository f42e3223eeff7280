//! The Lifeboat proxy standalone, with a fixed route (for benchmarks until the daemon runs
//! it behind the failover controller).
//!
//! ```text
//! proxy --listen ADDR --primary ADDR [--read-listen ADDR --replica ADDR...]
//!       [--workers N | --threads N] [--hold-ms MS] [--buffer BYTES]
//! ```
//!
//! By default the proxy runs as the daemon should run it (ADR 0020): one current-thread
//! runtime per CPU (`--workers N` to choose), each on its own thread and accepting on its own
//! `SO_REUSEPORT` listener, so a connection never leaves the thread that accepted it.
//! `--threads N` runs everything on one runtime instead, for comparison: a current-thread
//! runtime for 1, a multi-thread runtime with N workers otherwise. It runs until SIGINT or
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
    /// One runtime for everything (`--threads`): 1 = current-thread, more = multi-thread.
    threads: Option<usize>,
    /// `SO_REUSEPORT` workers (`--workers`, default: one per CPU).
    workers: usize,
    options: ProxyOptions,
}

const USAGE: &str = "usage: proxy --listen ADDR --primary ADDR [--read-listen ADDR --replica ADDR...] [--workers N | --threads N] [--hold-ms MS] [--buffer BYTES]";

fn parse() -> Result<Args, String> {
    let mut listen = None;
    let mut primary = None;
    let mut read_listen = None;
    let mut replicas = Vec::new();
    let mut threads = None;
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
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
            "--threads" => threads = Some(num(value()?)?.max(1) as usize),
            "--workers" => workers = num(value()?)?.max(1) as usize,
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
        workers,
        options,
    })
}

/// `n` current-thread runtimes, each parked on its own thread until the process exits.
fn start_workers(n: usize) -> Result<Vec<tokio::runtime::Handle>, String> {
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
    let workers = match args.threads {
        Some(_) => Vec::new(),
        None => start_workers(args.workers)?,
    };
    let (tx, rx) = tokio::sync::watch::channel(Route {
        generation: 1,
        primary: Some(args.primary),
        replicas: args.replicas.clone(),
    });
    let mut ports = vec![(Role::Write, args.listen)];
    ports.extend(args.read_listen.map(|a| (Role::Read, a)));
    let mut counters = Vec::new();
    for (role, addr) in ports {
        if workers.is_empty() {
            let port = Port::bind(role, addr, rx.clone(), args.options.clone())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("proxy: {role:?} port on {}", port.local_addr());
            counters.push((role, port.counters()));
            tokio::spawn(port.serve());
            continue;
        }
        let group = Port::bind_reuseport(role, addr, rx.clone(), args.options.clone(), &workers)
            .map_err(|e| e.to_string())?;
        if let Some(first) = group.first() {
            eprintln!(
                "proxy: {role:?} port on {} ({} workers, SO_REUSEPORT)",
                first.local_addr(),
                group.len()
            );
            counters.push((role, first.counters()));
        }
        for (port, worker) in group.into_iter().zip(&workers) {
            worker.spawn(port.serve());
        }
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
    // The main runtime runs everything with --threads; otherwise it only binds the ports
    // and waits for the signal while the workers forward.
    let mut builder = match args.threads {
        Some(n) if n > 1 => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
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
