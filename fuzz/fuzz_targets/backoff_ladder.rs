//! Arbitrary valid backoff policies driven by arbitrary failure sequences.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redial_core::fuzzing::LadderScenario;

fuzz_target!(|scenario: LadderScenario| {
    redial_core::fuzzing::backoff_ladder(&scenario);
});
