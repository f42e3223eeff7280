//! The cluster state machine: what the failover controller decides, given what it has
//! observed, the operator's commands and the outcomes of its own actions.
//!
//! It is pure: [`Machine::handle`] takes one [`Input`] and returns the [`Action`]s to carry
//! out. Time arrives inside the inputs, so any history replays exactly (the seeded
//! simulation in `tests/simulation.rs` relies on it). It must never perform I/O, read a
//! clock or spawn anything; the driver does that and reports back with [`Input::Done`].
//!
//! The protocol (docs/ha.md, ADR 0017): a primary whose health verdict turns `Down` is
//! failed over (automatic mode) or reported and held for approval (manual mode). A failover
//! takes the next generation in the coordinator (`Claim`, a compare-and-swap that refuses a
//! stale generation), closes the proxy's write route, fences the old primary, promotes the
//! best candidate, routes writes to it, then repoints the other standbys and rewinds the old
//! primary in the background. A fence that was not confirmed (the driver's `Failed`) is
//! never followed by a promotion: the failover is held, awaiting approval, and an
//! operator's approval fences once more and promotes. In `sync` mode only a member of the synchronous set can be
//! the candidate, and only while every member of that set can be compared: so no
//! acknowledged commit is ever lost.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How long after a promotion its synchronous standbys stay required while they are being
/// repointed (a standby not streaming by then is dropped from the set, with an alert).
pub const SYNC_GRACE: Duration = Duration::from_secs(5);

/// How the controller may act (from lifeboat.toml's `[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Every member's name, in the config's order.
    pub members: Vec<String>,
    /// `failover = "automatic"`: fail over without asking.
    pub automatic: bool,
    /// `replication = "sync"`: commits wait for a standby; only such a standby is promoted.
    pub sync: bool,
    /// `sync` mode with `when_no_standby = "wait"`: the synchronous set is never emptied,
    /// so with no standby streaming, commits wait rather than being acknowledged by the
    /// primary alone; a promotion with no other healthy standby names the old primary,
    /// so commits wait until it has rejoined.
    pub strict: bool,
    /// First wait before retrying a failed rejoin or recovery; doubles up to 16×.
    pub retry: Duration,
}

/// A member's health verdict after the probes' fall/rise hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not yet decided (fewer than `rise` or `fall` probes so far).
    Unknown,
    /// Answering.
    Up,
    /// Failed `fall` probes in a row.
    Down,
}

/// What a PostgreSQL probe saw of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PgFacts {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The primary's current WAL position, or a standby's received (flushed) position.
    pub lsn: u64,
    /// The timeline the member is on (or receiving).
    pub timeline: Option<u32>,
    /// A standby's WAL receiver is streaming.
    pub streaming: bool,
    /// On a primary: the names in `synchronous_standby_names` as in force.
    pub sync_names: Vec<String>,
    /// On a primary: the standbys in `pg_stat_replication` (by application name) that are
    /// streaming.
    pub replicas: Vec<String>,
    /// On a primary: each connected standby's flushed position as it acknowledged it.
    #[serde(default)]
    pub replica_flush: Vec<(String, u64)>,
}

/// One health verdict about one member, with what the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The member.
    pub member: String,
    /// The verdict after hysteresis.
    pub verdict: Verdict,
    /// What PostgreSQL said, when it answered.
    pub pg: Option<PgFacts>,
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `lifeboat failover approve [--to MEMBER]`: go ahead with a held failover, or fail over
    /// now (to `to`, or the best candidate).
    Approve {
        /// The member to promote; the best candidate when `None`.
        to: Option<String>,
    },
    /// `lifeboat switchover --to MEMBER`: a planned change with no data loss.
    Switchover {
        /// The standby to promote.
        to: String,
    },
    /// `lifeboat maintenance on|off`: pause or resume automation.
    Maintenance(bool),
}

/// What the driver tells the machine about a finished action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The action succeeded.
    Ok,
    /// `Claim` succeeded: the coordinator now holds this generation.
    Claimed(u64),
    /// `StopClean` succeeded: the stopped primary's last WAL position.
    Stopped(u64),
    /// `Claim` was refused: the coordinator holds a newer generation (another controller
    /// acted). This machine stops acting until restarted with the coordinator's state.
    Stale(u64),
    /// The action failed; the text says why.
    Failed(String),
    /// A repair succeeded, but not the plain way, and someone should know how (a standby
    /// that would not start was re-cloned, its old data directory set aside): the text says.
    Repaired(String),
}

/// One input to [`Machine::handle`]; `at` is the driver's monotonic time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A member's health changed or its facts were refreshed.
    Observe(Observation),
    /// An operator's command.
    Command(Command),
    /// An action finished.
    Done {
        /// The action's id.
        id: u64,
        /// How it went.
        outcome: Outcome,
    },
    /// Time passed (retries fall due on ticks).
    Tick,
}

/// Which queue an action runs on: failover steps one after another, background work per
/// member beside them, and notices at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A failover or switchover step: the next is emitted when this one is done.
    Step,
    /// Slow work on one member (rejoin, recovery, repointing) beside the steps.
    Background,
    /// Apply now, nothing to wait for (routes, alerts, records); no `Done` is expected.
    Notice,
}

/// How loud an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something changed that the team should know.
    Info,
    /// Something needs a person.
    Critical,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// Take generation `expected + 1` for `member` in the coordinator (compare-and-swap).
    Claim {
        /// The generation this machine believes is current.
        expected: u64,
        /// The member that will be primary.
        member: String,
    },
    /// Make `member` unable to accept writes (standby.signal, then kill), wherever reachable.
    Fence {
        /// The old primary.
        member: String,
    },
    /// Stop the primary cleanly for a switchover (its WAL reaches connected standbys).
    StopClean {
        /// The primary.
        member: String,
    },
    /// Promote a standby, after it has received WAL up to `wait_for_lsn` when given, and
    /// write the generation into it.
    Promote {
        /// The standby.
        member: String,
        /// A switchover's stopped primary's last position.
        wait_for_lsn: Option<u64>,
        /// `synchronous_standby_names` to set before promoting (`ANY 1 (names)`; empty =
        /// async), so that not one commit on the new primary is acknowledged unreplicated
        /// while standbys that could take it are being repointed.
        sync_names: Vec<String>,
    },
    /// Point the proxy: writes to `primary` (held while `None`), reads over `replicas`.
    Route {
        /// Where writes go.
        primary: Option<String>,
        /// Where reads go.
        replicas: Vec<String>,
    },
    /// Make a standby follow `primary`.
    Repoint {
        /// The standby.
        member: String,
        /// Its new upstream.
        primary: String,
    },
    /// Rewind (or re-clone) a former primary or a diverged standby to follow `primary`.
    Rejoin {
        /// The member.
        member: String,
        /// Its new upstream.
        primary: String,
    },
    /// Bring a lost standby back: start it, and rejoin it when it cannot stream.
    Recover {
        /// The standby.
        member: String,
        /// Its upstream.
        primary: String,
    },
    /// Set `synchronous_standby_names` on the primary (`ANY 1 (names)`, empty = async).
    SetSync {
        /// The primary.
        primary: String,
        /// The synchronous standbys.
        names: Vec<String>,
    },
    /// Tell the team.
    Alert {
        /// How loud.
        severity: Severity,
        /// What happened and what to do.
        message: String,
    },
}

/// One action, with the id its `Done` must carry and the generation it belongs to (the
/// driver refuses actions of a generation older than the coordinator's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Identifies the action in [`Input::Done`].
    pub id: u64,
    /// The generation current when it was decided.
    pub generation: u64,
    /// Its queue.
    pub lane: Lane,
    /// What to do.
    #[serde(flatten)]
    pub kind: ActionKind,
}

/// Where the cluster stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No primary is known yet: waiting for a member that is not in recovery.
    Discovering,
    /// The primary is up (standbys may be missing: see the members).
    Healthy,
    /// The primary is down; manual mode (or no safe candidate, or a fence of the old primary
    /// that was not confirmed) waits for approval.
    AwaitingApproval {
        /// Why it waits.
        reason: String,
    },
    /// A failover is under way.
    FailingOver {
        /// The old primary.
        from: String,
        /// The member being promoted.
        to: String,
    },
    /// A planned switchover is under way.
    Switching {
        /// The old primary.
        from: String,
        /// The member being promoted.
        to: String,
    },
    /// The coordinator holds a newer generation: this controller stopped acting.
    Stale {
        /// The coordinator's generation.
        found: u64,
    },
}

/// A member as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// The verdict of its probes.
    pub verdict: Verdict,
    /// What PostgreSQL said at the last answered probe.
    pub pg: Option<PgFacts>,
    /// Its last probe answered (a standby whose probes fail too, whatever its verdict so
    /// far, is no candidate: when every member stops answering at once, the trouble is more
    /// likely the monitor's — a starved or cut-off daemon — than the primary's).
    #[serde(skip)]
    pub fresh: bool,
    /// Must be rewound or re-cloned before it may serve (a former or rogue primary).
    pub needs_rejoin: bool,
    /// A rejoin or recovery of it is running.
    pub repairing: bool,
    /// Failed repairs in a row (for the back-off).
    pub failures: u32,
    /// Not before this time (driver time) is the next repair tried.
    #[serde(skip)]
    pub retry_at: Duration,
}

/// Serializes milliseconds as seconds (a number), the unit of every `--json` duration.
fn ms_as_seconds<S: serde::Serializer>(ms: &u64, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_f64(*ms as f64 / 1000.0)
}

/// One step of the last failover or switchover, for status and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Driver time in milliseconds since the controller started; shown as `at_seconds`
    /// (seconds, a number: docs/json.md).
    #[serde(rename = "at_seconds", serialize_with = "ms_as_seconds")]
    pub at_ms: u64,
    /// What happened.
    pub what: String,
}

/// The last failover or switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// `failover` or `switchover`.
    pub kind: String,
    /// The old primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// The generation it created (0 until claimed).
    pub generation: u64,
    /// Each step with its time.
    pub steps: Vec<StepRecord>,
    /// Whether it finished.
    pub done: bool,
    /// Started by `lifeboat failover approve` rather than automatically.
    pub approved: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Adopt,
    Claim,
    StopClean,
    Fence,
    Promote,
}

#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    step: Step,
    from: String,
    to: String,
    planned: bool,
    stopped_lsn: Option<u64>,
    sync_names: Vec<String>,
    /// An operator approved going on after the fence of `from` could not be confirmed.
    fence_approved: bool,
}

/// The failover controller's state machine (see the module comment).
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    generation: u64,
    primary: Option<String>,
    phase: Phase,
    maintenance: bool,
    members: BTreeMap<String, MemberView>,
    /// The synchronous set requested of the primary (sync mode).
    requested_sync: Option<Vec<String>>,
    /// Union of the names in force at the primary's last answered probe and requested since.
    sync_set: Vec<String>,
    /// The standbys the primary saw flush WAL up to `baseline`: they hold every commit
    /// acknowledged before the synchronous set was in force.
    confirmed: Vec<String>,
    /// The primary's WAL position at the first answered probe that showed a synchronous
    /// set in force (since its promotion, or since the set was last empty): a standby behind
    /// it may lack commits acknowledged without one, or by an earlier primary.
    baseline: Option<u64>,
    pending: Option<Pending>,
    /// A failover whose fence of the old primary could not be confirmed: claimed, not
    /// promoted, waiting for an operator's approval (nothing else is decided meanwhile).
    held: Option<Pending>,
    /// Until then, a promotion's synchronous standbys stay in the set while being repointed.
    sync_grace_until: Duration,
    background: BTreeMap<u64, String>,
    /// The background actions among them that fence a member (it needs a rejoin after).
    fencing: Vec<u64>,
    routed: Option<(Option<String>, Vec<String>)>,
    last: Option<Transition>,
    next_id: u64,
    now: Duration,
}

/// A snapshot of the machine for `lifeboat status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Where the cluster stands.
    #[serde(flatten)]
    pub phase: Phase,
    /// The coordinator generation this machine acts under.
    pub generation: u64,
    /// The primary, when known.
    pub primary: Option<String>,
    /// Automation paused.
    pub maintenance: bool,
    /// Each member.
    pub members: BTreeMap<String, MemberView>,
    /// The standbys a failover may promote in sync mode.
    pub sync_set: Vec<String>,
    /// The last failover or switchover.
    pub last_transition: Option<Transition>,
    /// The standby an automatic failover would promote now (`None`: the primary's loss
    /// would wait for approval; in sync mode until a standby is confirmed synchronous).
    pub failover_target: Option<String>,
}

impl Machine {
    /// A machine that starts from the coordinator's state: its generation and the primary it
    /// recorded (`None` on a new cluster).
    #[must_use]
    pub fn new(settings: Settings, generation: u64, primary: Option<String>) -> Self {
        let members = settings
            .members
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    MemberView {
                        verdict: Verdict::Unknown,
                        pg: None,
                        fresh: false,
                        needs_rejoin: false,
                        repairing: false,
                        failures: 0,
                        retry_at: Duration::ZERO,
                    },
                )
            })
            .collect();
        let phase = if primary.is_some() {
            Phase::Healthy
        } else {
            Phase::Discovering
        };
        Self {
            settings,
            generation,
            primary,
            phase,
            maintenance: false,
            members,
            requested_sync: None,
            sync_set: Vec::new(),
            confirmed: Vec::new(),
            baseline: None,
            pending: None,
            held: None,
            sync_grace_until: Duration::ZERO,
            background: BTreeMap::new(),
            fencing: Vec::new(),
            routed: None,
            last: None,
            next_id: 1,
            now: Duration::ZERO,
        }
    }

    /// The current primary, when known.
    #[must_use]
    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    /// The generation this machine acts under.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the cluster stands.
    #[must_use]
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Everything `lifeboat status` shows of the controller.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase.clone(),
            generation: self.generation,
            primary: self.primary.clone(),
            maintenance: self.maintenance,
            members: self.members.clone(),
            sync_set: self.sync_set.clone(),
            last_transition: self.last.clone(),
            failover_target: self
                .primary
                .as_deref()
                .and_then(|p| self.candidate(p, false)),
        }
    }

    /// Takes one input at driver time `now` and returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Stale { .. }) {
            return out;
        }
        match input {
            Input::Observe(o) => self.observe(o, &mut out),
            Input::Command(c) => self.command(c, &mut out),
            Input::Done { id, outcome } => self.done(id, outcome, &mut out),
            Input::Tick => {}
        }
        if !matches!(self.phase, Phase::Stale { .. }) {
            self.evaluate(&mut out);
        }
        out
    }

    fn push(&mut self, out: &mut Vec<Action>, lane: Lane, kind: ActionKind) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        out.push(Action {
            id,
            generation: self.generation,
            lane,
            kind,
        });
        id
    }

    fn alert(&mut self, out: &mut Vec<Action>, severity: Severity, message: String) {
        self.push(out, Lane::Notice, ActionKind::Alert { severity, message });
    }

    fn record(&mut self, what: String) {
        let at_ms = u64::try_from(self.now.as_millis()).unwrap_or(u64::MAX);
        if let Some(t) = self.last.as_mut() {
            t.steps.push(StepRecord { at_ms, what });
        }
    }

    fn observe(&mut self, o: Observation, out: &mut Vec<Action>) {
        let Some(view) = self.members.get_mut(&o.member) else {
            return;
        };
        let was = view.verdict;
        view.verdict = o.verdict;
        view.fresh = o.pg.is_some();
        if o.pg.is_some() {
            view.pg = o.pg;
        }
        // The primary's answered probes tell which standbys were synchronous.
        if self.primary.as_deref() == Some(o.member.as_str()) && o.verdict == Verdict::Up {
            if let Some(pg) = self.members.get(&o.member).and_then(|v| v.pg.clone()) {
                if !pg.in_recovery {
                    let mut set = pg.sync_names.clone();
                    if let Some(req) = &self.requested_sync {
                        if *req != pg.sync_names {
                            // A change is on its way: either setting may be in force.
                            set.extend(req.iter().cloned());
                        }
                    }
                    set.sort();
                    set.dedup();
                    self.sync_set = set;
                    let going_async = self.requested_sync.as_ref().is_some_and(Vec::is_empty);
                    if pg.sync_names.is_empty() || going_async {
                        // Commits are (or may already be, the change being on its way)
                        // acknowledged on the primary alone: no standby can be known to
                        // hold them.
                        self.baseline = None;
                        self.confirmed.clear();
                    } else {
                        // Everything acknowledged before a synchronous set was in force lies
                        // at or below this position.
                        let baseline = *self.baseline.get_or_insert(pg.lsn);
                        for (name, flush) in &pg.replica_flush {
                            if *flush >= baseline && !self.confirmed.contains(name) {
                                self.confirmed.push(name.clone());
                            }
                        }
                    }
                }
            }
        }
        if was != o.verdict {
            let member = o.member.clone();
            if o.verdict == Verdict::Down {
                let role = if self.primary.as_deref() == Some(member.as_str()) {
                    "the primary"
                } else {
                    "standby"
                };
                self.alert(
                    out,
                    Severity::Critical,
                    format!("{role} {member} is down (its health checks failed)"),
                );
            } else if o.verdict == Verdict::Up && was == Verdict::Down {
                self.alert(out, Severity::Info, format!("{member} answers again"));
            }
        }
    }

    fn command(&mut self, c: Command, out: &mut Vec<Action>) {
        match c {
            Command::Maintenance(on) => {
                self.maintenance = on;
                let msg = if on {
                    "maintenance on: automatic failover, rejoin and recovery are paused"
                } else {
                    "maintenance off: automation resumed"
                };
                self.alert(out, Severity::Info, msg.into());
            }
            Command::Approve { to } => {
                if let Some(mut p) = self.held.take() {
                    if to.as_ref().is_some_and(|t| *t != p.to) {
                        self.alert(
                            out,
                            Severity::Critical,
                            format!(
                                "approve: the failover waiting for approval promotes {} (generation {} is claimed for it); approve without --to",
                                p.to, self.generation
                            ),
                        );
                        self.held = Some(p);
                        return;
                    }
                    self.record(format!(
                        "approved by an operator: {} counts as fenced; fencing once more, then promoting {}",
                        p.from, p.to
                    ));
                    if let Some(t) = self.last.as_mut() {
                        t.approved = true;
                    }
                    self.phase = Phase::FailingOver {
                        from: p.from.clone(),
                        to: p.to.clone(),
                    };
                    p.fence_approved = true;
                    self.fence_step(p, out);
                    return;
                }
                let Some(from) = self.primary.clone() else {
                    self.alert(out, Severity::Info, "approve: no primary is known".into());
                    return;
                };
                if self.pending.is_some() {
                    self.alert(
                        out,
                        Severity::Info,
                        "approve: a change is already under way".into(),
                    );
                    return;
                }
                let to = match to {
                    Some(t) => {
                        let ok = self.members.get(&t).is_some_and(|v| {
                            v.verdict == Verdict::Up
                                && v.pg.as_ref().is_some_and(|p| p.in_recovery)
                                && !v.needs_rejoin
                        });
                        if !ok {
                            self.alert(
                                out,
                                Severity::Critical,
                                format!("approve: {t} is not a healthy standby; nothing done"),
                            );
                            return;
                        }
                        Some(t)
                    }
                    None => self
                        .candidate(&from, false)
                        .or_else(|| self.candidate(&from, true)),
                };
                match to {
                    Some(to) => {
                        self.begin(from, to, false, out);
                        if let Some(t) = self.last.as_mut() {
                            t.approved = true;
                        }
                    }
                    None => self.alert(
                        out,
                        Severity::Critical,
                        "approve: no healthy standby to promote".into(),
                    ),
                }
            }
            Command::Switchover { to } => {
                let Some(from) = self.primary.clone() else {
                    self.alert(
                        out,
                        Severity::Info,
                        "switchover: no primary is known".into(),
                    );
                    return;
                };
                let primary_up = self
                    .members
                    .get(&from)
                    .is_some_and(|v| v.verdict == Verdict::Up);
                let target_ok = self.members.get(&to).is_some_and(|v| {
                    v.verdict == Verdict::Up
                        && v.pg.as_ref().is_some_and(|p| p.in_recovery && p.streaming)
                        && !v.needs_rejoin
                });
                if self.pending.is_some() || !matches!(self.phase, Phase::Healthy) {
                    self.alert(out, Severity::Info, "switchover: the cluster is not healthy or a change is under way; nothing done".into());
                } else if !primary_up || !target_ok || from == to {
                    self.alert(
                        out,
                        Severity::Info,
                        format!("switchover: {to} is not a streaming standby of an up primary; nothing done"),
                    );
                } else {
                    self.begin(from, to, true, out);
                }
            }
        }
    }

    /// Starts a failover (`planned` = switchover) from `from` to `to`: close the write
    /// route, then claim the next generation.
    fn begin(&mut self, from: String, to: String, planned: bool, out: &mut Vec<Action>) {
        self.last = Some(Transition {
            kind: if planned { "switchover" } else { "failover" }.into(),
            from: from.clone(),
            to: to.clone(),
            generation: 0,
            steps: Vec::new(),
            done: false,
            approved: false,
        });
        self.record(format!("decided: promote {to} in place of {from}"));
        self.phase = if planned {
            Phase::Switching {
                from: from.clone(),
                to: to.clone(),
            }
        } else {
            Phase::FailingOver {
                from: from.clone(),
                to: to.clone(),
            }
        };
        self.route(None, out);
        let id = self.push(
            out,
            Lane::Step,
            ActionKind::Claim {
                expected: self.generation,
                member: to.clone(),
            },
        );
        self.pending = Some(Pending {
            id,
            step: Step::Claim,
            from,
            to,
            planned,
            stopped_lsn: None,
            sync_names: Vec::new(),
            fence_approved: false,
        });
    }

    fn done(&mut self, id: u64, outcome: Outcome, out: &mut Vec<Action>) {
        if let Some(member) = self.background.remove(&id) {
            let fenced = self.fencing.contains(&id);
            self.fencing.retain(|f| *f != id);
            if let Some(v) = self.members.get_mut(&member) {
                v.repairing = false;
                if fenced {
                    // Fenced (or not: it may still take writes): either way it must be
                    // rewound before it serves again.
                    v.needs_rejoin = true;
                    v.retry_at = self.now;
                } else if matches!(outcome, Outcome::Failed(_)) {
                    v.failures = v.failures.saturating_add(1);
                    let factor = 1u32 << v.failures.min(4);
                    v.retry_at = self.now + self.settings.retry * factor;
                } else {
                    v.failures = 0;
                    v.needs_rejoin = false;
                    // Give it one retry period to start streaming before judging it again.
                    v.retry_at = self.now + self.settings.retry;
                }
            }
            if let Outcome::Failed(why) | Outcome::Repaired(why) = outcome {
                self.alert(out, Severity::Critical, format!("{member}: {why}"));
            }
            return;
        }
        let Some(mut p) = self.pending.take().filter(|p| p.id == id) else {
            return;
        };
        match (p.step, outcome) {
            (_, Outcome::Stale(found)) => {
                self.record(format!("refused: the coordinator holds generation {found}"));
                self.phase = Phase::Stale { found };
                self.alert(
                    out,
                    Severity::Critical,
                    format!(
                        "the coordinator holds generation {found}, newer than this controller's {}: another controller acted; this one stops",
                        self.generation
                    ),
                );
            }
            (Step::Adopt, Outcome::Claimed(g)) => {
                self.generation = g;
                self.record(format!("claimed generation {g}: {} is the primary", p.to));
                if let Some(t) = self.last.as_mut() {
                    t.generation = g;
                    t.done = true;
                }
                self.primary = Some(p.to);
                self.phase = Phase::Healthy;
            }
            (Step::Adopt, outcome) => {
                self.record(format!("claiming {} failed: {outcome:?}", p.to));
                self.phase = Phase::Discovering;
            }
            (Step::Claim, Outcome::Claimed(g)) => {
                self.generation = g;
                if let Some(t) = self.last.as_mut() {
                    t.generation = g;
                }
                self.record(format!("claimed generation {g}"));
                if p.from == p.to {
                    // The fenced old primary itself is promoted afresh.
                    self.promote_step(p, out);
                    return;
                }
                let (step, kind) = if p.planned {
                    (
                        Step::StopClean,
                        ActionKind::StopClean {
                            member: p.from.clone(),
                        },
                    )
                } else {
                    (
                        Step::Fence,
                        ActionKind::Fence {
                            member: p.from.clone(),
                        },
                    )
                };
                p.id = self.push(out, Lane::Step, kind);
                p.step = step;
                self.pending = Some(p);
            }
            (Step::StopClean, Outcome::Stopped(lsn)) => {
                self.record(format!("stopped {} cleanly at {lsn:X}", p.from));
                if let Some(v) = self.members.get_mut(&p.from) {
                    // What it said while it ran no longer holds (a probe from before the
                    // stop would make it look like a second writable primary).
                    v.pg = None;
                }
                p.stopped_lsn = Some(lsn);
                self.promote_step(p, out);
            }
            (Step::StopClean, outcome) => {
                // Not stopped cleanly: fence it; the promotion then waits for nothing.
                self.record(format!(
                    "clean stop of {} failed ({outcome:?}); fencing",
                    p.from
                ));
                self.fence_step(p, out);
            }
            (Step::Fence, Outcome::Failed(why)) if !p.fence_approved => {
                // Not confirmed: the old primary may still take writes. Promoting now could
                // give two primaries; an operator must look (its route stays closed).
                self.record(format!(
                    "fencing {} was not confirmed ({why}); waiting for approval",
                    p.from
                ));
                let reason = if why.contains("failover approve") {
                    format!("{why} (a failover to {} is held until then)", p.to)
                } else {
                    format!(
                        "could not fence {}: {why}; make sure it cannot take writes, then `lifeboat failover approve` (a failover to {} is held until then)",
                        p.from, p.to
                    )
                };
                self.alert(out, Severity::Critical, reason.clone());
                self.phase = Phase::AwaitingApproval { reason };
                if let Some(v) = self.members.get_mut(&p.from) {
                    v.needs_rejoin = true;
                    v.pg = None;
                }
                self.held = Some(p);
            }
            (Step::Fence, outcome) => {
                match outcome {
                    Outcome::Failed(why) => self.record(format!(
                        "fencing {} still not confirmed ({why}); promoting as approved",
                        p.from
                    )),
                    _ => self.record(format!("fenced {}", p.from)),
                }
                if let Some(v) = self.members.get_mut(&p.from) {
                    v.needs_rejoin = true;
                    // What it said before the fence no longer holds.
                    v.pg = None;
                }
                self.promote_step(p, out);
            }
            (Step::Promote, Outcome::Failed(why)) => {
                self.record(format!("promoting {} failed: {why}", p.to));
                self.alert(
                    out,
                    Severity::Critical,
                    format!("promoting {} failed: {why}; trying another candidate", p.to),
                );
                if let Some(v) = self.members.get_mut(&p.to) {
                    v.needs_rejoin = true;
                }
                // The old primary is fenced: there is no primary until another promotion.
                let from = p.from.clone();
                self.primary = Some(from.clone());
                match self.candidate(&from, false) {
                    Some(next) if self.settings.automatic || p.planned => {
                        self.begin_promote_only(p, next, out);
                    }
                    _ => {
                        self.phase = Phase::AwaitingApproval {
                            reason: format!("promoting {} failed; no other safe candidate", p.to),
                        };
                    }
                }
            }
            (Step::Promote, _) => {
                let from = p.from.clone();
                let to = p.to.clone();
                self.record(format!("promoted {to}; writes go to it"));
                self.baseline = None;
                self.confirmed.clear();
                // The new primary's synchronous set, as told before it was promoted.
                self.requested_sync = Some(p.sync_names.clone());
                self.sync_set.clone_from(&p.sync_names);
                self.sync_grace_until = self.now + SYNC_GRACE;
                self.primary = Some(to.clone());
                self.phase = Phase::Healthy;
                if let Some(t) = self.last.as_mut() {
                    t.done = true;
                }
                if let Some(v) = self.members.get_mut(&to) {
                    v.pg = v.pg.take().map(|mut pg| {
                        pg.in_recovery = false;
                        pg
                    });
                    v.needs_rejoin = false;
                }
                if from != to {
                    if let Some(v) = self.members.get_mut(&from) {
                        v.needs_rejoin = true;
                        v.failures = 0;
                        v.retry_at = Duration::ZERO;
                    }
                }
                self.alert(
                    out,
                    Severity::Critical,
                    format!(
                        "{} from {from} to {to} done: generation {}",
                        if p.planned { "switchover" } else { "failover" },
                        self.generation
                    ),
                );
                let others: Vec<String> = self
                    .settings
                    .members
                    .iter()
                    .filter(|m| **m != to && **m != from)
                    .cloned()
                    .collect();
                for m in others {
                    let id = self.push(
                        out,
                        Lane::Background,
                        ActionKind::Repoint {
                            member: m.clone(),
                            primary: to.clone(),
                        },
                    );
                    if let Some(v) = self.members.get_mut(&m) {
                        v.repairing = true;
                    }
                    self.background.insert(id, m);
                }
            }
            (step, outcome) => {
                // An outcome that does not fit the step (a driver bug): stop and say so.
                self.record(format!("unexpected outcome {outcome:?} for {step:?}"));
                self.phase = Phase::AwaitingApproval {
                    reason: format!("unexpected outcome {outcome:?} for step {step:?}"),
                };
            }
        }
    }

    /// The failover's next step is fencing the old primary (`p.from`).
    fn fence_step(&mut self, mut p: Pending, out: &mut Vec<Action>) {
        p.id = self.push(
            out,
            Lane::Step,
            ActionKind::Fence {
                member: p.from.clone(),
            },
        );
        p.step = Step::Fence;
        self.pending = Some(p);
    }

    fn promote_step(&mut self, mut p: Pending, out: &mut Vec<Action>) {
        let sync_names: Vec<String> = if self.settings.sync {
            self.settings
                .members
                .iter()
                .filter(|m| **m != p.to && **m != p.from)
                .filter(|m| {
                    self.members.get(*m).is_some_and(|v| {
                        v.verdict == Verdict::Up
                            && !v.needs_rejoin
                            && v.pg.as_ref().is_some_and(|pg| pg.in_recovery)
                    })
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let sync_names = if sync_names.is_empty()
            && self.settings.strict
            && p.from != p.to
            && !p.from.is_empty()
        {
            // No other standby: commits on the new primary wait for the old one to rejoin.
            vec![p.from.clone()]
        } else {
            sync_names
        };
        p.sync_names.clone_from(&sync_names);
        p.id = self.push(
            out,
            Lane::Step,
            ActionKind::Promote {
                member: p.to.clone(),
                wait_for_lsn: p.stopped_lsn,
                sync_names,
            },
        );
        p.step = Step::Promote;
        self.pending = Some(p);
    }

    /// After a failed promotion: the generation is already ours, the old primary fenced.
    fn begin_promote_only(&mut self, mut p: Pending, to: String, out: &mut Vec<Action>) {
        p.to = to.clone();
        if let Some(t) = self.last.as_mut() {
            t.to = to.clone();
        }
        self.phase = Phase::FailingOver {
            from: p.from.clone(),
            to,
        };
        self.promote_step(p, out);
    }

    /// The best standby to promote in place of `from`, or `None` when none is safe.
    /// `any`: ignore the synchronous set (an operator accepted possible loss).
    fn candidate(&self, from: &str, any: bool) -> Option<String> {
        // A fenced primary whose replacement was never promoted, answering again (in
        // recovery, or still writable when the fence could not reach it), holds every commit
        // it acknowledged: no standby is safer.
        let from_back = self
            .members
            .get(from)
            .is_some_and(|v| v.needs_rejoin && v.verdict == Verdict::Up && v.pg.is_some());
        if from_back {
            return Some(from.to_string());
        }
        let up_standby = |m: &str| {
            self.members.get(m).is_some_and(|v| {
                v.verdict == Verdict::Up
                    && v.fresh
                    && !v.needs_rejoin
                    && v.pg.as_ref().is_some_and(|p| p.in_recovery)
            })
        };
        let lsn = |m: &str| {
            self.members
                .get(m)
                .and_then(|v| v.pg.as_ref())
                .map_or(0, |p| p.lsn)
        };
        let pool: Vec<&String> = if self.settings.sync && !any {
            // Every acknowledged commit is on at least one member of the set: all of them
            // must be compared, or the one holding the last commit may be the missing one.
            let set: Vec<&String> = self.sync_set.iter().filter(|m| *m != from).collect();
            if set.is_empty() || !set.iter().all(|m| up_standby(m)) {
                return None;
            }
            // Only a standby the primary saw flush WAL past the point where the set came in
            // force (so it holds every commit acknowledged before, by an earlier primary or
            // without a synchronous standby) may be promoted.
            set.into_iter()
                .filter(|m| self.confirmed.contains(m))
                .collect()
        } else {
            self.settings
                .members
                .iter()
                .filter(|m| *m != from && up_standby(m))
                .collect()
        };
        pool.into_iter()
            .max_by(|a, b| lsn(a).cmp(&lsn(b)).then_with(|| b.cmp(a)))
            .cloned()
    }

    fn route(&mut self, primary: Option<String>, out: &mut Vec<Action>) {
        let replicas: Vec<String> = self
            .settings
            .members
            .iter()
            .filter(|m| Some(m.as_str()) != primary.as_deref())
            .filter(|m| {
                self.members.get(*m).is_some_and(|v| {
                    v.verdict == Verdict::Up
                        && !v.needs_rejoin
                        && v.pg.as_ref().is_some_and(|p| p.in_recovery && p.streaming)
                })
            })
            .cloned()
            .collect();
        let want = (primary, replicas);
        if self.routed.as_ref() != Some(&want) {
            self.routed = Some(want.clone());
            self.push(
                out,
                Lane::Notice,
                ActionKind::Route {
                    primary: want.0,
                    replicas: want.1,
                },
            );
        }
    }

    /// Decides what the current picture calls for.
    fn evaluate(&mut self, out: &mut Vec<Action>) {
        if self.pending.is_some() || self.held.is_some() {
            return;
        }
        match self.phase.clone() {
            Phase::Discovering => self.discover(out),
            Phase::Healthy | Phase::AwaitingApproval { .. } if self.primary.is_none() => {
                self.discover(out);
            }
            Phase::Healthy | Phase::AwaitingApproval { .. } => self.watch_primary(out),
            _ => {}
        }
        if matches!(self.phase, Phase::Healthy) {
            self.fence_rogues(out);
            self.manage_sync(out);
            let primary = self.primary.clone();
            self.route(primary, out);
            self.repair(out);
        }
    }

    fn discover(&mut self, out: &mut Vec<Action>) {
        let writable: Vec<String> = self
            .members
            .iter()
            .filter(|(_, v)| {
                v.verdict == Verdict::Up && v.pg.as_ref().is_some_and(|p| !p.in_recovery)
            })
            .map(|(m, _)| m.clone())
            .collect();
        let all_seen = self.members.values().all(|v| v.verdict != Verdict::Unknown);
        match writable.as_slice() {
            [one] if all_seen => {
                // Record it as the primary of this generation (a claim keeps two controllers
                // from adopting different members).
                let one = one.clone();
                self.last = Some(Transition {
                    kind: "adopt".into(),
                    from: String::new(),
                    to: one.clone(),
                    generation: 0,
                    steps: Vec::new(),
                    done: false,
                    approved: false,
                });
                self.record(format!("adopting {one}, the only member not in recovery"));
                self.phase = Phase::FailingOver {
                    from: String::new(),
                    to: one.clone(),
                };
                let id = self.push(
                    out,
                    Lane::Step,
                    ActionKind::Claim {
                        expected: self.generation,
                        member: one.clone(),
                    },
                );
                self.pending = Some(Pending {
                    id,
                    step: Step::Adopt,
                    from: String::new(),
                    to: one,
                    planned: true,
                    stopped_lsn: None,
                    sync_names: Vec::new(),
                    fence_approved: false,
                });
            }
            [_, _, ..] if !matches!(self.phase, Phase::AwaitingApproval { .. }) => {
                let list = writable.join(", ");
                self.phase = Phase::AwaitingApproval {
                    reason: format!("several members accept writes ({list})"),
                };
                self.alert(
                        out,
                        Severity::Critical,
                        format!("several members accept writes ({list}); nothing is routed until one is chosen: stop the others"),
                    );
            }
            [] if matches!(self.phase, Phase::AwaitingApproval { .. }) => {
                self.phase = Phase::Discovering;
            }
            _ => {}
        }
    }

    fn watch_primary(&mut self, out: &mut Vec<Action>) {
        let Some(primary) = self.primary.clone() else {
            self.phase = Phase::Discovering;
            return;
        };
        // A fenced primary (a failover of it did not finish) never takes writes again as it
        // is: it counts as down until promoted afresh.
        let down = self
            .members
            .get(&primary)
            .is_some_and(|v| v.verdict == Verdict::Down || v.needs_rejoin);
        if !down {
            if matches!(self.phase, Phase::AwaitingApproval { .. }) {
                self.phase = Phase::Healthy;
                self.alert(
                    out,
                    Severity::Info,
                    format!("the primary {primary} answers again; no failover"),
                );
            }
            return;
        }
        if self.maintenance {
            // Nothing is done, but nobody may think writes are taken.
            let reason = "maintenance: automation is paused; `lifeboat maintenance off` fails over (or `lifeboat failover approve` now)".to_string();
            if !matches!(&self.phase, Phase::AwaitingApproval { reason: r } if *r == reason) {
                self.route(None, out);
                self.alert(
                    out,
                    Severity::Critical,
                    format!("the primary {primary} is down: {reason}"),
                );
                self.phase = Phase::AwaitingApproval { reason };
            }
            return;
        }
        let candidate = self.candidate(&primary, false);
        match candidate {
            Some(to) if self.settings.automatic => self.begin(primary, to, false, out),
            found => {
                let reason = match found {
                    Some(to) => format!("manual failover: waiting for `lifeboat failover approve` (best candidate {to})"),
                    None if self.settings.sync => "no synchronous standby can be compared: promoting another may lose acknowledged writes; `lifeboat failover approve --to MEMBER` accepts that".into(),
                    None => "no healthy standby to promote".into(),
                };
                if !matches!(&self.phase, Phase::AwaitingApproval { reason: r } if *r == reason) {
                    self.route(None, out);
                    self.alert(
                        out,
                        Severity::Critical,
                        format!("the primary {primary} is down: {reason}"),
                    );
                    self.phase = Phase::AwaitingApproval { reason };
                }
            }
        }
    }

    /// A member other than the primary that accepts writes is fenced and rejoined.
    fn fence_rogues(&mut self, out: &mut Vec<Action>) {
        let rogues: Vec<String> = self
            .members
            .iter()
            .filter(|(m, v)| {
                Some(m.as_str()) != self.primary.as_deref()
                    && v.verdict == Verdict::Up
                    && !v.repairing
                    && v.pg.as_ref().is_some_and(|p| !p.in_recovery)
            })
            .map(|(m, _)| m.clone())
            .collect();
        for m in rogues {
            self.alert(
                out,
                Severity::Critical,
                format!("{m} accepts writes but is not the primary: fencing it"),
            );
            let id = self.push(
                out,
                Lane::Background,
                ActionKind::Fence { member: m.clone() },
            );
            if let Some(v) = self.members.get_mut(&m) {
                v.needs_rejoin = true;
                v.repairing = true;
                // Its facts are stale once fenced; the next probe tells.
                v.pg = None;
            }
            self.fencing.push(id);
            self.background.insert(id, m);
        }
    }

    fn manage_sync(&mut self, out: &mut Vec<Action>) {
        if !self.settings.sync || self.maintenance {
            return;
        }
        let Some(primary) = self.primary.clone() else {
            return;
        };
        let Some(ppg) = self
            .members
            .get(&primary)
            .filter(|v| v.verdict == Verdict::Up)
            .and_then(|v| v.pg.clone())
        else {
            return;
        };
        let mut want: Vec<String> = ppg
            .replicas
            .iter()
            .filter(|r| {
                self.members
                    .get(*r)
                    .is_some_and(|v| v.verdict != Verdict::Down && !v.needs_rejoin)
            })
            .cloned()
            .collect();
        if self.now < self.sync_grace_until {
            // Just promoted: the standbys named at promotion are being repointed.
            if let Some(req) = &self.requested_sync {
                want.extend(req.iter().cloned());
            }
        }
        want.sort();
        want.dedup();
        if self.requested_sync.as_ref() == Some(&want) {
            return;
        }
        if want.is_empty() && self.settings.strict {
            // Writes wait for a standby rather than go unreplicated.
            return;
        }
        if want.is_empty() {
            if ppg.sync_names.is_empty() && self.requested_sync.is_none() {
                self.requested_sync = Some(want);
                return;
            }
            self.alert(
                out,
                Severity::Critical,
                format!("no standby is streaming from {primary}: commits are no longer replicated before they are acknowledged"),
            );
        }
        self.requested_sync = Some(want.clone());
        if want.is_empty() {
            // From the moment the primary applies this, it acknowledges commits alone: no
            // standby can be known to hold them (not even before the next probe shows it).
            self.baseline = None;
            self.confirmed.clear();
        }
        let mut set = ppg.sync_names.clone();
        set.extend(want.iter().cloned());
        set.sort();
        set.dedup();
        self.sync_set = set;
        self.push(
            out,
            Lane::Notice,
            ActionKind::SetSync {
                primary,
                names: want,
            },
        );
    }

    /// Rejoins former primaries and recovers lost standbys, with back-off.
    fn repair(&mut self, out: &mut Vec<Action>) {
        if self.maintenance {
            return;
        }
        let Some(primary) = self.primary.clone() else {
            return;
        };
        let primary_up = self
            .members
            .get(&primary)
            .is_some_and(|v| v.verdict == Verdict::Up);
        if !primary_up {
            return;
        }
        let now = self.now;
        let due: Vec<(String, bool)> = self
            .members
            .iter()
            .filter(|(m, v)| **m != primary && !v.repairing && v.retry_at <= now)
            .filter_map(|(m, v)| {
                let diverged =
                    v.pg.as_ref()
                        .is_some_and(|p| p.in_recovery && !p.streaming && v.verdict == Verdict::Up)
                        && !self.members.get(&primary).is_some_and(|pv| {
                            pv.pg.as_ref().is_some_and(|p| p.replicas.contains(m))
                        });
                if v.needs_rejoin {
                    Some((m.clone(), true))
                } else if v.verdict == Verdict::Down || diverged {
                    Some((m.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (m, rejoin) in due {
            let kind = if rejoin {
                ActionKind::Rejoin {
                    member: m.clone(),
                    primary: primary.clone(),
                }
            } else {
                ActionKind::Recover {
                    member: m.clone(),
                    primary: primary.clone(),
                }
            };
            let id = self.push(out, Lane::Background, kind);
            if let Some(v) = self.members.get_mut(&m) {
                v.repairing = true;
            }
            self.background.insert(id, m);
        }
    }
}
