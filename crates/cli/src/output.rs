//! Rendering: one JSON document on stdout with `--json`, text otherwise.
//! Never here: secrets; every value printed comes from a `*Report` or snapshot metadata.

use std::io::Write;

use serde::Serialize;

/// The version of the `--json` vocabulary (docs/json.md): fields are only added within a
/// version; a renamed or removed field, or a changed unit, bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// A `--json` document: `schema_version` first, then the fields of the report.
#[derive(Serialize)]
pub struct Versioned<'a, T: Serialize> {
    /// Always [`SCHEMA_VERSION`].
    schema_version: u32,
    /// The report; its fields follow `schema_version` at the top level.
    #[serde(flatten)]
    doc: &'a T,
}

impl<'a, T: Serialize> Versioned<'a, T> {
    /// Wraps `doc` (a struct or map) with the current [`SCHEMA_VERSION`].
    pub fn new(doc: &'a T) -> Self {
        Versioned {
            schema_version: SCHEMA_VERSION,
            doc,
        }
    }
}

/// Prints `value` (a struct or map) as one JSON document on stdout, with a top-level
/// `schema_version` (docs/json.md).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    json_as_is(&Versioned::new(value))
}

/// Prints `value` as one JSON document on stdout as it is: for the documents that are
/// arrays (`snapshots`, `key list`) and those that carry their own `schema_version`.
pub fn json_as_is<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Prints a line on stdout (propagating broken pipes as errors).
pub fn line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

/// Whether the error is a broken pipe on stdout (`lifeboat ls | head`): exit 0 then.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    lifeboat_types::ByteSize(n).to_string()
}

/// A time for people: `2026-11-22 03:20:52` (UTC).
pub fn time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// Formats a mode like `ls -l`.
pub fn mode_string(kind: char, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string('-', 0o644), "-rw-r--r--");
        assert_eq!(mode_string('-', 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string('d', 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string('-', 0o2640), "-rw-r-S---");
    }
}
