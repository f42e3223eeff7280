//! The failover controller: a pure state machine (observations and commands in, actions
//! out) and the PostgreSQL operations that carry the actions out.
//!
//! The state machine must never touch a server or a clock of its own; time comes in with
//! the observations, so a seeded simulation replays any history.

pub mod machine;

pub use machine::{
    Action, ActionKind, Command, Input, Lane, Machine, MemberView, Observation, Outcome, PgFacts,
    Phase, Settings, Severity, Snapshot, StepRecord, Transition, Verdict,
};
