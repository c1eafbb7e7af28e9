//! A connected session closed by the peer with an arbitrary code and reason.
//! Input: two bytes of close code (little-endian), then the reason bytes.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

// The core reads no clock; one base instant for the whole run.
static BASE: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((code, reason)) = data.split_first_chunk::<2>() else {
        return;
    };
    let code = u16::from_le_bytes(*code);
    redial_core::fuzzing::close_frame(*BASE.get_or_init(Instant::now), code, reason);
});
