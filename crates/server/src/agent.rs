//! The etcd agent (`lifeboat run --member NAME` with `[coordinator] url = "etcd://…"`): one
//! per database node, acting only on its own member. There is no monitor to lose: etcd
//! holds the cluster's leader lease and generation, every agent publishes what its probe
//! of the local PostgreSQL saw, and the standbys elect a successor when the lease lapses.
//!
//! Lives here: the agent's loop (probe → publish → leader or standby step), the lease
//! keeper that renews the leader lease and **fences the local primary** when it could not
//! renew for TTL/2, the election (the same sync-mode safety rule as the embedded machine:
//! only a standby the last primary saw flush past the point where its synchronous set came
//! in force, and only when every member of that set can be compared), following the new
//! leader (repoint, or rejoin through pg_rewind), manual failover (an approval asked for in
//! etcd, the election once an operator approved through any agent's API), switchover
//! (asked through any agent, carried out by the leader's clean stop and hand-off to the
//! named standby only), the agent's status and its API.
//! It must never act on another node's PostgreSQL, never promote without first winning the
//! generation compare-and-swap under its own live lease, never let its primary take
//! writes once the lease may have passed to another member, and never give the lease up
//! early after a self-fence that was not confirmed (it keeps it until a fence is confirmed
//! or an operator approves; docs/ha.md). The protocol and its timing are
//! ADR 0021.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifeboat_config::{Config, FailoverMode, Replication};
use lifeboat_coord::{ClusterState, Coordinator, EtcdOptions, LeaderLease, MemberReport};
use lifeboat_failover::{Action, ActionKind, Command, Lane, Outcome};
use lifeboat_health::{Hysteresis, Observation, Prober, Target, Verdict};
use lifeboat_postgres::cluster::{ClusterError, Member as PgMember, SyncMode};
use lifeboat_traffic::Route;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::convert::sync_names;
use crate::daemon::{CommandRequest, DaemonOptions, Error};
use crate::exec::Executor;
use crate::status::{AlertRecord, CoordinatorStatus, Status};

/// The leader lease's time to live.
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// How long after a failed repair (repoint, rejoin) the agent tries again.
const REPAIR_RETRY: Duration = Duration::from_secs(2);
/// A report younger than this comes from an agent that is alive and publishing.
const FRESH_REPORT: Duration = Duration::from_secs(1);
/// How many alerts status keeps.
const ALERTS_KEPT: usize = 50;
/// How long a switchover request, or a stopped primary's hand-off to the switchover's
/// target, stays valid: past it the other standbys stop holding and elect as usual.
const HANDOFF_WAIT: Duration = Duration::from_secs(15);

/// What [`start`] hands to [`crate::Daemon`].
pub(crate) struct Parts {
    pub(crate) api: SocketAddr,
    pub(crate) write: Option<SocketAddr>,
    pub(crate) read: Option<SocketAddr>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) status: watch::Receiver<Status>,
}

/// Starts this node's agent: connects to etcd (lazily: an unreachable etcd shows in status
/// and logs, it does not stop the start), binds the proxy ports and the API, and spawns the
/// loop.
pub(crate) async fn start(
    config: Config,
    options: DaemonOptions,
    endpoints: Vec<String>,
) -> Result<Parts, Error> {
    let cluster = config.cluster.clone();
    let me = options.member.clone().ok_or_else(|| {
        Error::Options(
            "the etcd coordinator runs one agent per database node: name this node's member with --member NAME (or LIFEBOAT_MEMBER)".into(),
        )
    })?;
    let Some(mine) = cluster.members.iter().find(|m| m.name == me) else {
        let names: Vec<&str> = cluster.members.iter().map(|m| m.name.as_str()).collect();
        return Err(Error::Options(format!(
            "--member {me} is not a member of cluster {} (members: {})",
            cluster.name,
            names.join(", ")
        )));
    };
    let location = endpoints.join(",");
    let coord = Arc::new(
        Coordinator::connect_etcd(EtcdOptions::new(endpoints, cluster.name.clone())).await?,
    );

    let pg = crate::bootstrap::pg_for(&config, options.pg_bin_dir.as_deref());
    let members = crate::bootstrap::members_of(&config);
    let mut addrs = BTreeMap::new();
    for m in &cluster.members {
        // A member this node cannot resolve (yet) only loses its route, not the agent.
        match tokio::net::lookup_host((m.host.as_str(), m.port)).await {
            Ok(mut a) => {
                if let Some(a) = a.next() {
                    addrs.insert(m.name.clone(), a);
                }
            }
            Err(e) => tracing::warn!(member = %m.name, host = %m.host, "does not resolve: {e}"),
        }
    }
    let prober = Prober::new(
        Target::Postgres {
            host: mine.host.clone(),
            port: mine.port,
            user: config.cluster.user.clone(),
            dbname: "postgres".into(),
            password: config.cluster.password.as_ref().map(|p| p.expose().clone()),
        },
        config.health.timeout,
    )?;

    let shutdown = CancellationToken::new();
    let (route_tx, route_rx) = watch::channel(Route::default());
    let proxy = crate::compose::start_proxy(&config, &route_rx, &shutdown).await?;
    let (write, read, counters) = (proxy.write, proxy.read, proxy.counters.clone());

    let (listener, api) = crate::compose::bind_api(&config).await?;

    let base = Status {
        phase: "discovering".into(),
        ..crate::compose::base_status(
            &config,
            CoordinatorStatus {
                kind: "etcd".into(),
                location: location.clone(),
                generation: 0,
            },
            &proxy,
            api,
        )
    };
    let (status_tx, status_rx) = watch::channel(base.clone());
    let (cmd_tx, cmd_rx) = mpsc::channel::<CommandRequest>(16);
    let executor = Executor::new(pg, members, coord.clone());
    let app = crate::api::router(crate::api::ApiState {
        status: status_rx.clone(),
        commands: cmd_tx,
        token: config.api.token.clone(),
        executor: executor.clone(),
        local: Some(me.clone()),
    });
    crate::compose::serve_api(listener, app, &shutdown);

    let h = config.health.clone();
    let agent = Agent {
        me: me.clone(),
        location,
        ttl: LEASE_TTL,
        interval: h.interval,
        sync: cluster.replication == Replication::Sync,
        strict: cluster.when_no_standby == lifeboat_config::NoStandby::Wait,
        automatic: cluster.failover == FailoverMode::Automatic,
        names: cluster.members.iter().map(|m| m.name.clone()).collect(),
        coord,
        executor,
        prober,
        hysteresis: Hysteresis::new(h.fall, h.rise),
        obs: None,
        leading: None,
        fenced: false,
        fence_failed: None,
        track: SyncTrack::default(),
        last_primary: None,
        etcd_error: None,
        repair: None,
        upstream: None,
        repair_after: Instant::now(),
        sync_job: None,
        addrs,
        route_tx,
        status_tx,
        base,
        alerts: VecDeque::new(),
        counters,
        state: None,
        reports: Vec::new(),
        switchover: None,
        handoff: None,
        refused: None,
        no_leader_since: None,
    };
    let stop = shutdown.clone();
    let task = tokio::spawn(agent.run(cmd_rx, stop));
    tracing::info!(%api, ?write, ?read, cluster = %cluster.name, member = %me, "lifeboat agent is running (etcd)");
    Ok(Parts {
        api,
        write,
        read,
        shutdown,
        task,
        status: status_rx,
    })
}

/// The leader's bookkeeping of its synchronous set (the machine's rule, ADR 0017/0021).
#[derive(Debug, Default, Clone)]
struct SyncTrack {
    /// The flush position when a non-empty set was first seen in force.
    baseline: Option<u64>,
    /// Standbys seen flushed at or past `baseline`.
    confirmed: Vec<String>,
    /// The set last asked for (it may not be in force yet).
    requested: Option<Vec<String>>,
    /// In force, plus the requested set while a change is on its way.
    set: Vec<String>,
}

/// What the last primary published about its synchronous set (kept by every agent, since
/// the report vanishes with the primary's agent).
#[derive(Debug, Clone)]
struct PrimaryView {
    member: String,
    generation: u64,
    sync_set: Vec<String>,
    confirmed: Vec<String>,
}

/// Holding the leader lease.
struct Leading {
    generation: u64,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
    keeper: tokio::task::JoinHandle<Option<LeaderLease>>,
}

struct Agent {
    me: String,
    location: String,
    ttl: Duration,
    interval: Duration,
    sync: bool,
    /// `when_no_standby = "wait"`: the synchronous set is never emptied.
    strict: bool,
    automatic: bool,
    names: Vec<String>,
    coord: Arc<Coordinator>,
    executor: Executor,
    prober: Prober,
    hysteresis: Hysteresis,
    obs: Option<Observation>,
    leading: Option<Leading>,
    /// This agent fenced (or found stale) its PostgreSQL: it must be rewound before it may
    /// lead or be a candidate.
    fenced: bool,
    /// The leader's PostgreSQL is down and fencing it was not confirmed (why): the lease is
    /// kept, so nobody is promoted, until a fence succeeds or an operator approves.
    fence_failed: Option<String>,
    track: SyncTrack,
    last_primary: Option<PrimaryView>,
    etcd_error: Option<String>,
    repair: Option<tokio::task::JoinHandle<(Outcome, Option<String>)>>,
    /// The member this standby's walreceiver streams (or last streamed) from.
    upstream: Option<String>,
    repair_after: Instant,
    sync_job: Option<tokio::task::JoinHandle<()>>,
    addrs: BTreeMap<String, SocketAddr>,
    route_tx: watch::Sender<Route>,
    status_tx: watch::Sender<Status>,
    base: Status,
    alerts: VecDeque<AlertRecord>,
    counters: Vec<Arc<lifeboat_traffic::Counters>>,
    state: Option<ClusterState>,
    reports: Vec<MemberReport>,
    /// A switchover asked through this agent's API, published in its report for the
    /// leader's agent to carry out.
    switchover: Option<Handoff>,
    /// Set on the leader that stopped its primary for a switchover: the hand-off to the
    /// target, published in its report until the next generation.
    handoff: Option<Handoff>,
    /// The last switchover request this leader refused (so it says so once).
    refused: Option<Handoff>,
    /// Since when this standby's agent sees no leader (manual mode asks for an approval
    /// only after [`FRESH_REPORT`] of it).
    no_leader_since: Option<Instant>,
}

/// A switchover on its way: requested (`lsn` unset) or handed off by the stopped primary
/// (`lsn`: its final checkpoint, which the target must receive before it promotes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Handoff {
    /// The standby to promote.
    to: String,
    /// The generation it belongs to; any other generation makes it void.
    generation: u64,
    /// The stopped primary's last checkpoint location.
    lsn: Option<u64>,
    /// When it was made (Unix milliseconds of the making host).
    at_ms: u64,
}

impl Handoff {
    fn new(to: &str, generation: u64, lsn: Option<u64>) -> Self {
        Handoff {
            to: to.to_string(),
            generation,
            lsn,
            at_ms: unix_ms(),
        }
    }

    /// Still valid in `generation` (and not older than [`HANDOFF_WAIT`]).
    fn live(&self, generation: u64) -> bool {
        let age = Duration::from_millis(unix_ms().saturating_sub(self.at_ms));
        self.generation == generation && age < HANDOFF_WAIT
    }

    /// The one published under `key` in `r`, if any.
    fn from_report(r: &MemberReport, key: &str) -> Option<Self> {
        serde_json::from_value(r.report.get(key)?.clone()).ok()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn report_str<'a>(r: &'a MemberReport, key: &str) -> Option<&'a str> {
    r.report.get(key).and_then(serde_json::Value::as_str)
}

fn report_u64(r: &MemberReport, key: &str) -> Option<u64> {
    r.report.get(key).and_then(serde_json::Value::as_u64)
}

fn report_list(r: &MemberReport, key: &str) -> Vec<String> {
    r.report
        .get(key)
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A live standby that can be compared: its PostgreSQL answered, in recovery, not fenced.
fn up_standby(r: &MemberReport) -> bool {
    report_str(r, "role") == Some("standby") && !r.report["fenced"].as_bool().unwrap_or(false)
}

impl Agent {
    async fn run(mut self, mut commands: mpsc::Receiver<CommandRequest>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes: Option<lifeboat_coord::Changes> = None;
        loop {
            let probe = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => true,
                r = async {
                    match changes.as_mut() {
                        Some(c) => c.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if r.is_err() {
                        changes = None;
                    }
                    false
                }
                Some((cmd, reply)) = commands.recv() => {
                    let said = self.command(cmd).await;
                    let _ = reply.send(said);
                    continue;
                }
            };
            if probe {
                let o = self.prober.probe().await;
                if let Some(t) = self.hysteresis.observe(o.ok) {
                    tracing::info!(member = %self.me, from = ?t.from, to = ?t.to, error = ?o.error, "local PostgreSQL");
                }
                self.obs = Some(o);
                if changes.is_none() && self.etcd_error.is_none() {
                    changes = self.coord.changes().await.ok();
                }
            }
            self.step(probe).await;
            self.publish_status();
        }
        if let Some(l) = self.leading.take() {
            l.stop.cancel();
            if let Ok(Some(lease)) = l.keeper.await {
                // Nothing guards the primary once its agent is gone: it stops (standby.signal,
                // immediate stop) before the lease is handed over, as Patroni does.
                let stopped = match self.member(&self.me) {
                    Some(m) => {
                        let pg = self.executor.pg().clone();
                        let r = tokio::task::spawn_blocking(move || pg.fence(&m)).await;
                        match r {
                            Ok(Ok(f)) => {
                                tracing::warn!(member = %self.me, took = ?f.took, "the agent stops: its primary was stopped read-only");
                                true
                            }
                            other => {
                                tracing::error!(member = %self.me, result = ?other.map(|r| r.map(|f| f.took)), "the agent stops and could not stop its primary: the leader lease is not given back, it lapses in {:?}; stop PostgreSQL before that, or a standby may be promoted while it runs", self.ttl);
                                false
                            }
                        }
                    }
                    None => false,
                };
                // Only a primary that is stopped hands the lease over at once.
                if stopped {
                    if let Err(e) = self.coord.release(lease).await {
                        tracing::warn!("releasing the leader lease: {e}");
                    }
                }
            }
        }
    }

    async fn command(&mut self, cmd: Command) -> String {
        match cmd {
            Command::Maintenance(on) => match self.coord.set_maintenance(on).await {
                Ok(()) => {
                    self.alert(
                        false,
                        if on {
                            "maintenance on: every agent stops acting".into()
                        } else {
                            "maintenance off: agents act again".into()
                        },
                    );
                    "accepted".into()
                }
                Err(e) => format!("error: etcd did not record it: {e}"),
            },
            Command::Approve { to } => self.approve(to).await,
            Command::Switchover { to } => self.request_switchover(&to).await,
        }
    }

    /// `lifeboat failover approve [--to M]`: approves the failover waiting in etcd; the
    /// standbys' agents see it and elect (only `to`, when named).
    async fn approve(&mut self, to: Option<String>) -> String {
        if let Some(l) = self.state.as_ref().and_then(|s| s.leader.clone()) {
            let holding = self
                .reports
                .iter()
                .any(|r| r.member == l && r.report["fence_failed"].as_str().is_some());
            if !holding {
                return format!(
                    "error: no failover waits for approval: {l} holds the leader lease"
                );
            }
            if to.is_some() {
                return format!("error: {l} could not be fenced and holds the lease until approved; approve without --to (the election picks the standby)");
            }
        }
        if let Some(t) = &to {
            if !self.names.contains(t) {
                return format!("error: {t} is not a member of this cluster");
            }
            let live = self
                .reports
                .iter()
                .any(|r| r.member == *t && r.age < FRESH_REPORT && up_standby(r));
            if !live {
                return format!("error: {t} is not a live standby (its agent publishes no report of a running standby); nothing approved");
            }
        }
        match self.coord.approve(to.as_deref()).await {
            Ok(a) => {
                let whom = a.to.clone().unwrap_or_else(|| "the best candidate".into());
                self.alert(
                    true,
                    format!(
                        "failover approved by an operator (generation {}): promoting {whom}",
                        a.generation
                    ),
                );
                format!("accepted: failover approved, promoting {whom}")
            }
            Err(lifeboat_coord::Error::NothingToApprove { .. }) => {
                "error: no failover waits for approval".into()
            }
            Err(e) => format!("error: etcd did not record the approval: {e}"),
        }
    }

    /// Why `to` cannot be a switchover's target now, or `None` when it can: a live,
    /// streaming standby (in sync mode: confirmed in the primary's synchronous set) while a
    /// live primary holds the lease.
    fn switchover_refusal(&self, state: &ClusterState, to: &str) -> Option<String> {
        if state.maintenance {
            return Some("maintenance is on".into());
        }
        let Some(primary) = state.primary.as_deref() else {
            return Some("no primary is recorded".into());
        };
        if state.leader.as_deref() != Some(primary) {
            return Some(format!("{primary} does not hold the leader lease"));
        }
        if to == primary {
            return Some(format!("{to} is already the primary"));
        }
        if !self.names.iter().any(|n| n == to) {
            return Some(format!("{to} is not a member of this cluster"));
        }
        let Some(r) = self.reports.iter().find(|r| r.member == to) else {
            return Some(format!("{to} has no live report (is its agent running?)"));
        };
        if r.age >= FRESH_REPORT || !up_standby(r) {
            return Some(format!("{to} is not a live standby"));
        }
        if !r.report["streaming"].as_bool().unwrap_or(false) {
            return Some(format!("{to} is not streaming from {primary}"));
        }
        if self.sync {
            let confirmed = self.last_primary.as_ref().is_some_and(|v| {
                v.generation == state.generation
                    && v.member == primary
                    && v.confirmed.iter().any(|c| c == to)
            });
            if !confirmed {
                return Some(format!(
                    "{to} is not a confirmed synchronous standby of {primary}"
                ));
            }
        }
        None
    }

    /// `lifeboat switchover --to M` on this agent: checked here, then published in this
    /// agent's report, where the leader's agent picks it up.
    async fn request_switchover(&mut self, to: &str) -> String {
        let Some(state) = self.state.clone() else {
            return "error: this agent has not read the cluster state yet".into();
        };
        if let Some(why) = self.switchover_refusal(&state, to) {
            return format!("error: switchover to {to} refused: {why}");
        }
        self.switchover = Some(Handoff::new(to, state.generation, None));
        let report = self.report(&state);
        if let Err(e) = self.coord.publish(&self.me, &report).await {
            self.switchover = None;
            return format!("error: etcd did not record the switchover request: {e}");
        }
        self.alert(
            false,
            format!(
                "switchover from {:?} to {to} requested (generation {})",
                state.primary, state.generation
            ),
        );
        format!(
            "accepted: switchover from {} to {to} requested",
            state.primary.unwrap_or_default()
        )
    }

    fn verdict(&self) -> Verdict {
        self.hysteresis.verdict()
    }

    /// The local PostgreSQL's last answer, when the last probe succeeded.
    fn pg(&self) -> Option<&lifeboat_health::PgState> {
        self.obs
            .as_ref()
            .filter(|o| o.ok)
            .and_then(|o| o.pg.as_ref())
    }

    fn alert(&mut self, critical: bool, message: String) {
        if critical {
            tracing::warn!(member = %self.me, "{message}");
        } else {
            tracing::info!(member = %self.me, "{message}");
        }
        self.alerts.push_back(AlertRecord {
            time: jiff::Timestamp::now().to_string(),
            severity: if critical { "critical" } else { "info" }.into(),
            message,
        });
        while self.alerts.len() > ALERTS_KEPT {
            self.alerts.pop_front();
        }
    }

    fn etcd_failed(&mut self, what: &str, e: &lifeboat_coord::Error) {
        let msg = format!("etcd at {} unreachable ({what}): {e}", self.location);
        if self.etcd_error.is_none() {
            self.alert(true, format!("{msg}; standbys do nothing, a primary fences itself before its lease can lapse"));
        } else {
            tracing::debug!("{msg}");
        }
        self.etcd_error = Some(msg);
    }

    async fn step(&mut self, probe: bool) {
        // A keeper that fenced the primary ends the leadership.
        if let Some(l) = &self.leading {
            if l.lost.load(Ordering::SeqCst) {
                self.leading = None;
                self.fenced = true;
            }
        }
        let state = match self.coord.state().await {
            Ok(s) => s,
            Err(e) => {
                self.etcd_failed("reading the cluster state", &e);
                let _ = self.route_tx.send(Route::default());
                return;
            }
        };
        if probe {
            let report = self.report(&state);
            if let Err(e) = self.coord.publish(&self.me, &report).await {
                self.etcd_failed("publishing this member's report", &e);
                return;
            }
        }
        let reports = match self.coord.reports().await {
            Ok(r) => r,
            Err(e) => {
                self.etcd_failed("reading the members' reports", &e);
                return;
            }
        };
        if self.etcd_error.take().is_some() {
            self.alert(false, format!("etcd at {} answers again", self.location));
        }
        self.remember_primary(&state, &reports);
        self.state = Some(state.clone());
        self.reports = reports;
        self.route(&state);
        if self.repair.as_ref().is_some_and(|j| j.is_finished()) {
            if let Some(j) = self.repair.take() {
                match j.await {
                    Ok((o @ (Outcome::Ok | Outcome::Repaired(_)), up)) => {
                        if let Outcome::Repaired(how) = o {
                            // Re-cloned: say so loudly (where its old data directory went).
                            self.alert(true, format!("{}: {how}", self.me));
                        }
                        self.fenced = false;
                        if up.is_some() {
                            self.handoff = None;
                        }
                        self.upstream = up;
                    }
                    Ok((o, _)) => {
                        tracing::warn!(member = %self.me, outcome = ?o, "repair did not succeed; trying again in {REPAIR_RETRY:?}");
                        self.repair_after = Instant::now() + REPAIR_RETRY;
                    }
                    Err(e) => tracing::warn!("repair task: {e}"),
                }
            }
        }
        if state.leader.is_some() {
            self.no_leader_since = None;
        }
        if self.leading.is_some() {
            self.lead(&state).await;
        } else if !state.maintenance {
            self.follow(&state).await;
        }
    }

    /// Keeps what the current primary says about its synchronous set.
    fn remember_primary(&mut self, state: &ClusterState, reports: &[MemberReport]) {
        let Some(p) = &state.primary else { return };
        let Some(r) = reports.iter().find(|r| r.member == *p) else {
            return;
        };
        if report_str(r, "role") != Some("primary")
            || report_u64(r, "generation") != Some(state.generation)
            || !r.report["leader"].as_bool().unwrap_or(false)
        {
            return;
        }
        self.last_primary = Some(PrimaryView {
            member: p.clone(),
            generation: state.generation,
            sync_set: report_list(r, "sync_set"),
            confirmed: report_list(r, "confirmed"),
        });
    }

    fn route(&mut self, state: &ClusterState) {
        let live_primary = state.leader.as_ref().filter(|l| {
            state.primary.as_ref() == Some(*l)
                && self
                    .reports
                    .iter()
                    .any(|r| r.member == **l && report_str(r, "role") == Some("primary"))
        });
        let route = Route {
            generation: state.generation,
            primary: live_primary.and_then(|p| self.addrs.get(p).copied()),
            replicas: self
                .reports
                .iter()
                .filter(|r| up_standby(r) && r.report["streaming"].as_bool().unwrap_or(false))
                .filter_map(|r| self.addrs.get(&r.member).copied())
                .collect(),
        };
        if *self.route_tx.borrow() != route {
            tracing::info!(primary = ?route.primary, generation = route.generation, "route");
            let _ = self.route_tx.send(route);
        }
    }

    /// What this agent publishes about its member.
    fn report(&self, state: &ClusterState) -> serde_json::Value {
        let pg = self.pg();
        let role = match pg {
            Some(p) if !p.in_recovery => "primary",
            Some(_) => "standby",
            None if self.verdict() == Verdict::Down => "down",
            None => "unknown",
        };
        let lsn = pg.map(|p| {
            if p.in_recovery {
                p.receive_lsn.or(p.replay_lsn).unwrap_or(0)
            } else {
                p.flush_lsn.or(p.current_lsn).unwrap_or(0)
            }
        });
        let leading = self
            .leading
            .as_ref()
            .is_some_and(|l| l.generation == state.generation);
        json!({
            "role": role,
            "state": match self.verdict() { Verdict::Up => "up", Verdict::Down => "down", Verdict::Unknown => "unknown" },
            "lsn": lsn,
            "timeline": pg.and_then(|p| p.timeline),
            "current_lsn": pg.and_then(|p| p.current_lsn),
            "flush_lsn": pg.and_then(|p| p.flush_lsn),
            "receive_lsn": pg.and_then(|p| p.receive_lsn),
            "replay_lsn": pg.and_then(|p| p.replay_lsn),
            "streaming": pg.is_some_and(|p| p.wal_receiver_streaming),
            "sender": pg.and_then(|p| p.sender.clone()),
            "sync_names": pg.map(|p| sync_names(&p.synchronous_standby_names)).unwrap_or_default(),
            "sync_set": if leading { self.track.set.clone() } else { Vec::new() },
            "confirmed": if leading { self.track.confirmed.clone() } else { Vec::new() },
            "replica_flush": pg.map(|p| p.replication.iter().filter_map(|r| Some((r.application_name.clone(), r.flush_lsn?))).collect::<BTreeMap<_, _>>()).unwrap_or_default(),
            "generation": pg.and_then(|p| p.generation),
            "leader": leading,
            "fenced": self.fenced,
            "fence_failed": self.fence_failed,
            "error": self.obs.as_ref().and_then(|o| o.error.clone()),
            "switchover": self.switchover.as_ref().filter(|h| h.live(state.generation)),
            "handoff": self.handoff.as_ref().filter(|h| h.generation == state.generation),
        })
    }

    fn member(&self, name: &str) -> Option<PgMember> {
        self.executor.member(name).cloned()
    }

    /// Fences the local PostgreSQL (standby.signal, SIGKILL of the postmaster and its
    /// children) and waits for it.
    async fn fence_self(&mut self, why: &str) -> Outcome {
        self.fenced = true;
        fence(&self.executor, &self.me, why).await
    }

    // ---- leader ----

    async fn lead(&mut self, state: &ClusterState) {
        let Some(generation) = self.leading.as_ref().map(|l| l.generation) else {
            return;
        };
        if state.primary.as_deref() != Some(self.me.as_str())
            || state.generation != generation
            || state.leader.as_deref() != Some(self.me.as_str())
        {
            let why = format!(
                "generation {} names {:?} with leader {:?}, this agent led generation {generation}",
                state.generation, state.primary, state.leader
            );
            self.stop_leading(false).await;
            self.fence_self(&why).await;
            return;
        }
        if self.verdict() != Verdict::Down && self.fence_failed.take().is_some() {
            self.fenced = false;
            self.alert(
                true,
                format!("primary {} answers again; no failover", self.me),
            );
        }
        if state.pending_approval.is_some() && self.fence_failed.is_none() {
            // A live leader: no failover waits (a request raced with this lease's start).
            if let Err(e) = self.coord.clear_approval().await {
                tracing::warn!("clearing a stale approval request: {e}");
            }
        }
        if state.maintenance {
            // Maintenance: keep the lease (the keeper renews it), change nothing.
            return;
        }
        if self.verdict() == Verdict::Down {
            // Fast failover: the lease goes now, not after its TTL. Fenced first so it
            // cannot come back as a primary — and only when that is confirmed: otherwise the
            // lease is kept (nobody is promoted) until a fence succeeds or an operator
            // approves.
            let approved = state
                .pending_approval
                .as_ref()
                .is_some_and(|a| a.generation == state.generation && a.approved_at.is_some());
            match self.fence_self("its PostgreSQL is down").await {
                Outcome::Ok => {}
                Outcome::Failed(why) | Outcome::Repaired(why) if !approved => {
                    if self.fence_failed.as_deref() != Some(why.as_str()) {
                        self.alert(
                            true,
                            format!(
                                "primary {} is down and {why}; the leader lease is kept, so no standby is promoted until then",
                                self.me
                            ),
                        );
                        if state.pending_approval.is_none() {
                            if let Err(e) =
                                self.coord.request_approval(state.generation, None).await
                            {
                                self.etcd_failed("recording the approval request", &e);
                            }
                        }
                    }
                    self.fence_failed = Some(why);
                    return;
                }
                other => {
                    self.alert(
                        true,
                        format!(
                            "fencing {} not confirmed ({other:?}); an operator approved the failover",
                            self.me
                        ),
                    );
                }
            }
            self.fence_failed = None;
            self.stop_leading(true).await;
            self.alert(
                true,
                format!(
                    "primary {} is down (its health checks failed): released the leader lease",
                    self.me
                ),
            );
            return;
        }
        let Some(pg) = self.pg().cloned() else { return };
        if pg.in_recovery {
            return;
        }
        if self.sync {
            self.manage_sync(&pg);
        }
        self.switch_over(state).await;
    }

    /// The leader's part of a switchover asked through any agent: checks the target,
    /// checkpoints, stops its primary cleanly (standby.signal, fast shutdown), publishes the
    /// final checkpoint location for the target and gives the lease back.
    async fn switch_over(&mut self, state: &ClusterState) {
        let ask = self
            .reports
            .iter()
            .filter_map(|r| Handoff::from_report(r, "switchover"))
            .chain(self.switchover.clone())
            .find(|h| h.live(state.generation) && h.lsn.is_none());
        let Some(ask) = ask else { return };
        if let Some(why) = self.switchover_refusal(state, &ask.to) {
            if self.refused.as_ref() != Some(&ask) {
                self.alert(true, format!("switchover to {} refused: {why}", ask.to));
                self.refused = Some(ask);
            }
            return;
        }
        let Some(m) = self.member(&self.me) else {
            return;
        };
        let started = std::time::Instant::now();
        // A checkpoint while writes still flow: the shutdown checkpoint then has little to do.
        let (pgh, mc) = (self.executor.pg().clone(), m.clone());
        let _ = tokio::task::spawn_blocking(move || {
            pgh.connect(&mc)
                .map(|mut c| c.batch_execute("checkpoint").is_ok())
        })
        .await;
        tracing::info!(member = %self.me, to = %ask.to, "switchover: stopping the primary");
        let action = Action {
            id: 0,
            generation: state.generation,
            lane: Lane::Step,
            kind: ActionKind::StopClean {
                member: self.me.clone(),
            },
        };
        let outcome = self.executor.run(&action).await;
        // Whatever happened, the last probe no longer describes it.
        self.obs = None;
        let lsn = match outcome {
            Some(Outcome::Stopped(lsn)) => lsn,
            other => {
                match self
                    .fence_self("its clean stop for a switchover failed")
                    .await
                {
                    Outcome::Ok => {
                        self.alert(
                            true,
                            format!("switchover to {}: stopping {} failed ({other:?}); it is fenced and the lease released", ask.to, self.me),
                        );
                        self.stop_leading(true).await;
                    }
                    Outcome::Failed(why) | Outcome::Repaired(why) => {
                        // Unconfirmed: it may still take writes, so the lease stays here.
                        self.alert(
                            true,
                            format!("switchover to {}: stopping {} failed ({other:?}) and {why}; the switchover is abandoned and the lease kept", ask.to, self.me),
                        );
                        self.switchover = None;
                        self.fence_failed = Some(why);
                    }
                    o => tracing::warn!("unexpected fence outcome {o:?}"),
                }
                return;
            }
        };
        self.handoff = Some(Handoff::new(&ask.to, state.generation, Some(lsn)));
        self.switchover = None;
        let report = self.report(state);
        if let Err(e) = self.coord.publish(&self.me, &report).await {
            tracing::warn!(member = %self.me, "publishing the switchover hand-off: {e}");
        }
        self.stop_leading(true).await;
        self.alert(
            false,
            format!(
                "switchover: {} stopped at {} after {:?} and released the lease to {}",
                self.me,
                lifeboat_health::format_lsn(lsn),
                started.elapsed(),
                ask.to
            ),
        );
    }

    fn manage_sync(&mut self, pg: &lifeboat_health::PgState) {
        let in_force = sync_names(&pg.synchronous_standby_names);
        let mut set = in_force.clone();
        if let Some(req) = &self.track.requested {
            if *req != in_force {
                set.extend(req.iter().cloned());
            }
        }
        set.sort();
        set.dedup();
        self.track.set = set;
        if in_force.is_empty() {
            self.track.baseline = None;
            self.track.confirmed.clear();
        } else {
            let position = pg.flush_lsn.or(pg.current_lsn).unwrap_or(0);
            let baseline = *self.track.baseline.get_or_insert(position);
            for r in &pg.replication {
                if let Some(flush) = r.flush_lsn {
                    if flush >= baseline && !self.track.confirmed.contains(&r.application_name) {
                        self.track.confirmed.push(r.application_name.clone());
                    }
                }
            }
        }
        // The standbys streaming from it now. With none: `when_no_standby = "wait"` keeps
        // the set (writes wait); "continue" empties it, and from then on no standby is a
        // candidate until one has flushed past the new baseline.
        let mut want: Vec<String> = pg
            .replication
            .iter()
            .filter(|r| r.state == "streaming" && self.names.contains(&r.application_name))
            .map(|r| r.application_name.clone())
            .collect();
        want.sort();
        want.dedup();
        if want == in_force || (want.is_empty() && (self.strict || in_force.is_empty())) {
            return;
        }
        if want.is_empty() {
            tracing::warn!(member = %self.me, "no standby is streaming: commits are no longer replicated before they are acknowledged");
            self.track.baseline = None;
            self.track.confirmed.clear();
        }
        if self.sync_job.as_ref().is_some_and(|j| !j.is_finished()) {
            return;
        }
        self.track.requested = Some(want.clone());
        let Some(m) = self.member(&self.me) else {
            return;
        };
        let pgh = self.executor.pg().clone();
        tracing::info!(member = %self.me, sync = ?want, "setting synchronous_standby_names");
        self.sync_job = Some(tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = want.iter().map(String::as_str).collect();
            if let Err(e) = pgh.set_synchronous_standbys(&m, &names, SyncMode::Any(1)) {
                tracing::warn!("setting synchronous_standby_names: {e}");
            }
        }));
    }

    /// Stops the lease keeper; with `release`, gives the lease back at once.
    async fn stop_leading(&mut self, release: bool) {
        let Some(l) = self.leading.take() else { return };
        l.stop.cancel();
        if let Ok(Some(lease)) = l.keeper.await {
            if release {
                if let Err(e) = self.coord.release(lease).await {
                    tracing::warn!("releasing the leader lease: {e} (it lapses on its own)");
                }
            }
        }
        self.track = SyncTrack::default();
    }

    fn start_keeper(&mut self, lease: LeaderLease, generation: u64) {
        let stop = CancellationToken::new();
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_lease(
            self.coord.clone(),
            lease,
            self.executor.clone(),
            self.me.clone(),
            self.location.clone(),
            stop.clone(),
            lost.clone(),
        ));
        self.track = SyncTrack::default();
        self.leading = Some(Leading {
            generation,
            stop,
            lost,
            keeper,
        });
    }

    // ---- standby ----

    async fn follow(&mut self, state: &ClusterState) {
        if let Some(h) = self.handoff.clone() {
            // This member's primary was stopped for a switchover: wait for the target to
            // take the lease, then follow it like any stopped standby.
            let other = state.leader.as_ref().is_some_and(|l| *l != self.me);
            if !other {
                if h.live(h.generation) {
                    return;
                }
                self.handoff = None;
                self.alert(
                    true,
                    format!(
                        "switchover to {} did not complete within {HANDOFF_WAIT:?}; {} restarts read-only and the standbys elect as after a failure",
                        h.to, self.me
                    ),
                );
                self.start_stopped();
                return;
            }
        }
        let pg = self.pg().cloned();
        let primary_here = pg.as_ref().is_some_and(|p| !p.in_recovery);
        match state.leader.clone() {
            Some(l) if l == self.me => {
                // The lease of this member's previous agent: wait for it to lapse.
            }
            Some(l) => {
                if primary_here {
                    self.fence_self(&format!(
                        "it runs as a primary while {l} holds the leader lease (generation {})",
                        state.generation
                    ))
                    .await;
                    return;
                }
                self.follow_leader(&l, state);
            }
            None => {
                if primary_here {
                    let mine = state.primary.as_deref() == Some(self.me.as_str())
                        && pg.as_ref().and_then(|p| p.generation) == Some(state.generation);
                    if mine && !self.fenced {
                        self.take_back(state).await;
                    } else {
                        self.fence_self(&format!(
                            "it runs as a primary but generation {} names {:?}",
                            state.generation, state.primary
                        ))
                        .await;
                    }
                    return;
                }
                self.elect(state).await;
            }
        }
    }

    /// Starts the local PostgreSQL (stopped with `standby.signal`: it comes up read-only).
    fn start_stopped(&mut self) {
        let Some(m) = self.member(&self.me) else {
            return;
        };
        let pgh = self.executor.pg().clone();
        self.repair = Some(tokio::spawn(async move {
            match tokio::task::spawn_blocking(move || pgh.start(&m)).await {
                Ok(Ok(())) => (Outcome::Ok, None),
                Ok(Err(e)) => (Outcome::Failed(e.to_string()), None),
                Err(e) => (Outcome::Failed(e.to_string()), None),
            }
        }));
    }

    /// The recorded primary's agent takes the lease (start, or after its lease lapsed).
    async fn take_back(&mut self, state: &ClusterState) {
        match self.coord.acquire_leader(&self.me, self.ttl).await {
            Ok(Some(lease)) => {
                if state.pending_approval.is_some() {
                    // The primary is back: the failover that waited is void.
                    if let Err(e) = self.coord.clear_approval().await {
                        tracing::warn!("clearing the pending approval: {e}");
                    }
                }
                self.alert(
                    false,
                    format!(
                        "{} holds the leader lease as primary of generation {}",
                        self.me, state.generation
                    ),
                );
                self.start_keeper(lease, state.generation);
            }
            Ok(None) => {}
            Err(e) => self.etcd_failed("taking the leader lease", &e),
        }
    }

    /// The member whose `host:port` is `sender` (a walreceiver's upstream).
    fn member_at(&self, sender: &str) -> Option<String> {
        self.executor
            .members()
            .iter()
            .find(|m| format!("{}:{}", m.host, m.port) == sender)
            .map(|m| m.name.clone())
    }

    fn follow_leader(&mut self, leader: &str, state: &ClusterState) {
        let pg = self.pg().cloned();
        // Whom the walreceiver streams from (kept while it reconnects after a blip).
        if let Some(up) = pg
            .as_ref()
            .filter(|p| p.in_recovery && p.wal_receiver_streaming)
            .and_then(|p| p.sender.as_deref())
            .and_then(|s| self.member_at(s))
        {
            self.upstream = Some(up);
        }
        if pg.as_ref().is_some_and(|p| p.in_recovery) && self.upstream.as_deref() == Some(leader) {
            self.fenced = false;
            self.handoff = None;
            return;
        }
        if self.repair.is_some() || Instant::now() < self.repair_after {
            return;
        }
        // Only towards a leader whose agent is alive and whose PostgreSQL is a primary.
        let leader_ready = self.reports.iter().any(|r| {
            r.member == leader && r.age < FRESH_REPORT && report_str(r, "role") == Some("primary")
        });
        if !leader_ready {
            return;
        }
        let (Some(m), Some(l)) = (self.member(&self.me), self.member(leader)) else {
            return;
        };
        let executor = self.executor.clone();
        let generation = state.generation;
        let leader = leader.to_string();
        let me = self.me.clone();
        if pg.as_ref().is_some_and(|p| p.in_recovery) && !self.fenced {
            // A running standby: repoint it. Only when the leader answered and the standby
            // still does not follow (it received WAL past the fork) is it rewound; an
            // unreachable leader never costs a healthy standby its server.
            tracing::info!(member = %me, %leader, "following the leader: repoint");
            self.repair = Some(tokio::spawn(async move {
                let pgh = executor.pg().clone();
                let r = tokio::task::spawn_blocking(move || pgh.repoint(&m, &l)).await;
                match r {
                    Ok(Ok(_)) => (Outcome::Ok, Some(leader)),
                    Ok(Err(e @ ClusterError::Timeout { .. })) => {
                        tracing::warn!(member = %me, %leader, "does not follow after a repoint ({e}); rewinding it");
                        rewind(&executor, generation, me, leader).await
                    }
                    Ok(Err(e)) => (Outcome::Failed(e.to_string()), None),
                    Err(e) => (Outcome::Failed(e.to_string()), None),
                }
            }));
            return;
        }
        if self.handoff.is_some() && !self.fenced {
            // Stopped cleanly for a switchover (standby.signal written): started read-only
            // and pointed at the new primary at once; rewound only if it cannot follow.
            tracing::info!(member = %me, %leader, "following the leader after a switchover: start and repoint");
            self.repair = Some(tokio::spawn(async move {
                let pgh = executor.pg().clone();
                let (m2, l2) = (m.clone(), l.clone());
                let r = tokio::task::spawn_blocking(move || {
                    if !pgh.is_running(&m2)? {
                        pgh.start(&m2)?;
                    }
                    pgh.repoint(&m2, &l2)
                })
                .await;
                match r {
                    Ok(Ok(_)) => (Outcome::Ok, Some(leader)),
                    other => {
                        tracing::warn!(member = %me, %leader, "does not follow after a switchover ({other:?}); rewinding it");
                        rewind(&executor, generation, me, leader).await
                    }
                }
            }));
            return;
        }
        if !(self.fenced || self.verdict() == Verdict::Down) {
            return;
        }
        // A fenced former primary is rewound; a standby that is down is started (and
        // repointed, or rewound when it cannot follow).
        let kind = if self.fenced {
            ActionKind::Rejoin {
                member: me.clone(),
                primary: leader.clone(),
            }
        } else {
            ActionKind::Recover {
                member: me.clone(),
                primary: leader.clone(),
            }
        };
        tracing::info!(member = %me, %leader, ?kind, "following the leader");
        let action = Action {
            id: 0,
            generation,
            lane: Lane::Background,
            kind,
        };
        self.repair = Some(tokio::spawn(async move {
            match executor.run(&action).await {
                Some(o @ (Outcome::Ok | Outcome::Repaired(_))) => (o, Some(leader)),
                Some(o) => (o, None),
                None => (Outcome::Failed("nothing done".into()), None),
            }
        }));
    }

    /// The best candidate by the reports, or why there is none.
    fn candidate(&self, state: &ClusterState) -> Result<String, String> {
        choose(self.sync, state, &self.reports, self.last_primary.as_ref())
    }

    async fn elect(&mut self, state: &ClusterState) {
        if self.fenced || self.repair.is_some() {
            return;
        }
        if !self.pg().is_some_and(|p| p.in_recovery) {
            return;
        }
        // A switchover's hand-off: only its target takes the lease; the others hold.
        if let Some(h) = self.handoff_of(state) {
            if h.to == self.me {
                self.take_over(state, h.lsn, "a switchover").await;
            }
            return;
        }
        // The recorded primary's agent is alive and its PostgreSQL a primary: it takes the
        // lease back itself.
        if let Some(p) = &state.primary {
            if self.reports.iter().any(|r| {
                r.member == *p
                    && r.age < FRESH_REPORT
                    && report_str(r, "role") == Some("primary")
                    && report_u64(r, "generation") == Some(state.generation)
                    && !r.report["fenced"].as_bool().unwrap_or(false)
            }) {
                return;
            }
        }
        let best = if self.automatic {
            match self.candidate(state) {
                Ok(b) => b,
                Err(why) => {
                    tracing::debug!(member = %self.me, "no failover: {why}");
                    return;
                }
            }
        } else {
            match self.approved(state).await {
                Some(b) => b,
                None => return,
            }
        };
        if best != self.me {
            return;
        }
        let why = if self.automatic {
            "a failover"
        } else {
            "an approved failover"
        };
        self.take_over(state, None, why).await;
    }

    /// The hand-off a primary stopped for a switchover published for this generation.
    fn handoff_of(&self, state: &ClusterState) -> Option<Handoff> {
        let p = state.primary.as_ref()?;
        let r = self.reports.iter().find(|r| r.member == *p)?;
        Handoff::from_report(r, "handoff").filter(|h| h.live(state.generation) && h.lsn.is_some())
    }

    /// Manual mode: the member to promote once an operator approved, `None` while the
    /// failover waits (asking for the approval in etcd first: the live standby with the
    /// lowest name asks, so two agents do not overwrite each other's request).
    async fn approved(&mut self, state: &ClusterState) -> Option<String> {
        let pending = state
            .pending_approval
            .as_ref()
            .filter(|a| a.generation == state.generation);
        let Some(a) = pending else {
            // Not at the first sight of no leader: an agent that starts with its cluster
            // sees none until the primary's agent took its lease back.
            let since = *self.no_leader_since.get_or_insert_with(Instant::now);
            if since.elapsed() < FRESH_REPORT {
                return None;
            }
            let old = state.primary.clone().unwrap_or_default();
            let asker = self
                .reports
                .iter()
                .filter(|r| r.member != old && r.age < FRESH_REPORT && up_standby(r))
                .map(|r| r.member.as_str())
                .min();
            if asker == Some(self.me.as_str()) {
                let proposal = self.candidate(state).ok();
                match self
                    .coord
                    .request_approval(state.generation, proposal.as_deref())
                    .await
                {
                    Ok(()) => {
                        self.alert(
                            true,
                            format!(
                                "primary {old} is gone (generation {}): manual failover waits for `lifeboat failover approve` (proposed: {})",
                                state.generation,
                                proposal.as_deref().unwrap_or("none; name one with --to")
                            ),
                        );
                    }
                    Err(e) => self.etcd_failed("recording the approval request", &e),
                }
            }
            return None;
        };
        a.approved_at?;
        match &a.to {
            // Named by the operator (or proposed by the rule and approved as is): the
            // operator accepted what promoting it may lose.
            Some(to) => {
                let live = self.reports.iter().any(|r| {
                    r.member == *to
                        && r.member != state.primary.clone().unwrap_or_default()
                        && up_standby(r)
                });
                live.then(|| to.clone())
            }
            None => self.candidate(state).ok(),
        }
    }

    /// Takes the lease, wins the generation compare-and-swap and promotes the local
    /// standby (after it received WAL past `wait_for_lsn`, for a switchover).
    async fn take_over(&mut self, state: &ClusterState, wait_for_lsn: Option<u64>, why: &str) {
        let lease = match self.coord.acquire_leader(&self.me, self.ttl).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                self.etcd_failed("taking the leader lease", &e);
                return;
            }
        };
        let generation = match self
            .coord
            .promote_as_leader(&lease, state.generation, &self.me)
            .await
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(member = %self.me, "promotion refused: {e}");
                if let Err(e) = self.coord.release(lease).await {
                    tracing::warn!("releasing the leader lease: {e}");
                }
                return;
            }
        };
        self.start_keeper(lease, generation);
        self.alert(
            true,
            format!(
                "{} takes over from {:?} in {why}: generation {generation}",
                self.me, state.primary
            ),
        );
        let names: Vec<String> = self
            .reports
            .iter()
            .filter(|r| r.member != self.me && Some(&r.member) != state.primary.as_ref())
            .filter(|r| up_standby(r))
            .map(|r| r.member.clone())
            .collect();
        let action = Action {
            id: 0,
            generation,
            lane: Lane::Step,
            kind: ActionKind::Promote {
                member: self.me.clone(),
                wait_for_lsn,
                sync_names: if self.sync { names.clone() } else { Vec::new() },
            },
        };
        self.track.requested = Some(names);
        let outcome = self.executor.run(&action).await;
        let event = json!({"promoted": self.me, "from": state.primary, "generation": generation, "why": why, "outcome": format!("{outcome:?}")});
        if let Err(e) = self.coord.record(&event).await {
            tracing::warn!("recording the promotion: {e}");
        }
        match outcome {
            Some(Outcome::Ok) => {
                self.alert(
                    false,
                    format!("{} is the primary of generation {generation}", self.me),
                );
                // Published now, not at the next probe: the proxies route to it on this.
                let o = self.prober.probe().await;
                self.hysteresis.observe(o.ok);
                self.obs = Some(o);
                if let Ok(st) = self.coord.state().await {
                    let report = self.report(&st);
                    if let Err(e) = self.coord.publish(&self.me, &report).await {
                        tracing::warn!("publishing the new primary's report: {e}");
                    }
                }
            }
            other => {
                // It did not become a primary: give the lease up; the others elect again.
                self.alert(
                    true,
                    format!(
                        "promoting {} failed: {other:?}; releasing the lease",
                        self.me
                    ),
                );
                self.stop_leading(true).await;
                self.fence_self("its promotion failed").await;
            }
        }
    }

    fn publish_status(&mut self) {
        let mut s = self.base.clone();
        let state = self.state.clone();
        if let Some(st) = &state {
            s.coordinator.generation = st.generation;
            s.maintenance = st.maintenance;
            s.primary.clone_from(&st.primary);
        }
        let reports: BTreeMap<&str, &MemberReport> = self
            .reports
            .iter()
            .map(|r| (r.member.as_str(), r))
            .collect();
        let leader = state.as_ref().and_then(|s| s.leader.clone());
        let leader_up = leader.as_ref().is_some_and(|l| {
            reports
                .get(l.as_str())
                .is_some_and(|r| report_str(r, "role") == Some("primary"))
        });
        let (phase, reason) = if let Some(e) = &self.etcd_error {
            ("coordinator_unreachable", Some(e.clone()))
        } else if state.is_none() {
            ("discovering", None)
        } else if leader_up {
            ("healthy", None)
        } else if let Some(why) = leader
            .as_ref()
            .and_then(|l| reports.get(l.as_str()))
            .and_then(|r| r.report["fence_failed"].as_str())
        {
            (
                "awaiting_approval",
                Some(format!(
                    "{why} (the leader lease is kept until then: nobody is promoted)"
                )),
            )
        } else if leader.is_some() {
            (
                "failing_over",
                Some(format!("{leader:?} holds the lease and is being promoted")),
            )
        } else if let Some(h) = state.as_ref().and_then(|st| self.handoff_of(st)) {
            (
                "switching",
                Some(format!(
                    "switchover: {:?} stopped at {}; {} takes over",
                    state.as_ref().and_then(|st| st.primary.clone()),
                    lifeboat_health::format_lsn(h.lsn.unwrap_or(0)),
                    h.to
                )),
            )
        } else if !self.automatic {
            let st = state.as_ref();
            let pending = st.and_then(|st| {
                st.pending_approval
                    .clone()
                    .filter(|a| a.generation == st.generation)
            });
            let proposal = st.and_then(|st| self.candidate(st).ok());
            match pending {
                Some(a) if a.approved_at.is_some() => (
                    "failing_over",
                    Some(format!(
                        "failover approved: promoting {}",
                        a.to.or(proposal).unwrap_or_else(|| "(no candidate)".into())
                    )),
                ),
                _ => (
                    "awaiting_approval",
                    Some(format!(
                        "no leader: manual failover is waiting for `lifeboat failover approve` (best candidate: {})",
                        proposal.unwrap_or_else(|| "none; `--to MEMBER` accepts possible loss".into())
                    )),
                ),
            }
        } else {
            let why = match state.as_ref().map(|st| self.candidate(st)) {
                Some(Ok(c)) => format!("no leader; {c} is the candidate"),
                Some(Err(w)) => format!("no leader: {w}"),
                None => "no leader".into(),
            };
            ("failing_over", Some(why))
        };
        s.phase = phase.into();
        s.reason = reason;
        if let Some(v) = &self.last_primary {
            s.sync_set.clone_from(&v.sync_set);
        }
        if let Some(st) = &state {
            s.failover_target = self.candidate(st).ok();
        }
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
        let own = state.as_ref().map(|st| self.report(st));
        for m in &mut s.members {
            let r = if m.name == self.me {
                own.clone()
            } else {
                reports.get(m.name.as_str()).map(|r| r.report.clone())
            };
            let Some(r) = r else {
                m.state = "no report".into();
                continue;
            };
            let s_ = |k: &str| {
                r.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            };
            let u = |k: &str| r.get(k).and_then(serde_json::Value::as_u64);
            m.role = s_("role").unwrap_or_else(|| "unknown".into());
            m.state = s_("state").unwrap_or_else(|| "unknown".into());
            m.timeline = u("timeline").and_then(|t| u32::try_from(t).ok());
            m.current_lsn = u("current_lsn").map(lifeboat_health::format_lsn);
            m.receive_lsn = u("receive_lsn").map(lifeboat_health::format_lsn);
            m.replay_lsn = u("replay_lsn").map(lifeboat_health::format_lsn);
            m.streaming = r["streaming"].as_bool().unwrap_or(false);
            m.needs_rejoin = r["fenced"].as_bool().unwrap_or(false);
            m.generation = u("generation");
            m.last_error = s_("error");
        }
        self.status_tx.send_replace(s);
    }
}

/// The standby to promote when no leader holds the lease, by the live reports, or why
/// there is none. Sync mode: only a confirmed member of the last primary's synchronous set
/// (as `last` remembers it), and only when every member of the set can be compared; async:
/// any live standby. The most WAL received wins, ties to the lowest name.
fn choose(
    sync: bool,
    state: &ClusterState,
    reports: &[MemberReport],
    last: Option<&PrimaryView>,
) -> Result<String, String> {
    let old = state.primary.clone().unwrap_or_default();
    let live: BTreeMap<&str, &MemberReport> = reports
        .iter()
        .filter(|r| r.member != old && up_standby(r))
        .map(|r| (r.member.as_str(), r))
        .collect();
    let pool: Vec<&str> = if sync && state.generation > 0 {
        let Some(view) = last.filter(|v| v.generation == state.generation && v.member == old)
        else {
            return Err(format!(
                "this agent does not know the synchronous set of {old} (generation {})",
                state.generation
            ));
        };
        let set: Vec<&str> = view
            .sync_set
            .iter()
            .map(String::as_str)
            .filter(|m| *m != old)
            .collect();
        if set.is_empty() {
            return Err(format!("{old} had no synchronous standby: no standby is known to hold every acknowledged commit"));
        }
        if let Some(missing) = set.iter().find(|m| !live.contains_key(*m)) {
            return Err(format!(
                "{missing}, in {old}'s synchronous set, has no live report to compare"
            ));
        }
        set.into_iter()
            .filter(|m| view.confirmed.iter().any(|c| c == m))
            .collect()
    } else {
        live.keys().copied().collect()
    };
    let lsn = |m: &str| live.get(m).and_then(|r| report_u64(r, "lsn")).unwrap_or(0);
    pool.into_iter()
        .max_by(|a, b| lsn(a).cmp(&lsn(b)).then_with(|| b.cmp(a)))
        .map(str::to_string)
        .ok_or_else(|| "no confirmed synchronous standby".to_string())
}

/// Fences `me` on this host and logs why; returns whether the fence is confirmed.
async fn fence(executor: &Executor, me: &str, why: &str) -> Outcome {
    let Some(m) = executor.member(me).cloned() else {
        return Outcome::Failed(format!("could not fence {me}: it is not in the config"));
    };
    let started = std::time::Instant::now();
    let ex = executor.clone();
    let outcome = tokio::task::spawn_blocking(move || ex.fence(&m))
        .await
        .unwrap_or_else(|e| Outcome::Failed(format!("the fence panicked: {e}")));
    tracing::warn!(member = %me, ?outcome, took = ?started.elapsed(), "fenced its own PostgreSQL: {why}");
    outcome
}

/// Renews `lease` every TTL/3; fences the local PostgreSQL when TTL/2 passed since the
/// last successful renewal was sent (or the lease is gone), so it accepts nothing by the
/// time the lease can lapse. Returns the lease when told to stop, `None` after fencing.
async fn keep_lease(
    coord: Arc<Coordinator>,
    lease: LeaderLease,
    executor: Executor,
    me: String,
    location: String,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
) -> Option<LeaderLease> {
    let ttl = lease.ttl();
    let mut fence_at = lease.acquired_until() - ttl / 2;
    let fenced = |why: String| {
        let executor = executor.clone();
        let me = me.clone();
        let lost = lost.clone();
        async move {
            // Marked first: the loop must not treat the member as its primary any more.
            lost.store(true, Ordering::SeqCst);
            if let Outcome::Failed(e) = fence(&executor, &me, &why).await {
                // The lease is going or gone: nothing can hold a promotion back any more.
                tracing::error!(member = %me, "the leader lease lapses ({why}) and fencing its PostgreSQL was not confirmed: {e}");
            }
        }
    };
    loop {
        let sent = Instant::now();
        let r = tokio::select! {
            () = stop.cancelled() => return Some(lease),
            () = tokio::time::sleep_until(fence_at) => {
                fenced(format!("the leader lease was not renewed for {:?} (etcd at {location} unreachable?)", ttl / 2)).await;
                return None;
            }
            r = coord.renew(&lease) => r,
        };
        match r {
            Ok(until) => fence_at = until - ttl / 2,
            Err(lifeboat_coord::Error::LeaseLost { .. }) => {
                fenced("the leader lease is lost".into()).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(member = %me, "etcd at {location} unreachable: renewing the leader lease: {e}; fencing in {:?} without a renewal", fence_at.saturating_duration_since(Instant::now()))
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Some(lease),
            () = tokio::time::sleep_until(fence_at) => {
                fenced(format!("the leader lease was not renewed for {:?} (etcd at {location} unreachable)", ttl / 2)).await;
                return None;
            }
            () = tokio::time::sleep_until(sent + ttl / 3) => {}
        }
    }
}

/// Rewinds (or re-clones) `me` to follow `leader` through the executor: the outcome, and the
/// leader it now follows when that worked.
async fn rewind(
    executor: &Executor,
    generation: u64,
    me: String,
    leader: String,
) -> (Outcome, Option<String>) {
    let action = Action {
        id: 0,
        generation,
        lane: Lane::Background,
        kind: ActionKind::Rejoin {
            member: me,
            primary: leader.clone(),
        },
    };
    match executor.run(&action).await {
        Some(o @ (Outcome::Ok | Outcome::Repaired(_))) => (o, Some(leader)),
        Some(o) => (o, None),
        None => (Outcome::Failed("nothing done".into()), None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state(generation: u64, primary: &str) -> ClusterState {
        ClusterState {
            generation,
            primary: Some(primary.into()),
            maintenance: false,
            pending_approval: None,
            leader: None,
        }
    }

    fn standby(name: &str, lsn: u64) -> MemberReport {
        MemberReport {
            member: name.into(),
            report: json!({"role": "standby", "lsn": lsn, "fenced": false}),
            age: Duration::ZERO,
        }
    }

    fn view(set: &[&str], confirmed: &[&str]) -> PrimaryView {
        PrimaryView {
            member: "m1".into(),
            generation: 3,
            sync_set: set.iter().map(|s| s.to_string()).collect(),
            confirmed: confirmed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn sync_mode_promotes_the_confirmed_standby_with_the_most_wal() {
        let reports = [standby("m2", 100), standby("m3", 200)];
        let v = view(&["m2", "m3"], &["m2", "m3"]);
        assert_eq!(
            choose(true, &state(3, "m1"), &reports, Some(&v)).unwrap(),
            "m3"
        );
        // Ties go to the lowest name, so every agent picks the same one.
        let reports = [standby("m3", 100), standby("m2", 100)];
        assert_eq!(
            choose(true, &state(3, "m1"), &reports, Some(&v)).unwrap(),
            "m2"
        );
        // An unconfirmed standby is never promoted, whatever WAL it has.
        let v = view(&["m2", "m3"], &["m2"]);
        let reports = [standby("m2", 100), standby("m3", 900)];
        assert_eq!(
            choose(true, &state(3, "m1"), &reports, Some(&v)).unwrap(),
            "m2"
        );
    }

    #[test]
    fn sync_mode_promotes_nobody_it_cannot_prove_holds_every_commit() {
        let reports = [standby("m2", 100), standby("m3", 200)];
        // Commits acknowledged with an empty set: nobody.
        assert!(choose(true, &state(3, "m1"), &reports, Some(&view(&[], &[]))).is_err());
        // Nobody confirmed yet.
        assert!(choose(true, &state(3, "m1"), &reports, Some(&view(&["m2"], &[]))).is_err());
        // A member of the set has no live report: it may hold the last commit.
        let v = view(&["m2", "m3"], &["m2", "m3"]);
        let err = choose(true, &state(3, "m1"), &reports[..1], Some(&v)).unwrap_err();
        assert!(err.contains("m3"), "{err}");
        // A fenced member of the set cannot be compared either.
        let mut fenced = standby("m3", 200);
        fenced.report["fenced"] = json!(true);
        assert!(choose(true, &state(3, "m1"), &[standby("m2", 1), fenced], Some(&v)).is_err());
        // What the primary said belongs to its generation only.
        assert!(choose(true, &state(4, "m1"), &reports, Some(&v)).is_err());
        assert!(choose(true, &state(3, "m1"), &reports, None).is_err());
    }

    #[test]
    fn async_mode_promotes_the_live_standby_with_the_most_wal() {
        let mut old = standby("m1", 999);
        old.report["role"] = json!("primary");
        let reports = [old, standby("m2", 100), standby("m3", 50)];
        assert_eq!(
            choose(false, &state(3, "m1"), &reports, None).unwrap(),
            "m2"
        );
        assert!(choose(false, &state(3, "m1"), &reports[..1], None).is_err());
    }
}
