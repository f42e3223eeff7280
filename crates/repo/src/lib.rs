//! Lifeboat's repository: a content-addressed, deduplicating, encrypted store of snapshots.
//!
//! Main types: [`Repository`] (open with a password, read and write its files),
//! [`BlobWriter`] (the bounded write pipeline), [`Chunker`] (FastCDC), [`Index`].
//! Which snapshots a command means (`latest`, ids, `--tag`/`--host`/`--path`) is
//! [`select`]. Maintenance lives in [`check`], [`prune`], [`copy`] and [`retention`];
//! leases that let backups and prune run side by side in [`lease`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use lifeboat_repo::{Repository, InitOptions};
//! let storage = lifeboat_storage::Storage::memory()?;
//! let repo = Repository::init(storage, b"password", &InitOptions::default())?;
//! let (snapshots, _damaged) = repo.snapshots()?;
//! assert!(snapshots.is_empty());
//! # Ok(()) }
//! ```
//!
//! The format is documented byte by byte in docs/format/README.md.

pub mod check;
pub mod chunker;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod format;
pub mod index;
pub mod keys;
pub mod lease;
pub mod prune;
pub mod repository;
pub mod retention;
pub mod select;
pub mod tree;
pub mod wal;
pub mod writer;

pub use chunker::Chunker;
pub use error::{Error, Result};
pub use index::Index;
pub use keys::KdfParams;
pub use repository::{InitOptions, Repository};
pub use select::SnapshotFilter;
pub use writer::{BlobWriter, InlineSealer, WriterOptions, WriterReport};
