//! Lifeboat's PostgreSQL knowledge: continuous protection of a cluster in a Lifeboat
//! repository.
//!
//! - [`walname`]: WAL file names, segment sizes, timeline history files.
//! - [`archive`]: `archive_command` / `restore_command` (`pg wal-push`, `pg wal-fetch`).
//! - [`backup`]: base backups with `pg_backup_start` / `pg_backup_stop`.
//! - [`catalog`]: base backups, WAL ranges and gaps of a source.
//! - [`restore`]: point-in-time restore into a data directory.
//! - [`stream`]: WAL streamed into the repository within a fraction of a second.
//! - [`retention`]: the WAL no kept base backup needs.
//! - [`spool`]: asynchronous archiving and WAL prefetch through a local spool directory.
//! - [`replication`]: a blocking client of PostgreSQL's streaming replication protocol
//!   (what `pg_receivewal` speaks).
//! - [`cluster`]: high-availability operations on a primary and its standbys (init, clone,
//!   promote, fence, repoint, rejoin, synchronous standbys, generation).
//! - [`server_files`]: decoders of `postmaster.pid` and `pg_controldata`'s report.
//! - [`verify`]: the restore test: restore into a scratch directory, recover, query, clean up.
//!
//! Everything stores into the repository of `lifeboat-repo`: base backups are snapshots
//! (marked as base backups), WAL files are WAL objects
//! (`lifeboat_repo::wal`). Never here: argument parsing or printing (the binary does that).

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod cluster;
pub mod error;
pub mod replication;
pub mod restore;
pub mod retention;
pub mod server_files;
pub mod slots;
pub mod spool;
pub mod stream;
pub mod verify;
pub mod walname;

pub use error::{Error, Result};
