//! The daemon's composition and main loop: probes feed the state machine, the machine's
//! actions go to the executor (steps one at a time, background work beside them), routes
//! to the proxy, alerts to the log and the coordinator's history; a status snapshot is
//! published after every input for the API.
//!
//! One task owns the machine; nothing else mutates it. It must never block that task on a
//! server: all PostgreSQL work runs in the executor.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lifeboat_config::{Config, FailoverMode, Replication};
use lifeboat_coord::{Coordinator, EmbeddedOptions};
use lifeboat_failover::{
    Action, ActionKind, Command, Input, Lane, Machine, Outcome, Phase, Settings,
};
use lifeboat_health::{Monitor, ProbeSettings, Target};
use lifeboat_traffic::Route;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::convert::observation;
use crate::exec::Executor;
use crate::status::{AlertRecord, CoordinatorStatus, Status};

/// How many alerts status keeps.
const ALERTS_KEPT: usize = 50;

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator could not be opened.
    #[error("coordinator: {0}")]
    Coordinator(#[from] lifeboat_coord::Error),
    /// The probes could not start.
    #[error("health checks: {0}")]
    Health(#[from] lifeboat_health::Error),
    /// A proxy port could not be bound.
    #[error("proxy: {0}")]
    Proxy(#[from] lifeboat_traffic::Error),
    /// The proxy's worker threads could not start.
    #[error("proxy workers: {0}")]
    ProxyWorkers(String),
    /// The API could not listen.
    #[error("API on {addr}: {source}; is another daemon running? change [api] listen")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A member's address does not resolve.
    #[error("member {member}: {host}:{port} does not resolve: {detail}")]
    Resolve {
        /// The member.
        member: String,
        /// Its host.
        host: String,
        /// Its port.
        port: u16,
        /// Why.
        detail: String,
    },
    /// What this build cannot do yet.
    #[error("{0}")]
    Unsupported(String),
    /// The options or the config lack what this mode needs (etcd: `--member`).
    #[error("{0}")]
    Options(String),
}

/// Knobs that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// PostgreSQL's binaries (default /usr/lib/postgresql/15/bin).
    pub pg_bin_dir: Option<PathBuf>,
    /// The member this node's agent acts for (etcd coordinator only; required there).
    pub member: Option<String>,
}

/// A command from the API, with where to send the answer.
pub(crate) type CommandRequest = (Command, oneshot::Sender<String>);

/// A running daemon.
pub struct Daemon {
    api: SocketAddr,
    write: Option<SocketAddr>,
    read: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<Status>,
}

impl Daemon {
    /// Opens the coordinator, starts the probes, the proxy ports, the API and the main
    /// loop. Returns once everything listens.
    ///
    /// # Errors
    /// [`Error`] naming the part that could not start.
    pub async fn start(config: Config, options: DaemonOptions) -> Result<Daemon, Error> {
        let cluster = config.cluster.clone();
        let (coord, location) = match &config.coordinator {
            lifeboat_config::Coordinator::Embedded { state } => (
                Coordinator::open_embedded(EmbeddedOptions::new(state, &cluster.name)).await?,
                state.display().to_string(),
            ),
            lifeboat_config::Coordinator::Etcd { endpoints } => {
                let endpoints = endpoints.clone();
                let a = crate::agent::start(config, options, endpoints).await?;
                return Ok(Daemon {
                    api: a.api,
                    write: a.write,
                    read: a.read,
                    shutdown: a.shutdown,
                    task: a.task,
                    status: a.status,
                });
            }
        };
        let coord = Arc::new(coord);
        let state = coord.state().await?;

        let pg = crate::bootstrap::pg_for(&config, options.pg_bin_dir.as_deref());
        let members = crate::bootstrap::members_of(&config);
        let mut addrs = BTreeMap::new();
        for m in &cluster.members {
            let addr = tokio::net::lookup_host((m.host.as_str(), m.port))
                .await
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
                .map_err(|detail| Error::Resolve {
                    member: m.name.clone(),
                    host: m.host.clone(),
                    port: m.port,
                    detail,
                })?;
            addrs.insert(m.name.clone(), addr);
        }

        let shutdown = CancellationToken::new();
        let h = config.health.clone();
        let probe = ProbeSettings {
            interval: h.interval,
            timeout: h.timeout,
            fall: h.fall,
            rise: h.rise,
        };
        let monitor = Monitor::start_with_shutdown(
            probe,
            cluster
                .members
                .iter()
                .map(|m| lifeboat_health::Member {
                    name: m.name.clone(),
                    target: Target::Postgres {
                        host: m.host.clone(),
                        port: m.port,
                        user: config.cluster.user.clone(),
                        dbname: "postgres".into(),
                        password: config.cluster.password.as_ref().map(|p| p.expose().clone()),
                    },
                })
                .collect(),
            &shutdown,
        )?;
        // The optional extra checks: a command per member (counts toward its health) and
        // a TCP port on its host (informational).
        let checks = match &h.command {
            Some(argv) => Some(Monitor::start_with_shutdown(
                probe,
                cluster
                    .members
                    .iter()
                    .map(|m| lifeboat_health::Member {
                        name: m.name.clone(),
                        target: Target::Command {
                            argv: argv.iter().map(|a| substitute(a, m)).collect(),
                        },
                    })
                    .collect(),
                &shutdown,
            )?),
            None => None,
        };
        let hosts = match h.host_port {
            Some(port) => Some(Monitor::start_with_shutdown(
                probe,
                cluster
                    .members
                    .iter()
                    .map(|m| lifeboat_health::Member {
                        name: m.name.clone(),
                        target: Target::Tcp {
                            host: m.host.clone(),
                            port,
                        },
                    })
                    .collect(),
                &shutdown,
            )?),
            None => None,
        };

        let (route_tx, route_rx) = watch::channel(Route::default());
        let proxy = crate::compose::start_proxy(&config, &route_rx, &shutdown).await?;
        let (write, read, counters) = (proxy.write, proxy.read, proxy.counters.clone());

        let (listener, api) = crate::compose::bind_api(&config).await?;

        let settings = Settings {
            members: cluster.members.iter().map(|m| m.name.clone()).collect(),
            automatic: cluster.failover == FailoverMode::Automatic,
            sync: cluster.replication == Replication::Sync,
            strict: cluster.when_no_standby == lifeboat_config::NoStandby::Wait,
            retry: Duration::from_secs(2),
        };
        let mut machine = Machine::new(settings, state.generation, state.primary.clone());
        let started = Instant::now();
        if state.maintenance {
            let _ = machine.handle(Duration::ZERO, Input::Command(Command::Maintenance(true)));
        }
        let base = crate::compose::base_status(
            &config,
            CoordinatorStatus {
                kind: "embedded".into(),
                location,
                generation: state.generation,
            },
            &proxy,
            api,
        );
        let (status_tx, status_rx) = watch::channel(base.clone());
        let (cmd_tx, cmd_rx) = mpsc::channel::<CommandRequest>(16);
        let executor = Executor::new(pg, members, coord.clone());

        let app = crate::api::router(crate::api::ApiState {
            status: status_rx.clone(),
            commands: cmd_tx,
            token: config.api.token.clone(),
            executor: executor.clone(),
            local: None,
        });
        crate::compose::serve_api(listener, app, &shutdown);

        let main = MainLoop {
            machine,
            started,
            monitor,
            checks,
            hosts,
            executor,
            coord,
            addrs,
            route_tx,
            status_tx,
            base,
            alerts: VecDeque::new(),
            counters,
            steps: None,
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(main.run(cmd_rx, stop));
        tracing::info!(%api, ?write, ?read, cluster = %cluster.name, generation = state.generation, "lifeboat is running");
        Ok(Daemon {
            api,
            write,
            read,
            shutdown,
            task,
            status: status_rx,
        })
    }

    /// Where the API listens.
    #[must_use]
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// Where the proxy takes writes.
    #[must_use]
    pub fn write_addr(&self) -> Option<SocketAddr> {
        self.write
    }

    /// Where the proxy takes reads.
    #[must_use]
    pub fn read_addr(&self) -> Option<SocketAddr> {
        self.read
    }

    /// The latest status snapshot.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of every status snapshot.
    #[must_use]
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops everything and waits for the main loop to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Runs until `signal` resolves, then stops.
    pub async fn run_until<F: std::future::Future<Output = ()>>(self, signal: F) {
        tokio::select! {
            () = signal => {}
            () = self.shutdown.cancelled() => {}
        }
        self.stop().await;
    }
}

struct MainLoop {
    machine: Machine,
    started: Instant,
    monitor: Monitor,
    /// `[health] command` per member, when configured.
    checks: Option<Monitor>,
    /// `[health] host_port` per member, when configured.
    hosts: Option<Monitor>,
    executor: Executor,
    coord: Arc<Coordinator>,
    addrs: BTreeMap<String, SocketAddr>,
    route_tx: watch::Sender<Route>,
    status_tx: watch::Sender<Status>,
    base: Status,
    alerts: VecDeque<AlertRecord>,
    counters: Vec<Arc<lifeboat_traffic::Counters>>,
    steps: Option<mpsc::UnboundedSender<Action>>,
}

impl MainLoop {
    async fn run(mut self, mut commands: mpsc::Receiver<CommandRequest>, stop: CancellationToken) {
        let mut events = self.monitor.events();
        let mut check_events = self.checks.as_ref().map(Monitor::events);
        let mut host_events = self.hosts.as_ref().map(Monitor::events);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Outcome)>();
        // Steps run one after another on their own task.
        let (step_tx, mut step_rx) = mpsc::unbounded_channel::<Action>();
        {
            let executor = self.executor.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                while let Some(a) = step_rx.recv().await {
                    if let Some(o) = executor.run(&a).await {
                        let _ = done.send((a.id, o));
                    }
                }
            });
        }
        self.steps = Some(step_tx);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let input = tokio::select! {
                () = stop.cancelled() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => Input::Observe(self.observe(&ev.health)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                ev = next_event(&mut check_events) => match ev {
                    // A command check changed its verdict: the member's health changes too.
                    Some(ev) if ev.transition.is_some() => match self.monitor.health(&ev.health.member) {
                        Some(h) => Input::Observe(self.observe(&h)),
                        None => continue,
                    },
                    Some(_) => continue,
                    None => { check_events = None; continue }
                },
                ev = next_event(&mut host_events) => match ev {
                    Some(_) => { self.publish(); continue }
                    None => { host_events = None; continue }
                },
                Some((id, outcome)) = done_rx.recv() => Input::Done { id, outcome },
                Some((cmd, reply)) = commands.recv() => {
                    if let Command::Maintenance(on) = cmd {
                        if let Err(e) = self.coord.set_maintenance(on).await {
                            let _ = reply.send(format!("error: the coordinator did not record it: {e}"));
                            continue;
                        }
                    }
                    let before = self.alerts.len();
                    let input = Input::Command(cmd);
                    self.feed(input, &done_tx);
                    let said: Vec<String> = self.alerts.iter().skip(before).map(|a| a.message.clone()).collect();
                    let _ = reply.send(if said.is_empty() { "accepted".into() } else { said.join("; ") });
                    self.publish();
                    continue;
                }
                _ = tick.tick() => Input::Tick,
            };
            self.feed(input, &done_tx);
            self.publish();
        }
        self.monitor.shutdown().await;
    }

    /// The machine's view of a PostgreSQL probe, with the member's command check applied:
    /// a member whose command check is down is down.
    fn observe(&self, h: &lifeboat_health::MemberHealth) -> lifeboat_failover::Observation {
        let mut o = observation(h);
        let check_down = self
            .checks
            .as_ref()
            .and_then(|c| c.health(&h.member))
            .is_some_and(|c| c.verdict == lifeboat_health::Verdict::Down);
        if check_down {
            o.verdict = lifeboat_failover::Verdict::Down;
        }
        o
    }

    fn feed(&mut self, input: Input, done_tx: &mpsc::UnboundedSender<(u64, Outcome)>) {
        let now = self.started.elapsed();
        for action in self.machine.handle(now, input) {
            match action.lane {
                Lane::Notice => self.notice(&action, done_tx),
                Lane::Step => {
                    if let Some(s) = &self.steps {
                        let _ = s.send(action);
                    }
                }
                Lane::Background => {
                    let executor = self.executor.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        if let Some(o) = executor.run(&action).await {
                            let _ = done.send((action.id, o));
                        }
                    });
                }
            }
        }
    }

    fn notice(&mut self, action: &Action, _done_tx: &mpsc::UnboundedSender<(u64, Outcome)>) {
        match &action.kind {
            ActionKind::Route { primary, replicas } => {
                let route = Route {
                    generation: self.machine.generation(),
                    primary: primary.as_ref().and_then(|p| self.addrs.get(p).copied()),
                    replicas: replicas
                        .iter()
                        .filter_map(|r| self.addrs.get(r).copied())
                        .collect(),
                };
                tracing::info!(primary = ?primary, replicas = ?replicas, generation = route.generation, "route");
                let _ = self.route_tx.send(route);
            }
            ActionKind::Alert { severity, message } => {
                let sev = match severity {
                    lifeboat_failover::Severity::Info => "info",
                    lifeboat_failover::Severity::Critical => "critical",
                };
                match severity {
                    lifeboat_failover::Severity::Info => tracing::info!("{message}"),
                    lifeboat_failover::Severity::Critical => tracing::warn!("{message}"),
                }
                self.alerts.push_back(AlertRecord {
                    time: jiff::Timestamp::now().to_string(),
                    severity: sev.into(),
                    message: message.clone(),
                });
                while self.alerts.len() > ALERTS_KEPT {
                    self.alerts.pop_front();
                }
                let coord = self.coord.clone();
                let event = serde_json::json!({"alert": sev, "message": message});
                tokio::spawn(async move {
                    if let Err(e) = coord.record(&event).await {
                        tracing::warn!("the coordinator did not record an alert: {e}");
                    }
                });
            }
            _ => {
                // A notice the executor carries out without reporting back (SetSync).
                let executor = self.executor.clone();
                let action = action.clone();
                tokio::spawn(async move {
                    if let Some(Outcome::Failed(why)) = executor.run(&action).await {
                        tracing::warn!("{:?}: {why}", action.kind);
                    }
                });
            }
        }
    }

    fn publish(&mut self) {
        let snap = self.machine.snapshot();
        let mut s = self.base.clone();
        let (phase, reason) = match &snap.phase {
            Phase::Discovering => ("discovering", None),
            Phase::Healthy => ("healthy", None),
            Phase::AwaitingApproval { reason } => ("awaiting_approval", Some(reason.clone())),
            Phase::FailingOver { .. } => ("failing_over", None),
            Phase::Switching { .. } => ("switching", None),
            Phase::Stale { .. } => ("stale", None),
        };
        s.phase = phase.into();
        s.reason = reason;
        s.maintenance = snap.maintenance;
        s.primary.clone_from(&snap.primary);
        s.coordinator.generation = snap.generation;
        s.sync_set.clone_from(&snap.sync_set);
        s.failover_target.clone_from(&snap.failover_target);
        s.last_transition = snap
            .last_transition
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok());
        s.alerts = self.alerts.iter().cloned().collect();
        let route = self.route_tx.borrow().clone();
        s.proxy.routed_to = route.primary.map(|a| a.to_string());
        for c in &self.counters {
            let c = c.snapshot();
            s.proxy.active += c.active;
            s.proxy.accepted += c.accepted;
            s.proxy.closed_on_switch += c.closed_on_switch;
            s.proxy.held += c.held;
        }
        let health: BTreeMap<String, lifeboat_health::MemberHealth> = self
            .monitor
            .snapshot()
            .into_iter()
            .map(|h| (h.member.clone(), h))
            .collect();
        let primary_pg = snap
            .primary
            .as_ref()
            .and_then(|p| health.get(p))
            .and_then(|h| h.last.pg.as_ref());
        // What the primary has flushed (inserted but unflushed WAL is sent to no one).
        let primary_lsn = primary_pg.and_then(|pg| pg.flush_lsn.or(pg.current_lsn));
        for m in &mut s.members {
            let view = snap.members.get(&m.name);
            if let Some(v) = view {
                m.needs_rejoin = v.needs_rejoin;
                m.repairing = v.repairing;
            }
            let Some(h) = health.get(&m.name) else {
                continue;
            };
            m.state = match h.verdict {
                lifeboat_health::Verdict::Up => "up",
                lifeboat_health::Verdict::Down => "down",
                lifeboat_health::Verdict::Unknown => "unknown",
            }
            .into();
            m.last_error.clone_from(&h.last.error);
            if let Some(c) = self.checks.as_ref().and_then(|c| c.health(&m.name)) {
                m.check = Some(verdict_name(c.verdict).into());
                if c.verdict == lifeboat_health::Verdict::Down {
                    m.state = "down".into();
                    m.last_error = c.last.error.clone().map(|e| format!("check command: {e}"));
                }
            }
            m.host_reachable = self
                .hosts
                .as_ref()
                .and_then(|t| t.health(&m.name))
                .and_then(|t| match t.verdict {
                    lifeboat_health::Verdict::Up => Some(true),
                    lifeboat_health::Verdict::Down => Some(false),
                    lifeboat_health::Verdict::Unknown => None,
                });
            let pg = h.last.pg.as_ref().filter(|_| h.last.ok);
            m.role = match pg {
                Some(p) if !p.in_recovery => "primary",
                Some(_) => "standby",
                None if h.verdict == lifeboat_health::Verdict::Down => "down",
                None => "unknown",
            }
            .into();
            if let Some(p) = pg {
                m.timeline = p.timeline;
                m.current_lsn = p.current_lsn.map(lifeboat_health::format_lsn);
                m.receive_lsn = p.receive_lsn.map(lifeboat_health::format_lsn);
                m.replay_lsn = p.replay_lsn.map(lifeboat_health::format_lsn);
                m.streaming = p.wal_receiver_streaming;
                m.generation = p.generation;
                if p.in_recovery {
                    // The standby's own report, or the primary's view of its flush
                    // (an idle standby reports the segment it started streaming at).
                    let seen = primary_pg.and_then(|pp| {
                        pp.replication
                            .iter()
                            .find(|r| r.application_name == m.name)
                            .and_then(|r| r.flush_lsn)
                    });
                    let pos = p.receive_lsn.or(p.replay_lsn).max(seen);
                    m.lag_bytes = primary_lsn.zip(pos).map(|(a, b)| a.saturating_sub(b));
                    m.lag_seconds = if m.lag_bytes == Some(0) || p.replay_backlog() == Some(0) {
                        Some(0.0)
                    } else {
                        p.replay_timestamp
                            .and_then(|t| SystemTime::now().duration_since(t).ok())
                            .map(|d| d.as_secs_f64())
                    };
                } else {
                    m.lag_bytes = None;
                    m.lag_seconds = None;
                }
            }
        }
        self.status_tx.send_replace(s);
    }
}

/// `{member}`, `{host}`, `{port}` and `{data_dir}` in a check command's argument.
fn substitute(arg: &str, m: &lifeboat_config::Member) -> String {
    arg.replace("{member}", &m.name)
        .replace("{host}", &m.host)
        .replace("{port}", &m.port.to_string())
        .replace("{data_dir}", &m.data_dir.display().to_string())
}

fn verdict_name(v: lifeboat_health::Verdict) -> &'static str {
    match v {
        lifeboat_health::Verdict::Up => "up",
        lifeboat_health::Verdict::Down => "down",
        lifeboat_health::Verdict::Unknown => "unknown",
    }
}

/// The next event of an optional monitor; pending forever without one; `None` when its
/// channel closed.
async fn next_event(
    rx: &mut Option<tokio::sync::broadcast::Receiver<lifeboat_health::HealthEvent>>,
) -> Option<lifeboat_health::HealthEvent> {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match r.recv().await {
            Ok(ev) => return Some(ev),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}
