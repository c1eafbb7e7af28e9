//! Any bytes as a JSON-RPC text frame: never a panic, and whatever decodes
//! re-encodes, no longer, to an equal batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    redial_core::json_rpc::fuzz_decode(data);
});
