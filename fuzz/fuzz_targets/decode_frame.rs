//! Any byte string through the `Wire` decoder: it must never panic, whatever
//! decodes must re-encode to exactly the same bytes, and decoding must not
//! allocate beyond what the input and the limits allow (the decoder slices
//! the input; only WELCOME's channel list is a fresh `Vec`).
#![no_main]

use std::alloc::System;

use libfuzzer_sys::fuzz_target;
use redial_core::payload::Text;
use redial_core::wire::{self, Limits};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fuzz_target!(|data: &[u8]| {
    redial_core::fuzzing::decode_frame(data);

    let input = bytes::Bytes::copy_from_slice(data);
    let limits = Limits::default();
    let region = Region::new(GLOBAL);
    let decoded = wire::decode(input, &limits);
    let allocated = region.change().bytes_allocated;
    // One `Text` per kept channel, and each takes at least one input byte.
    let bound = data.len().min(limits.max_kept_channels) * std::mem::size_of::<Text>();
    assert!(
        allocated <= bound,
        "decoding {} bytes allocated {allocated} (bound {bound}): {decoded:?}",
        data.len()
    );
});
