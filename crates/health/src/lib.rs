//! Health probes of cluster members: PostgreSQL (connect + query: role, LSNs, replication),
//! TCP and command checks, each with interval, timeout, fall and rise so that a blip shorter
//! than the threshold never changes a member's verdict.
//!
//! This crate observes; it must never act on a server (no promotion, no stop, no write).
//!
//! Main types:
//! * [`Target`] — what to probe; [`ProbeSettings`] — interval, timeout, fall, rise.
//! * [`Prober`] — one target, one probe at a time, returning an [`Observation`] (with a
//!   [`PgState`] for PostgreSQL).
//! * [`Hysteresis`] — the pure fall/rise tracker turning results into a [`Verdict`].
//! * [`Monitor`] — one task per [`Member`], publishing [`MemberHealth`] and
//!   [`HealthEvent`]s for the failover controller.
//!
//! ```no_run
//! use lifeboat_health::{Member, Monitor, ProbeSettings, Target, Verdict};
//!
//! # async fn example() -> Result<(), lifeboat_health::Error> {
//! let members = vec![Member {
//!     name: "db1".into(),
//!     target: Target::Postgres {
//!         host: "10.0.0.1".into(),
//!         port: 5432,
//!         user: "lifeboat".into(),
//!         dbname: "postgres".into(),
//!         password: None,
//!     },
//! }];
//! let monitor = Monitor::start(ProbeSettings::default(), members)?;
//! let mut events = monitor.events();
//! while let Ok(event) = events.recv().await {
//!     if let Some(t) = event.transition {
//!         println!("{} is now {:?} (was {:?})", event.health.member, t.to, t.from);
//!     }
//!     if event.health.verdict == Verdict::Down {
//!         break;
//!     }
//! }
//! monitor.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod error;
mod monitor;
mod observation;
mod pg;
mod probe;
mod settings;
mod target;
mod verdict;

pub use error::{Error, ProbeError};

/// The decoders of what a server answers a probe, pure (text in, value out), for the fuzz
/// targets (fuzz/fuzz_targets/health_row.rs). Not a stable interface.
#[doc(hidden)]
pub mod fuzzing {
    /// The health query's one row (each column as text, `None` for NULL) as a
    /// [`crate::PgState`].
    ///
    /// # Errors
    /// [`crate::ProbeError::Answer`] when the row is not what the query returns.
    pub fn health_row(cols: &[Option<&str>]) -> Result<crate::PgState, crate::ProbeError> {
        crate::pg::state_from_columns(cols)
    }

    /// The number of columns the health query returns.
    pub const COLUMNS: usize = crate::pg::COLUMNS;
}
pub use monitor::{HealthEvent, Member, MemberHealth, Monitor, EVENT_BUFFER};
pub use observation::{format_lsn, parse_lsn, Observation, PgState, ReplicationRow};
pub use probe::Prober;
pub use settings::ProbeSettings;
pub use target::Target;
pub use verdict::{Hysteresis, Transition, Verdict};
