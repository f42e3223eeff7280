//! Issue 10: the DR copy of a snapshot can be found by the id people know. `copy` gives the
//! copy a new id in the target repository; the original id stays visible (`snapshots` shows
//! "copy of …", `--json` has `original`) and names the copy in every command that takes a
//! snapshot. Runs the real binary.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use common::*;

#[test]
fn r10_a_copied_snapshot_is_found_by_its_original_id() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("orders.csv"), text(200_000, 4)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.json(&["snapshots"]);
    let original = snaps[0]["id"].as_str().unwrap().to_string();
    let dr = env.path("dr");
    env.ok(&["copy", "--to", dr.to_str().unwrap()]);
    let drenv = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: dr.clone(),
    };

    // The copy has its own id, and says whose copy it is.
    let copies = drenv.json(&["snapshots"]);
    let copy_id = copies[0]["id"].as_str().unwrap();
    assert_ne!(copy_id, original, "a copy gets an id of its own");
    assert_eq!(copies[0]["original"].as_str(), Some(original.as_str()));
    let listing = drenv.ok(&["snapshots"]);
    assert!(
        listing.contains(&format!("copy of {}", &original[..8])),
        "snapshots shows the original id: {listing}"
    );

    // The original's short id names the copy in the DR repository.
    let t = env.path("t");
    drenv.ok(&["restore", &original[..8], "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("src"));
    let ls = drenv.ok(&["ls", &original[..8]]);
    assert!(ls.contains("orders.csv"), "{ls}");
    // An id that is neither a snapshot's nor an original's still matches nothing.
    let o = drenv.run(&["ls", "0000000"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
