//! Arbitrary input sequences into a `Session` speaking Raw, Wire, GraphqlWs,
//! Nats, JsonRpc or Mqtt: protocol-valid server messages, garbage, closes, timers.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use redial_core::fuzzing::ProtocolScenario;

// The core reads no clock; one base instant for the whole run.
static BASE: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Some(scenario) = ProtocolScenario::from_bytes(data) {
        redial_core::fuzzing::protocol_events(*BASE.get_or_init(Instant::now), &scenario);
    }
});
