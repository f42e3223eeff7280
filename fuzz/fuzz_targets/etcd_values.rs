//! What the coordinator reads back from etcd (`lifeboat_coord::fuzzing`): members' reports
//! (`members/<name>`, written by every agent, so by every node), the pending approval, and
//! history entries. Any bytes must decode or fail cleanly; a decoded report's age is
//! computed without overflow, and a decoded approval re-encodes and decodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_coord::fuzzing::{approval, history_entry, member_report};

/// AddressSanitizer's start-up options for this binary. `lifeboat-coord` links the bundled
/// SQLite of its embedded backend, whose amalgamation has two function-local statics named
/// `aiOff`; ASan's name-based ODR check reports them as one global defined twice (a false
/// positive: they are distinct locals) and aborts before the first input. Only that check
/// is turned off, for this target only.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_odr_violation=0".as_ptr()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = member_report("db1", data) {
        assert_eq!(r.member, "db1");
        let _ = r.report.get("role").and_then(|v| v.as_str());
    }
    if let Ok(a) = approval(data) {
        if let Ok(again) = serde_json::to_vec(&a) {
            // Times are stored in whole milliseconds; what was read is already whole.
            if let Ok(b) = approval(&again) {
                assert_eq!(a.generation, b.generation);
                assert_eq!(a.to, b.to);
            }
        }
    }
    let _ = history_entry(data);
});
