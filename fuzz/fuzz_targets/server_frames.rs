//! Arbitrary bytes and steps into the server's session core: frames (valid
//! and garbage), text and oversized messages, store notices, wakes and
//! failures, writes, timers, shutdown and a second connection taking the
//! session over. Never a panic, nothing sent after the close, ACKs and
//! offsets never go back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_server::testing::fuzz_steps(data);
});
