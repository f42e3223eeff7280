//! `lifeboat cluster bootstrap`: makes the config's cluster exist. The first member is
//! created (initdb) or adopted when its data directory already holds a cluster; every other
//! member is cloned from it with `pg_basebackup` and a replication slot, or adopted. In
//! `sync` mode the primary is told to wait for its standbys before acknowledging a commit.
//! The coordinator records the primary at generation 1.
//!
//! It never deletes a data directory and never re-initialises a member that holds data.

use std::path::Path;
use std::time::Instant;

use lifeboat_config::{Config, Replication};
use lifeboat_coord::{Coordinator, EmbeddedOptions, EtcdOptions};
use lifeboat_postgres::cluster::{HostAuth, InitSettings, Member, Pg, SyncMode};
use serde::Serialize;

/// What bootstrap did to each member.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    /// The primary.
    pub primary: String,
    /// One line per member: `created`, `adopted`, `cloned`, `already streaming`.
    pub members: Vec<(String, String)>,
    /// The coordinator's generation afterwards.
    pub generation: u64,
    /// Seconds it took.
    pub duration_seconds: f64,
}

/// Why bootstrap stopped.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A PostgreSQL operation failed.
    #[error("member {member}: {source}")]
    Pg {
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: Box<lifeboat_postgres::cluster::ClusterError>,
    },
    /// The coordinator failed.
    #[error("coordinator: {0}")]
    Coordinator(#[from] lifeboat_coord::Error),
    /// Something about the layout.
    #[error("{0}")]
    Invalid(String),
}

/// The `Pg` handle for `config` (its user, password and PostgreSQL's binaries).
#[must_use]
pub fn pg_for(config: &Config, bin_dir: Option<&Path>) -> Pg {
    let mut pg = Pg::new(config.cluster.user.clone());
    if let Some(d) = bin_dir {
        pg = pg.with_bin_dir(d);
    }
    if let Some(pw) = &config.cluster.password {
        pg = pg.with_password(pw.clone());
    }
    pg
}

/// The config's members as the PostgreSQL operations see them.
#[must_use]
pub fn members_of(config: &Config) -> Vec<Member> {
    config
        .cluster
        .members
        .iter()
        .map(|m| Member::new(&m.name, &m.host, m.port, &m.data_dir))
        .collect()
}

fn has_cluster(m: &Member) -> bool {
    m.data_dir.join("PG_VERSION").exists()
}

/// Creates or adopts the primary, clones or adopts the standbys, sets the synchronous
/// standbys, and records the primary in the coordinator. Safe to run again.
///
/// # Errors
/// [`BootstrapError`] naming the member and the operation that failed.
pub async fn bootstrap(
    config: &Config,
    bin_dir: Option<&Path>,
) -> Result<BootstrapReport, BootstrapError> {
    let started = Instant::now();
    let pg = pg_for(config, bin_dir);
    let members = members_of(config);
    let coord = match &config.coordinator {
        lifeboat_config::Coordinator::Embedded { state } => {
            if let Some(parent) = state.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    BootstrapError::Invalid(format!("creating {}: {e}", parent.display()))
                })?;
            }
            Coordinator::open_embedded(EmbeddedOptions::new(state, &config.cluster.name)).await?
        }
        lifeboat_config::Coordinator::Etcd { endpoints } => {
            Coordinator::connect_etcd(EtcdOptions::new(endpoints.clone(), &config.cluster.name))
                .await?
        }
    };
    let state = coord.state().await?;
    let sync = config.cluster.replication == Replication::Sync;
    let auth = if config.cluster.password.is_some() {
        HostAuth::ScramSha256
    } else {
        HostAuth::Trust
    };
    let recorded = state.primary.clone();
    let recorded_in = recorded.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<_, BootstrapError> {
        let recorded = recorded_in;
        let pgerr = |m: &Member| {
            let member = m.name.clone();
            move |source| BootstrapError::Pg {
                member,
                source: Box::new(source),
            }
        };
        // The primary: the coordinator's, else the first member.
        let primary = recorded
            .as_deref()
            .and_then(|p| members.iter().find(|m| m.name == p))
            .or_else(|| members.first())
            .ok_or_else(|| BootstrapError::Invalid("the cluster has no member".into()))?
            .clone();
        let mut lines = Vec::new();
        if has_cluster(&primary) {
            if !pg.is_running(&primary).map_err(pgerr(&primary))? {
                pg.start(&primary).map_err(pgerr(&primary))?;
            }
            let r = pg.adopt(&primary).map_err(pgerr(&primary))?;
            if r.in_recovery == Some(true) {
                return Err(BootstrapError::Invalid(format!(
                    "{} is in recovery; bootstrap expects the primary ({}) to accept writes",
                    primary.name, primary.name
                )));
            }
            lines.push((primary.name.clone(), "adopted".to_string()));
        } else {
            prepare_dir(&primary.data_dir)?;
            let settings = InitSettings {
                auth,
                socket_dir: primary.data_dir.parent().map(Path::to_path_buf),
                ..InitSettings::default()
            };
            pg.init_primary(&primary, &settings)
                .map_err(pgerr(&primary))?;
            lines.push((primary.name.clone(), "created".to_string()));
        }
        for m in members.iter().filter(|m| m.name != primary.name) {
            if has_cluster(m) {
                if !pg.is_running(m).map_err(pgerr(m))? {
                    pg.start(m).map_err(pgerr(m))?;
                }
                pg.wait_streaming(m, &primary, None).map_err(pgerr(m))?;
                lines.push((m.name.clone(), "adopted, streaming".to_string()));
            } else {
                prepare_dir(&m.data_dir)?;
                pg.clone_standby(&primary, m).map_err(pgerr(m))?;
                lines.push((m.name.clone(), "cloned, streaming".to_string()));
            }
        }
        if sync {
            let names: Vec<&str> = members
                .iter()
                .filter(|m| m.name != primary.name)
                .map(|m| m.name.as_str())
                .collect();
            pg.set_synchronous_standbys(&primary, &names, SyncMode::Any(1))
                .map_err(pgerr(&primary))?;
        }
        Ok((primary, lines))
    })
    .await
    .map_err(|e| BootstrapError::Invalid(format!("bootstrap panicked: {e}")))??;
    let (primary, lines) = report;
    let generation = match state.primary.as_deref() {
        Some(p) if p == primary.name => state.generation,
        _ => coord.promote(state.generation, &primary.name).await?,
    };
    let pg = pg_for(config, bin_dir);
    let p = primary.clone();
    let _ = tokio::task::spawn_blocking(move || set_generation_conf(&pg, &p, generation)).await;
    Ok(BootstrapReport {
        primary: primary.name,
        members: lines,
        generation,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records the generation in the primary (best effort: status shows it).
fn set_generation_conf(pg: &Pg, m: &Member, generation: u64) {
    if let Err(e) = pg.set_generation(m, generation) {
        tracing::warn!(member = %m.name, "recording generation {generation}: {e}");
    }
}

/// Makes sure a new data directory's parent exists and PostgreSQL's OS user can create
/// the directory in it (when running as root, the parent is given to `postgres`).
fn prepare_dir(data_dir: &Path) -> Result<(), BootstrapError> {
    let parent = data_dir
        .parent()
        .ok_or_else(|| BootstrapError::Invalid(format!("{} has no parent", data_dir.display())))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| BootstrapError::Invalid(format!("creating {}: {e}", parent.display())))?;
    if rustix::process::geteuid().is_root() {
        let (uid, gid) = postgres_ids().ok_or_else(|| {
            BootstrapError::Invalid(
                "running as root, but there is no `postgres` user to run PostgreSQL as; install postgresql-15".into(),
            )
        })?;
        std::os::unix::fs::chown(parent, Some(uid), Some(gid))
            .map_err(|e| BootstrapError::Invalid(format!("chown {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres"))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}
