//! Any byte string through the `Wire` decoder: it must never panic, and
//! whatever decodes must re-encode to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::fuzzing::decode_frame(data);
});
