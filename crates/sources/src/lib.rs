//! Lifeboat's sources: what goes into a repository and how it comes back out.
//!
//! Main entry points: [`backup::backup`] (file trees, with metadata, skipping files unchanged
//! since the parent snapshot), [`backup::backup_stream`] (stdin, e.g. `pg_dump | lifeboat
//! backup --stdin`), [`restore::restore`] and [`restore::dump`]; [`delta`] rebuilds and
//! writes files stored as XOR layers over their previous version (`BackupOptions::
//! delta_files`, used by `pg backup`); [`beneath`] resolves paths below a restore target
//! without following symlinks and makes a restored tree durable
//! ([`beneath::sync_filesystem`]).
//! Never here: the repository format (lifeboat-repo) or anything that prints.

pub mod backup;
pub mod beneath;
pub mod delta;
pub mod meta;
pub mod progress;
pub mod restore;

pub use progress::Progress;
