//! Micro-benchmarks of `redial-core`: one message through a `Session`
//! (Raw, Wire and graphql-ws inbound; Wire outbound) and the Wire decoder alone, with a
//! `memcpy` of the same bytes as the ceiling.
//!
//! `cargo bench -p redial-core --bench session` (add `-- --test` for a
//! one-pass smoke run). Allocation counts are in the `alloc` bench.
// Bench fixtures panic on broken setup, like tests do.
#![allow(clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use redial_core::wire::{self, Limits};
use redial_core::{Payload, Text};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];

/// Inputs per timed batch for benches whose input must differ per message
/// (MESSAGE offsets and ACK seqs only go up). Small enough that a batch of
/// 1 KiB frames stays in L2, as a just-received buffer would be.
const BATCH: u64 = 256;

fn inbound(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("inbound");
    g.throughput(Throughput::Elements(1));
    for (name, len) in SIZES {
        // Raw: the adapter hands over the received buffer; a clone of a
        // shared `Bytes` is what a fresh one costs the session (a refcount).
        let mut s = common::connected_raw(now);
        let buf = Bytes::from(vec![0x5Au8; len]);
        drop(buf.clone()); // promote to the shared representation once
        g.bench_function(format!("raw/{name}"), |b| {
            b.iter(|| common::raw_inbound(&mut s, now, black_box(buf.clone())))
        });

        // graphql-ws: parse the `next` JSON (the payload stays a slice of
        // the received text), deliver it, poll the event: the decoder's cost
        // over Raw for a message of the same size.
        let mut s = common::connected_graphql(now);
        let text = common::graphql_next(len);
        g.bench_function(format!("graphql_next/{name}"), |b| {
            b.iter(|| common::graphql_inbound(&mut s, now, black_box(text.clone())))
        });

        // Wire: decode the MESSAGE, deliver it, poll the event, and write
        // the cumulative RECEIVED every `ack_every` (64) messages. Offsets
        // must rise, so each batch gets fresh frames, encoded untimed.
        let mut s = common::connected_wire(now);
        let mut next = 0u64;
        g.bench_function(format!("wire_message/{name}"), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    common::message_frame(next, len)
                },
                |frame| common::wire_inbound(&mut s, now, frame),
                BatchSize::NumIterations(BATCH),
            )
        });
    }
    g.finish();
}

fn outbound(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("outbound");
    g.throughput(Throughput::Elements(1));
    for (name, len) in SIZES {
        let mut s = common::connected_wire(now);
        let p = common::payload(len);
        let mut seq = 0u64;
        g.bench_function(format!("wire_send_ack/{name}"), |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    common::ack_frame(seq)
                },
                |ack| common::send_and_ack(&mut s, now, p.clone(), ack),
                BatchSize::NumIterations(BATCH),
            )
        });
    }
    g.finish();
}

/// MESSAGE frames whose whole encoding is `frame_len` bytes.
fn frame_of_len(frame_len: usize, text: bool) -> Bytes {
    // type + offset varint (1 byte for offset 1) + flags = 3 bytes of header.
    let body = frame_len - 3;
    let payload = if text {
        Payload::text(Text::from("a".repeat(body)))
    } else {
        Payload::binary(vec![0xA5u8; body])
    };
    let f = wire::Frame::Message {
        offset: 1,
        channel: None,
        payload,
    }
    .to_bytes();
    assert_eq!(f.len(), frame_len);
    f
}

fn decoder(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode");
    for (name, len) in [("small_32B", 32), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        g.throughput(Throughput::Bytes(len as u64));
        if len >= 64 * 1024 {
            g.measurement_time(Duration::from_secs(3));
        }
        for (kind, text) in [("binary", false), ("text", true)] {
            let frame = frame_of_len(len, text);
            drop(frame.clone());
            g.bench_function(format!("{kind}/{name}"), |b| {
                b.iter(|| wire::decode(black_box(frame.clone()), &limits).expect("valid frame"))
            });
        }
        // The ceiling: copying the same bytes once.
        let src = vec![0xA5u8; len];
        let mut dst = vec![0u8; len];
        g.bench_function(format!("memcpy/{name}"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, inbound, outbound, decoder);
criterion_main!(benches);
