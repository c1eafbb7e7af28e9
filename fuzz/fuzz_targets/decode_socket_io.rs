//! Any bytes as a Socket.IO text message from a server: never a panic, and
//! whatever decodes as a Socket.IO packet re-encodes to an equal packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::socket_io::fuzz_decode(data);
});
