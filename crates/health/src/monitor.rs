//! The runner: [`Monitor`] probes every member on its own tokio task and publishes each
//! member's [`MemberHealth`] — latest state per member, plus a stream of [`HealthEvent`]s.
//!
//! Lives here: scheduling (one probe in flight per member, `interval` between starts,
//! late ticks delayed rather than bunched), hysteresis per member, publication, shutdown.
//! Never here: deciding what a verdict means (that is `lifeboat-failover`), acting on a
//! server, or blocking on a slow consumer — publication never waits, so a stuck reader
//! cannot delay probes.

use std::collections::HashSet;
use std::time::Instant;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{Error, Hysteresis, Observation, ProbeSettings, Prober, Target, Transition, Verdict};

/// How many events a subscriber may fall behind before it sees
/// [`broadcast::error::RecvError::Lagged`].
pub const EVENT_BUFFER: usize = 1024;

/// A cluster member to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name, unique within a monitor (`db1`).
    pub name: String,
    /// What to probe.
    pub target: Target,
}

/// A member's health after its latest probe.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberHealth {
    /// The member's name.
    pub member: String,
    /// The latest probe's result.
    pub last: Observation,
    /// The verdict after hysteresis, including `last`.
    pub verdict: Verdict,
    /// Failed probes in a row up to `last` (0 when `last` is ok).
    pub consecutive_failures: u32,
    /// Passed probes in a row up to `last` (0 when `last` failed).
    pub consecutive_successes: u32,
    /// Since when the verdict holds: the start of the probe that decided it, or the
    /// monitor's start while it is `Unknown`.
    pub since: Instant,
}

/// Published after every probe of every member.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEvent {
    /// The member's health after the probe.
    pub health: MemberHealth,
    /// Set when this probe flipped the verdict.
    pub transition: Option<Transition>,
}

/// Probes members continuously until shut down or dropped.
///
/// Each member gets one task: it probes, updates the member's hysteresis, publishes, and
/// waits for the next tick of a `tokio::time::interval(settings.interval)` with
/// [`MissedTickBehavior::Delay`]. A probe takes at most `settings.timeout`, so when that
/// is longer than the interval the next probe starts right after the previous one ends;
/// two probes of one member are never in flight together.
///
/// Read it two ways:
/// * state: [`Monitor::snapshot`], [`Monitor::health`], or [`Monitor::subscribe`] for a
///   `watch` of one member (always the latest probe; never blocks the prober);
/// * events: [`Monitor::events`], a `broadcast` of every probe with its transition. A
///   subscriber that falls more than [`EVENT_BUFFER`] events behind gets `Lagged` and
///   should re-read [`Monitor::snapshot`]; the probers never wait for it.
pub struct Monitor {
    members: Vec<(String, watch::Receiver<Option<MemberHealth>>)>,
    events: broadcast::Sender<HealthEvent>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    settings: ProbeSettings,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("members", &self.members().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .field("stopped", &self.cancel.is_cancelled())
            .finish()
    }
}

impl Monitor {
    /// Starts probing `members` on the current tokio runtime; the first probe of each runs
    /// at once.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`], [`Error::InvalidTarget`], [`Error::DuplicateMember`],
    /// or [`Error::NoRuntime`] outside a tokio runtime. Nothing is spawned on error.
    pub fn start(settings: ProbeSettings, members: Vec<Member>) -> Result<Monitor, Error> {
        Self::start_with_shutdown(settings, members, &CancellationToken::new())
    }

    /// Like [`Monitor::start`]; the monitor also stops when `shutdown` is cancelled.
    ///
    /// # Errors
    /// As [`Monitor::start`].
    pub fn start_with_shutdown(
        settings: ProbeSettings,
        members: Vec<Member>,
        shutdown: &CancellationToken,
    ) -> Result<Monitor, Error> {
        settings.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut names = HashSet::new();
        let mut probers = Vec::with_capacity(members.len());
        for m in members {
            if !names.insert(m.name.clone()) {
                return Err(Error::DuplicateMember { member: m.name });
            }
            probers.push((m.name, Prober::new(m.target, settings.timeout)?));
        }
        let cancel = shutdown.child_token();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let started = tokio::time::Instant::now().into_std();
        let mut out = Vec::with_capacity(probers.len());
        let mut tasks = Vec::with_capacity(probers.len());
        for (name, prober) in probers {
            let (tx, rx) = watch::channel(None);
            let task = MemberTask {
                name: name.clone(),
                prober,
                settings,
                state: tx,
                events: events.clone(),
                cancel: cancel.clone(),
                started,
            };
            tasks.push(runtime.spawn(task.run()));
            out.push((name, rx));
        }
        Ok(Monitor {
            members: out,
            events,
            cancel,
            tasks,
            settings,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> ProbeSettings {
        self.settings
    }

    /// The members' names, in the order given to [`Monitor::start`].
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(n, _)| n.as_str())
    }

    /// Every member's latest health, in the order given; members not probed yet are left
    /// out.
    pub fn snapshot(&self) -> Vec<MemberHealth> {
        self.members
            .iter()
            .filter_map(|(_, rx)| rx.borrow().clone())
            .collect()
    }

    /// One member's latest health; `None` before its first probe or for an unknown name.
    pub fn health(&self, member: &str) -> Option<MemberHealth> {
        self.receiver(member).and_then(|rx| rx.borrow().clone())
    }

    /// A `watch` of one member's health (`None` until its first probe); `changed()` wakes
    /// after every probe. `None` for an unknown name. It ends (`changed()` errs) when the
    /// monitor stops.
    pub fn subscribe(&self, member: &str) -> Option<watch::Receiver<Option<MemberHealth>>> {
        self.receiver(member).cloned()
    }

    /// Every probe's result from now on, each with its transition if it flipped the
    /// verdict. Read [`Monitor::snapshot`] after subscribing for the state so far. The
    /// stream ends (`Closed`) when the monitor stops.
    pub fn events(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// Stops every prober and waits until they have finished: open PostgreSQL connections
    /// are closed and running commands killed.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "a health prober panicked");
                }
            }
        }
    }

    fn receiver(&self, member: &str) -> Option<&watch::Receiver<Option<MemberHealth>>> {
        self.members
            .iter()
            .find(|(n, _)| n == member)
            .map(|(_, rx)| rx)
    }
}

/// Dropping the monitor stops the probers at their next await (without waiting).
impl Drop for Monitor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One member's probe loop.
struct MemberTask {
    name: String,
    prober: Prober,
    settings: ProbeSettings,
    state: watch::Sender<Option<MemberHealth>>,
    events: broadcast::Sender<HealthEvent>,
    cancel: CancellationToken,
    started: Instant,
}

impl MemberTask {
    async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut hysteresis = Hysteresis::new(self.settings.fall, self.settings.rise);
        let mut since = self.started;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let last = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                o = self.prober.probe() => o,
            };
            let transition = hysteresis.observe(last.ok);
            if let Some(t) = transition {
                since = last.at;
                self.log(t, &last, hysteresis.consecutive_failures());
            } else if !last.ok {
                tracing::debug!(member = %self.name, error = last.error.as_deref().unwrap_or(""), "health probe failed");
            }
            let health = MemberHealth {
                member: self.name.clone(),
                last,
                verdict: hysteresis.verdict(),
                consecutive_failures: hysteresis.consecutive_failures(),
                consecutive_successes: hysteresis.consecutive_successes(),
                since,
            };
            self.state.send_replace(Some(health.clone()));
            // Err only means nobody subscribes right now.
            let _ = self.events.send(HealthEvent { health, transition });
        }
        tracing::debug!(member = %self.name, "health prober stopped");
    }

    fn log(&self, t: Transition, last: &Observation, failures: u32) {
        let target = self.prober.target();
        match t.to {
            Verdict::Down => tracing::warn!(
                member = %self.name, %target, from = ?t.from, failures,
                error = last.error.as_deref().unwrap_or(""),
                "member is down"
            ),
            Verdict::Up => tracing::info!(
                member = %self.name, %target, from = ?t.from, "member is up"
            ),
            Verdict::Unknown => {}
        }
    }
}
