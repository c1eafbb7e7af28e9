//! Any bytes as an MQTT stream (3.1.1 or 5.0, picked by the first byte),
//! pushed whole and in chunks: the same packets either way, bounded
//! buffering, never a panic, and every packet re-encodes to an equal one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::mqtt::fuzz_decode(data);
});
