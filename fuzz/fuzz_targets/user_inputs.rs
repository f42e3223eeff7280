//! Every parser of text a user types (issue 9, item 8): recovery targets (`--to-time`,
//! `--to-lsn`, `--to-xid`, `--to-name`, `--timeline`), sizes (`--kdf-memory`,
//! `--pack-size`), percentages (`--read-data-subset`), config durations, LSNs as
//! `pg_lsn` text, and connection strings (`--dsn`, checked for a password). None may
//! panic; what parses prints back as the same value where there is a printer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_postgres::backup::dsn_has_password;
use lifeboat_postgres::restore::{parse_restore_point, parse_time, parse_timeline, parse_xid};
use lifeboat_types::{parse_percent, ByteSize, Lsn};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = parse_time(s) {
        // Printed the way the restore writes recovery_target_time, it reads back (years
        // 1 to 9999: PostgreSQL's `YYYY-MM-DD` has no sign).
        if t.to_zoned(jiff::tz::TimeZone::UTC).year() >= 1 {
            let printed = t.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string();
            assert_eq!(parse_time(&printed).ok(), Some(t), "{printed}");
        }
    }
    if let Ok(l) = s.parse::<Lsn>() {
        assert_eq!(l.to_string().parse::<Lsn>().ok(), Some(l));
        assert_eq!(lifeboat_health::parse_lsn(&l.to_string()), Some(l.0));
    }
    if let Some(l) = lifeboat_health::parse_lsn(s) {
        assert_eq!(s.parse::<Lsn>().ok(), Some(Lsn(l)), "two LSN parsers disagree on {s:?}");
    }
    if let Ok(x) = parse_xid(s) {
        assert!(x.bytes().all(|b| b.is_ascii_digit()));
    }
    if let Ok(n) = parse_restore_point(s) {
        assert!(!n.chars().any(char::is_control));
    }
    if let Ok(t) = parse_timeline(s) {
        assert_eq!(parse_timeline(&t).ok(), Some(t));
    }
    if let Ok(b) = s.parse::<ByteSize>() {
        assert_eq!(format!("{}", b.0).parse::<ByteSize>().ok(), Some(b));
    }
    if let Ok(p) = parse_percent(s) {
        assert!((0.0..=100.0).contains(&p));
    }
    if let Ok(d) = lifeboat_types::parse_duration(s) {
        assert!(d <= lifeboat_types::MAX_DURATION);
    }
    let _ = dsn_has_password(s);
});
