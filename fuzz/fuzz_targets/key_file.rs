//! Key files: JSON → KeyFile (with its cost caps), then unwrapping with a fixed password.
//!
//! `KeyFile::decode` accepts Argon2 costs up to 4 GiB × 64 passes; running those would
//! exceed any fuzzing budget, so unwrap is only attempted under FUZZ_MAX_* costs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_fuzz::{FUZZ_MAX_M_COST, FUZZ_MAX_T_COST, PASSWORD};
use lifeboat_repo::keys::KeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = KeyFile::decode(data) else {
        return;
    };
    assert_eq!(KeyFile::decode(&kf.encode()).as_ref(), Ok(&kf));
    if kf.params.m_cost <= FUZZ_MAX_M_COST && kf.params.t_cost <= FUZZ_MAX_T_COST {
        let _ = kf.unwrap_key(PASSWORD);
    }
});
