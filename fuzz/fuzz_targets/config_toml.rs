//! The daemon's config file (`lifeboat_config::parse`): any text, with its `${ENV}`
//! references, durations, addresses and member lists. Nothing may panic (problem positions
//! are computed from spans inside the text), and a rejected file lists at least one problem
//! with a line inside the text. `*_file` secrets are resolved against an empty directory.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "a-token-of-24-characters".to_string());
    let lines = text.lines().count().max(1);
    match lifeboat_config::parse("fuzz.toml", text, Path::new("/nonexistent-fuzz-dir"), &env) {
        Ok(c) => {
            assert!(!c.cluster.members.is_empty());
            assert!(c.health.timeout <= c.health.interval);
            let _ = c.warnings.to_string();
        }
        Err(p) => {
            assert!(!p.list.is_empty());
            for problem in &p.list {
                assert!(problem.line <= lines + 1, "{problem:?} beyond {lines} lines");
            }
            let _ = p.to_string();
        }
    }
});
