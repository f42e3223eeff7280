//! What a PostgreSQL server leaves for Lifeboat to read (`lifeboat_postgres::server_files`):
//! `postmaster.pid` (torn by a crash, or written by something else) and `pg_controldata`'s
//! report. Nothing may panic; a PID read from a lock file is never one that would signal a
//! process group or every process.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_postgres::server_files::{parse_controldata, PostmasterPid};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(p) = PostmasterPid::parse(&text) {
        assert!(p.pid > 0 && i32::try_from(p.pid).is_ok());
        assert!(p.port != Some(0));
    }
    let cd = parse_controldata(&text);
    for (k, v) in &cd {
        assert_eq!(k.trim(), k);
        assert_eq!(v.trim(), v);
    }
});
