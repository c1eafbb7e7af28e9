//! Any bytes as a graphql-transport-ws text frame from a server: never a
//! panic, and whatever decodes re-encodes to an equal message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::graphql_ws::fuzz_decode(data);
});
