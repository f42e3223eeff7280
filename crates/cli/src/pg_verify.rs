//! `lifeboat pg verify`: the restore test. Never here: PostgreSQL logic
//! (`lifeboat_postgres::verify`).

use anyhow::Result;

use crate::cli::{Global, PgVerifyCmd};
use crate::commands::usage;

/// Runs `pg verify`.
pub fn run(_g: &Global, _c: PgVerifyCmd) -> Result<u8> {
    Err(usage("pg verify is not built yet", None))
}
