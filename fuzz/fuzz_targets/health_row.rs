//! The one row of the health query (`lifeboat_health::fuzzing::health_row`): every column
//! as text or NULL, as a server (or a proxy in front of one) answers it. The input is split
//! into the query's columns at `\x00` bytes (`\x01` alone stands for NULL). Nothing may
//! panic; a row that reads as a state is self-consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_health::fuzzing::{health_row, COLUMNS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut cols: Vec<Option<&str>> = text
        .split('\0')
        .map(|c| (c != "\u{1}").then_some(c))
        .collect();
    // Mostly the right number of columns, so the values themselves are explored.
    if cols.len() < COLUMNS && text.len() % 7 != 0 {
        cols.resize(COLUMNS, None);
    }
    if let Ok(state) = health_row(&cols) {
        if state.in_recovery {
            assert!(state.current_lsn.is_none() || cols[1].is_some());
        }
    }
});
