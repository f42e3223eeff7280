//! The parts the embedded daemon and the etcd agent start the same way: the proxy's ports,
//! the API's listener and server, and the first status snapshot.
//!
//! Starting only; never a decision about the cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use lifeboat_config::{Config, FailoverMode, Replication};
use lifeboat_traffic::{Counters, Port, ProxyOptions, Role, Route};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::daemon::Error;
use crate::status::{CoordinatorStatus, MemberStatus, ProxyStatus, Status};

/// The proxy's bound ports: where writes and reads are accepted, and their counters.
pub(crate) struct Proxy {
    pub(crate) write: Option<SocketAddr>,
    pub(crate) read: Option<SocketAddr>,
    pub(crate) counters: Vec<Arc<Counters>>,
}

/// Binds `[proxy] listen` and `read_listen` and serves them until `shutdown`: one
/// current-thread runtime per CPU on its own thread, each accepting on its own
/// `SO_REUSEPORT` listener, so a connection lives on the thread that accepted it (the
/// setup ADR 0020 measured against HAProxy). The workers' runtimes end with `shutdown`,
/// closing every connection they carry.
pub(crate) async fn start_proxy(
    config: &Config,
    routes: &watch::Receiver<Route>,
    shutdown: &CancellationToken,
) -> Result<Proxy, Error> {
    let wanted = [
        (Role::Write, config.proxy.listen),
        (Role::Read, config.proxy.read_listen),
    ];
    if wanted.iter().all(|(_, a)| a.is_none()) {
        return Ok(Proxy {
            write: None,
            read: None,
            counters: Vec::new(),
        });
    }
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = start_workers(n, shutdown)?;
    let mut bound = [None, None];
    let mut counters = Vec::new();
    for (slot, (role, addr)) in wanted.into_iter().enumerate() {
        let Some(addr) = addr else { continue };
        let group = Port::bind_reuseport(
            role,
            addr,
            routes.clone(),
            ProxyOptions::default(),
            &workers,
        )?;
        if let Some(first) = group.first() {
            bound[slot] = Some(first.local_addr());
            counters.push(first.counters());
        }
        for (port, worker) in group.into_iter().zip(&workers) {
            worker.spawn(port.serve());
        }
    }
    Ok(Proxy {
        write: bound[0],
        read: bound[1],
        counters,
    })
}

/// `n` current-thread runtimes, each on its own thread until `shutdown`.
fn start_workers(
    n: usize,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::runtime::Handle>, Error> {
    (0..n)
        .map(|i| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::ProxyWorkers(format!("runtime {i}: {e}")))?;
            let handle = rt.handle().clone();
            let stop = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || rt.block_on(stop.cancelled()))
                .map_err(|e| Error::ProxyWorkers(format!("thread {i}: {e}")))?;
            Ok(handle)
        })
        .collect()
}

/// Binds `[api] listen`.
pub(crate) async fn bind_api(
    config: &Config,
) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let addr = config.api.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Api { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Api { addr, source })?;
    Ok((listener, local))
}

/// Serves the API on `listener` until `shutdown`.
pub(crate) fn serve_api(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) {
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!("API stopped: {e}");
        }
    });
}

/// The status before the first probe: the config's members, the coordinator, the ports.
pub(crate) fn base_status(
    config: &Config,
    coordinator: CoordinatorStatus,
    proxy: &Proxy,
    api: SocketAddr,
) -> Status {
    let cluster = &config.cluster;
    Status {
        cluster: cluster.name.clone(),
        replication: match cluster.replication {
            Replication::Sync => "sync",
            Replication::Async => "async",
        }
        .into(),
        failover: match cluster.failover {
            FailoverMode::Automatic => "automatic",
            FailoverMode::Manual => "manual",
        }
        .into(),
        coordinator,
        proxy: ProxyStatus {
            write: proxy.write.map(|a| a.to_string()),
            read: proxy.read.map(|a| a.to_string()),
            ..ProxyStatus::default()
        },
        api: api.to_string(),
        members: cluster
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                address: format!("{}:{}", m.host, m.port),
                data_dir: m.data_dir.display().to_string(),
                role: "unknown".into(),
                state: "unknown".into(),
                ..MemberStatus::default()
            })
            .collect(),
        ..Status::default()
    }
}
