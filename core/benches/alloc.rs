//! Allocation counts per message and memory per idle session, measured with
//! a counting global allocator (`stats_alloc` wraps `System`).
//!
//! `cargo bench -p redial-core --bench alloc` (add `-- --quick` for a short
//! smoke run; `cargo test --benches` runs the short pass too). Prints one
//! line per figure; timing lives in the `session` bench, which runs on the
//! plain system allocator.
// Bench fixtures panic on broken setup, like tests do.
#![allow(clippy::expect_used)]

mod common;

use std::alloc::System;
use std::time::Instant;

use bytes::Bytes;
use redial_core::Session;
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn per_message(label: &str, n: usize, stats: Stats) {
    println!(
        "{label:<34} {:>8.4} allocations/msg  {:>8.1} bytes allocated/msg  ({} messages)",
        stats.allocations as f64 / n as f64,
        stats.bytes_allocated as f64 / n as f64,
        n
    );
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`),
    // or with `--quick` / `--test`, run a short smoke pass.
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--quick" || a == "--test");
    let n: usize = if quick { 10_000 } else { 200_000 };
    let warm = 1_000;
    let now = Instant::now();

    for len in [64usize, 1024] {
        // Raw inbound: the received buffer is shared with the event; what
        // the session itself allocates is what is counted.
        let mut s = common::connected_raw(now);
        let buf = Bytes::from(vec![0x5Au8; len]);
        for _ in 0..warm {
            drop(common::raw_inbound(&mut s, now, buf.clone()));
        }
        let r = Region::new(GLOBAL);
        for _ in 0..n {
            drop(common::raw_inbound(&mut s, now, buf.clone()));
        }
        per_message(&format!("inbound raw {len} B"), n, r.change());

        // Wire inbound: frames are encoded before the region (they stand
        // for the transport's receive buffers).
        let mut s = common::connected_wire(now);
        for off in 1..=warm as u64 {
            drop(common::wire_inbound(
                &mut s,
                now,
                common::message_frame(off, len),
            ));
        }
        let frames: Vec<Bytes> = (0..n as u64)
            .map(|i| common::message_frame(warm as u64 + 1 + i, len))
            .collect();
        let r = Region::new(GLOBAL);
        for f in frames {
            drop(common::wire_inbound(&mut s, now, f));
        }
        per_message(&format!("inbound wire MESSAGE {len} B"), n, r.change());
        // The same with each frame in a unique, Vec-backed `Bytes`
        // (`Frame::to_bytes`): the first slice promotes it to the shared
        // form, one small allocation per message.
        let base = warm as u64 + 1 + n as u64;
        let frames: Vec<Bytes> = (0..n as u64)
            .map(|i| common::message(base + i, len).to_bytes())
            .collect();
        let r = Region::new(GLOBAL);
        for f in frames {
            drop(common::wire_inbound(&mut s, now, f));
        }
        per_message("  same, unique Vec-backed buffers", n, r.change());

        // Wire outbound: send, PUBLISH written, ACK in, `Acked` out.
        let mut s = common::connected_wire(now);
        let p = common::payload(len);
        for seq in 1..=warm as u64 {
            drop(common::send_and_ack(
                &mut s,
                now,
                p.clone(),
                common::ack_frame(seq),
            ));
        }
        let acks: Vec<Bytes> = (0..n as u64)
            .map(|i| common::ack_frame(warm as u64 + 1 + i))
            .collect();
        let r = Region::new(GLOBAL);
        for a in acks {
            drop(common::send_and_ack(&mut s, now, p.clone(), a));
        }
        per_message(&format!("outbound wire send+ack {len} B"), n, r.change());
    }

    // Memory per idle session: connected Raw, default config, nothing
    // queued. Heap = bytes still allocated once the sessions are built.
    let count = 1_000;
    let mut sessions: Vec<Session> = Vec::with_capacity(count);
    let r = Region::new(GLOBAL);
    for _ in 0..count {
        sessions.push(common::connected_raw(now));
    }
    let st = r.change();
    let live =
        st.bytes_allocated as f64 - st.bytes_deallocated as f64 + st.bytes_reallocated as f64;
    let heap = live / count as f64;
    let allocs = (st.allocations as f64 - st.deallocations as f64) / count as f64;
    let inline = std::mem::size_of::<Session>();
    println!(
        "size_of::<Session>()               {inline:>8} bytes (of which Config {} bytes)",
        std::mem::size_of::<redial_core::Config>()
    );
    println!(
        "size_of Event / Action / Frame / wire::Frame {:>3} / {} / {} / {} bytes",
        std::mem::size_of::<redial_core::Event>(),
        std::mem::size_of::<redial_core::Action>(),
        std::mem::size_of::<redial_core::Frame>(),
        std::mem::size_of::<redial_core::wire::Frame>(),
    );
    println!(
        "heap per idle Raw session          {heap:>8.0} bytes in {allocs:.1} live allocations ({count} sessions)"
    );
    println!(
        "total per idle Raw session         {:>8.0} bytes",
        heap + inline as f64
    );
    drop(sessions);
}
