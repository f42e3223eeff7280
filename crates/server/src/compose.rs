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

/// Binds `[proxy] listen` and `read_listen` and serves them until `shutdown`.
pub(crate) async fn start_proxy(
    config: &Config,
    routes: &watch::Receiver<Route>,
    shutdown: &CancellationToken,
) -> Result<Proxy, Error> {
    let mut ports = Vec::new();
    let mut bound = [None, None];
    for (slot, (role, addr)) in [
        (Role::Write, config.proxy.listen),
        (Role::Read, config.proxy.read_listen),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(addr) = addr {
            let p = Port::bind(role, addr, routes.clone(), ProxyOptions::default()).await?;
            bound[slot] = Some(p.local_addr());
            ports.push(p);
        }
    }
    let counters = ports.iter().map(Port::counters).collect();
    for p in ports {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = p.serve() => {}
                () = stop.cancelled() => {}
            }
        });
    }
    Ok(Proxy {
        write: bound[0],
        read: bound[1],
        counters,
    })
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
