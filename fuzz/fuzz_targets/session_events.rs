//! Arbitrary input sequences, with time advances, into a `Session`.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use redial_core::fuzzing::SessionScenario;

// The core reads no clock; one base instant for the whole run.
static BASE: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|scenario: SessionScenario| {
    redial_core::fuzzing::session_events(*BASE.get_or_init(Instant::now), &scenario);
});
