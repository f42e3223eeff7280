//! Lifeboat's daemon (`lifeboat run`): it composes the control plane for one PostgreSQL
//! cluster — health probes, the failover state machine, the coordinator, the executor
//! that carries the machine's actions out, the TCP proxy — and serves the HTTP API
//! (status, commands, and the `/primary` `/replica` `/read-only` `/health` endpoints for
//! external load balancers).
//!
//! It must never decide a failover itself (the pure machine in `lifeboat-failover` does),
//! and never print a secret (tokens and passwords stay in [`lifeboat_types::Secret`]).

pub mod agent;
pub mod api;
pub mod bootstrap;
mod compose;
pub mod convert;
pub mod daemon;
pub mod exec;
pub mod status;

pub use daemon::{Daemon, DaemonOptions, Error};
pub use status::{AlertRecord, MemberStatus, ProxyStatus, Status};
