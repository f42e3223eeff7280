//! Issue 10: shell completions and man pages, as a package installs them. Runs the real
//! binary and the real bash.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::process::Command;

use common::*;

#[test]
fn r10_completions_load_in_bash_and_name_every_command() {
    let env = Env::new();
    let bash = env.ok(&["completions", "bash"]);
    let script = env.path("lifeboat.bash");
    std::fs::write(&script, &bash).unwrap();
    // The script loads and registers a completion for `lifeboat`.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p lifeboat",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("lifeboat"));
    for sub in ["backup", "restore", "snapshots", "pg", "completions"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    for shell in ["zsh", "fish"] {
        let s = env.ok(&["completions", shell]);
        assert!(
            s.contains("restore") && s.contains("--overwrite"),
            "{shell}: {s:.200}"
        );
    }
    let o = env.run(&["completions", "tcsh-nope"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn r10_manpages_cover_every_command() {
    let env = Env::new();
    let dir = env.path("man1");
    env.ok(&["manpages", dir.to_str().unwrap()]);
    for page in [
        "lifeboat.1",
        "lifeboat-restore.1",
        "lifeboat-pg-restore.1",
        "lifeboat-pg-sources.1",
        "lifeboat-config-validate.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let restore = std::fs::read_to_string(dir.join("lifeboat-restore.1")).unwrap();
    assert!(
        restore.contains("overwrite"),
        "the page documents the flags"
    );
    // Hidden plumbing gets no page.
    assert!(!dir.join("lifeboat-manpages.1").exists());
}
