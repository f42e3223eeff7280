//! [`Port`]: one listening port of the proxy, and the life of each client connection on it
//! (hold while there is no backend, connect, copy bytes both ways, close on a switch).
//!
//! Lives here: the accept loop, target choice (the primary; standbys round robin), the
//! bounded backend connect, the copy, and the close when the [`Route`] moves away from a
//! connection's backend. Never here: parsing the PostgreSQL protocol, logging or keeping
//! forwarded bytes, per-byte work beyond the copy itself, or choosing the runtime (the
//! caller does; ADR 0020 says which one and why).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metrics::Counters;
use crate::{Error, Route};

/// Which backends a [`Port`] forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every connection goes to [`Route::primary`]; a change of primary or generation closes
    /// the connections to the old one.
    Write,
    /// Connections are balanced round robin over [`Route::replicas`]; a standby whose
    /// connect fails is skipped. With no standby listed, or none reachable, a connection
    /// falls back to the primary (reads still work while every standby is down; the
    /// connection then lives by the write port's rule and closes with the primary's
    /// generation). A standby's connections close when it leaves the list.
    Read,
}

impl Role {
    fn wants(self) -> &'static str {
        match self {
            Role::Write => "primary",
            Role::Read => "standby or primary",
        }
    }
}

/// The knobs of a [`Port`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyOptions {
    /// How long a new client waits while the route has no backend for it (during a
    /// failover) before it is closed. Default 5 s.
    pub hold: Duration,
    /// How long a backend may take to accept a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// The copy buffer of each direction of each connection, in bytes (allocated once per
    /// connection). Default 16 KiB; PostgreSQL sends at most 8 KiB per write.
    pub buffer_size: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            hold: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            buffer_size: 16 * 1024,
        }
    }
}

impl ProxyOptions {
    /// These options with another [`hold`](ProxyOptions::hold).
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// These options with another [`connect_timeout`](ProxyOptions::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// These options with another [`buffer_size`](ProxyOptions::buffer_size) (at least 1).
    pub fn with_buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(1);
        self
    }
}

/// What every connection task of a port shares.
#[derive(Debug)]
struct Shared {
    role: Role,
    options: ProxyOptions,
    counters: Arc<Counters>,
    /// The read port's round-robin position.
    next: AtomicUsize,
}

/// One listening port of the proxy: bound by [`Port::bind`], run by [`Port::serve`].
#[derive(Debug)]
pub struct Port {
    listener: TcpListener,
    local: SocketAddr,
    routes: watch::Receiver<Route>,
    shared: Arc<Shared>,
}

impl Port {
    /// Binds `addr` for `role`; new connections follow the newest value on `routes`.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound (in use, not local, no permission);
    /// [`Error::LocalAddr`] when the bound socket cannot tell its address.
    pub async fn bind(
        role: Role,
        addr: SocketAddr,
        routes: watch::Receiver<Route>,
        options: ProxyOptions,
    ) -> Result<Port, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Port::from_listener(role, listener, routes, options)
    }

    /// Binds `addr` once for each of `workers` with `SO_REUSEPORT` (the kernel spreads new
    /// connections over the listeners) and returns one port per worker, in order, sharing one
    /// set of [`Counters`] and one round-robin position. Each listener is registered with its
    /// worker's reactor: run each port's [`Port::serve`] on its worker (`worker.spawn(..)`),
    /// so a connection lives on the thread that accepted it, with nothing handed over,
    /// stolen or woken across threads. With port 0 the first listener picks the port and the
    /// others join it. No workers, no ports.
    ///
    /// `SO_REUSEPORT` would also let a second process of the same user share the port (a
    /// stale daemon with a stale route): before binding, a plain probe bind checks that
    /// nothing listens on `addr` yet.
    ///
    /// # Errors
    /// [`Error::Bind`] when something already listens on `addr` or a listener cannot be
    /// created or bound; [`Error::LocalAddr`] as in [`Port::bind`].
    pub fn bind_reuseport(
        role: Role,
        addr: SocketAddr,
        routes: watch::Receiver<Route>,
        options: ProxyOptions,
        workers: &[tokio::runtime::Handle],
    ) -> Result<Vec<Port>, Error> {
        let shared = Arc::new(Shared {
            role,
            options,
            counters: Arc::new(Counters::default()),
            next: AtomicUsize::new(0),
        });
        let new_socket = |addr: SocketAddr| {
            if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
        };
        if addr.port() != 0 && !workers.is_empty() {
            // SO_REUSEADDR lets the probe past our own TIME_WAIT connections (a restart),
            // not past a listener.
            let probe = new_socket(addr).map_err(|source| Error::Bind { addr, source })?;
            probe
                .set_reuseaddr(true)
                .and_then(|()| probe.bind(addr))
                .map_err(|source| Error::Bind { addr, source })?;
        }
        let mut addr = addr;
        let mut ports = Vec::with_capacity(workers.len());
        for worker in workers {
            let bind_err = |source| Error::Bind { addr, source };
            let socket = new_socket(addr).map_err(bind_err)?;
            socket.set_reuseaddr(true).map_err(bind_err)?;
            socket.set_reuseport(true).map_err(bind_err)?;
            socket.bind(addr).map_err(bind_err)?;
            let listener = {
                let _in_worker = worker.enter();
                socket.listen(1024).map_err(bind_err)?
            };
            let local = listener
                .local_addr()
                .map_err(|source| Error::LocalAddr { source })?;
            addr = local;
            ports.push(Port {
                listener,
                local,
                routes: routes.clone(),
                shared: Arc::clone(&shared),
            });
        }
        Ok(ports)
    }

    /// Like [`Port::bind`] on a listener the caller bound (e.g. passed by systemd).
    ///
    /// # Errors
    /// [`Error::LocalAddr`] when the socket cannot tell its address.
    pub fn from_listener(
        role: Role,
        listener: TcpListener,
        routes: watch::Receiver<Route>,
        options: ProxyOptions,
    ) -> Result<Port, Error> {
        let local = listener
            .local_addr()
            .map_err(|source| Error::LocalAddr { source })?;
        Ok(Port {
            listener,
            local,
            routes,
            shared: Arc::new(Shared {
                role,
                options,
                counters: Arc::new(Counters::default()),
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The address the port listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The port's counters; they stay readable after [`Port::serve`] took the port.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// Accepts clients and forwards each on its own task until the route's sender is
    /// dropped; then it stops accepting and returns, and every open connection closes.
    ///
    /// Each client is forwarded to the backend the route names when it arrives (held while
    /// there is none, up to [`ProxyOptions::hold`]); it is closed, on both sides, as soon as
    /// the route no longer names its backend (see [`Role`]). Failures of one connection
    /// (a refused backend, a reset) are logged at DEBUG, counted, and end that connection
    /// only; a failing `accept` (out of file descriptors) is logged at WARN and retried.
    ///
    /// # Cancellation
    /// Dropping the returned future stops accepting; connections already accepted keep
    /// running until they end, their backend leaves the route, or the sender is dropped.
    pub async fn serve(self) {
        let Port {
            listener,
            local,
            mut routes,
            shared,
        } = self;
        info!(port = %local, role = ?shared.role, route = ?*routes.borrow(), "proxy port listening");
        loop {
            tokio::select! {
                biased;
                changed = routes.changed() => {
                    if changed.is_err() {
                        info!(port = %local, "route publisher gone: proxy port stops");
                        return;
                    }
                    let route = routes.borrow_and_update();
                    info!(port = %local, generation = route.generation, primary = ?route.primary,
                        replicas = ?route.replicas, "route changed");
                }
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        tokio::spawn(connection(client, peer, routes.clone(), Arc::clone(&shared)));
                    }
                    Err(e) => {
                        // EMFILE and friends: give the runtime a moment rather than spin.
                        warn!(port = %local, error = %e, "accept failed; retrying in 50 ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

/// The whole life of one client connection.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    mut routes: watch::Receiver<Route>,
    shared: Arc<Shared>,
) {
    let _active = shared.counters.accepted();
    if let Err(e) = forward(client, peer, &mut routes, &shared).await {
        debug!(client = %peer, error = %e, "client connection ended");
    }
}

/// Where one connection went, and the rule that keeps it open.
#[derive(Debug, Clone, Copy)]
struct Forwarded {
    target: SocketAddr,
    /// A read-port connection that went to the primary.
    fallback: bool,
    generation: u64,
}

impl Forwarded {
    fn kept_by(&self, role: Role, route: &Route) -> bool {
        match role {
            Role::Write => route.keeps_write(self.target, self.generation),
            Role::Read => route.keeps_read(self.target, self.fallback, self.generation),
        }
    }
}

async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    routes: &mut watch::Receiver<Route>,
    shared: &Shared,
) -> Result<(), Error> {
    let (mut backend, fwd) = connect(routes, shared).await?;
    // Small request/response messages must not wait for Nagle's algorithm on either hop.
    // A failure here only costs latency, so it is logged, not fatal.
    for (side, s) in [("client", &client), ("backend", &backend)] {
        if let Err(e) = s.set_nodelay(true) {
            debug!(client = %peer, side, error = %e, "TCP_NODELAY not set");
        }
    }
    let connected = shared.counters.forwarded(fwd.target);
    let size = shared.options.buffer_size;
    let forward_err = |source| Error::Forward {
        client: peer,
        target: fwd.target,
        source,
    };
    let ended = {
        let (client_rx, mut client_tx) = client.split();
        let (backend_rx, mut backend_tx) = backend.split();
        let mut up = BufReader::with_capacity(size, client_rx);
        let mut down = BufReader::with_capacity(size, backend_rx);
        // The connection ends when either side closes: PostgreSQL has no half-closed
        // connections (a client says Terminate, then closes; a backend that exits has sent its
        // last message), so both sockets close at once instead of shutting down one direction
        // and waiting for the other side's FIN (two system calls and a wake-up per connection).
        // Everything read before the close has been written on: `copy_buf` returns at EOF.
        tokio::select! {
            // The switch check first: once the route has moved away, not one more byte goes
            // to the old backend.
            biased;
            switched = until_dropped(routes, shared.role, fwd) => {
                if switched {
                    shared.counters.closed_on_switch();
                    debug!(client = %peer, target = %fwd.target, "closed: the route moved away from the backend");
                }
                Ok(())
            }
            r = tokio::io::copy_buf(&mut up, &mut backend_tx) => r.map(|_| ()).map_err(forward_err),
            r = tokio::io::copy_buf(&mut down, &mut client_tx) => r.map(|_| ()).map_err(forward_err),
        }
    };
    // Both sockets close (the client and the backend see it at once), then the backend's
    // connected count drops: when it reads 0, nothing is open to that backend any more.
    drop(backend);
    drop(client);
    drop(connected);
    ended
}

/// Resolves when the route no longer keeps `fwd` (`true`) or its sender is gone (`false`).
/// A change that happened while connecting is seen at the first poll.
async fn until_dropped(routes: &mut watch::Receiver<Route>, role: Role, fwd: Forwarded) -> bool {
    loop {
        if routes.changed().await.is_err() {
            return false;
        }
        if !fwd.kept_by(role, &routes.borrow_and_update()) {
            return true;
        }
    }
}

/// The backends a new connection may use, in order.
enum Plan {
    Write {
        primary: SocketAddr,
        generation: u64,
    },
    Read {
        /// Standbys from the round-robin position on.
        standbys: Vec<SocketAddr>,
        primary: Option<SocketAddr>,
        generation: u64,
    },
}

impl Plan {
    /// The plan under `route`, or `None` when it names no backend for `role`.
    fn of(route: &Route, shared: &Shared) -> Option<Plan> {
        match shared.role {
            Role::Write => route.primary.map(|primary| Plan::Write {
                primary,
                generation: route.generation,
            }),
            Role::Read if route.replicas.is_empty() && route.primary.is_none() => None,
            Role::Read => {
                let n = route.replicas.len();
                let start = if n == 0 {
                    0
                } else {
                    shared.next.fetch_add(1, Relaxed) % n
                };
                let mut standbys = Vec::with_capacity(n);
                standbys.extend_from_slice(&route.replicas[start..]);
                standbys.extend_from_slice(&route.replicas[..start]);
                Some(Plan::Read {
                    standbys,
                    primary: route.primary,
                    generation: route.generation,
                })
            }
        }
    }
}

/// Connects to the backend the route names, holding the client while it names none.
async fn connect(
    routes: &mut watch::Receiver<Route>,
    shared: &Shared,
) -> Result<(TcpStream, Forwarded), Error> {
    let hold = shared.options.hold;
    let deadline = Instant::now() + hold;
    let mut holding = None;
    let plan = loop {
        let plan = Plan::of(&routes.borrow_and_update(), shared);
        if let Some(plan) = plan {
            break plan;
        }
        if holding.is_none() {
            holding = Some(shared.counters.holding());
        }
        match tokio::time::timeout_at(deadline, routes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                shared.counters.hold_timeout();
                return Err(Error::NoTarget {
                    what: shared.role.wants(),
                    waited: hold,
                });
            }
        }
    };
    drop(holding);
    let timeout = shared.options.connect_timeout;
    match plan {
        Plan::Write {
            primary,
            generation,
        } => {
            let s = dial(primary, timeout, shared).await?;
            Ok((
                s,
                Forwarded {
                    target: primary,
                    fallback: false,
                    generation,
                },
            ))
        }
        Plan::Read {
            standbys,
            primary,
            generation,
        } => {
            let mut last = None;
            for target in standbys {
                match dial(target, timeout, shared).await {
                    Ok(s) => {
                        let fwd = Forwarded {
                            target,
                            fallback: false,
                            generation,
                        };
                        return Ok((s, fwd));
                    }
                    Err(e) => {
                        debug!(error = %e, "standby skipped");
                        last = Some(e);
                    }
                }
            }
            match primary {
                Some(target) => {
                    let s = dial(target, timeout, shared).await?;
                    let fwd = Forwarded {
                        target,
                        fallback: true,
                        generation,
                    };
                    Ok((s, fwd))
                }
                None => Err(last.unwrap_or(Error::NoTarget {
                    what: shared.role.wants(),
                    waited: Duration::ZERO,
                })),
            }
        }
    }
}

/// One bounded backend connect.
async fn dial(target: SocketAddr, timeout: Duration, shared: &Shared) -> Result<TcpStream, Error> {
    let r = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => return Ok(s),
        Ok(Err(source)) => Error::Connect { target, source },
        Err(_) => Error::ConnectTimeout {
            target,
            after: timeout,
        },
    };
    shared.counters.connect_failure();
    Err(r)
}
