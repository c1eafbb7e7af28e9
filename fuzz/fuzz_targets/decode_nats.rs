//! Any bytes as a NATS server stream, pushed whole and in chunks: the same
//! operations either way, bounded buffering, never a panic, and every
//! operation re-encodes to an equal one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::nats::fuzz_decode(data);
});
