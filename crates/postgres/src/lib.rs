//! Lifeboat's PostgreSQL knowledge: continuous protection of a cluster in a Lifeboat
//! repository.
//!
//! - [`walname`]: WAL file names, segment sizes, timeline history files.
//! - [`replication`]: a blocking client of PostgreSQL's streaming replication protocol
//!   (what `pg_receivewal` speaks).
//!
//! Everything stores into the repository of `lifeboat-repo`: base backups are snapshots
//! (marked as base backups), WAL files are WAL objects
//! (`lifeboat_repo::wal`). Never here: argument parsing or printing (the binary does that).

pub mod error;
pub mod replication;
pub mod walname;

pub use error::{Error, Result};
