//! What a subscriber under measurement has received, shared with the
//! publisher thread that paces itself on it (`e2e-nats`, `e2e-mqtt`).
//!
//! The subscriber counts every message with [`Progress::received`]; the
//! publisher blocks in [`Progress::wait`] until the subscriber is ready,
//! has caught up, or has ended. The publisher is woken once per chunk of
//! messages, not per message, so counting stays cheap on the subscriber's
//! thread. The subscriber's on-CPU time is taken where the measured
//! messages start and read back at the end ([`Progress::measured_cpu`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a subscriber thread returns: when it received its last message,
/// and its on-CPU time over the measured messages.
/// How many messages one run warms up with and then measures.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Messages before the clock starts, whole chunks.
    pub warmup: u64,
    /// Messages measured, at least one.
    pub messages: u64,
}

impl Plan {
    /// `--warmup` and `--messages` from `args`, else `default` (warm-up,
    /// measured). The warm-up is rounded up to whole chunks of `chunk`:
    /// the publisher hears of progress a chunk at a time.
    pub fn from_args(args: &crate::Args, chunk: u64, default: (u64, u64)) -> Self {
        Plan {
            warmup: args.number("--warmup", default.0).div_ceil(chunk) * chunk,
            messages: args.number("--messages", default.1).max(1),
        }
    }
}

pub type Finished = (Instant, Option<Duration>);

/// Why a subscriber thread ended before the publisher was done: its error,
/// or that it ended early or panicked.
pub fn subscriber_failure(subscriber: JoinHandle<Result<Finished, BoxError>>) -> BoxError {
    match subscriber.join() {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => "the subscriber ended early".into(),
        Err(_) => "the subscriber thread panicked".into(),
    }
}

/// Shared between one subscriber and its publisher.
#[derive(Debug)]
pub struct Progress {
    /// Messages before the measured ones.
    warmup: u64,
    /// The publisher hears of progress every this many messages.
    chunk: u64,
    /// The subscriber thread's CPU time when the warm-up was all received.
    cpu_at_warmup: Mutex<Option<Duration>>,
    received: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

/// What the publisher waits on.
#[derive(Debug, Default, Clone, Copy)]
pub struct State {
    /// The subscription is in place.
    pub ready: bool,
    /// Messages received, as of the last chunk.
    pub received: u64,
    /// The subscriber returned (done or failed).
    pub ended: bool,
}

impl Progress {
    /// A subscriber that will get `warmup` messages before the measured
    /// ones, reporting every `chunk` messages (at least 1).
    pub fn new(warmup: u64, chunk: u64) -> Progress {
        Progress {
            warmup,
            chunk: chunk.max(1),
            cpu_at_warmup: Mutex::new(None),
            received: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// The subscription is in place; called on the subscriber's thread.
    pub fn set_ready(&self) {
        if self.warmup == 0 {
            self.mark_cpu();
        }
        if let Ok(mut state) = self.state.lock() {
            state.ready = true;
        }
        self.changed.notify_all();
    }

    /// The subscriber returned; whoever waits stops waiting.
    pub fn set_ended(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.ended = true;
        }
        self.changed.notify_all();
    }

    /// Counts one message on the subscriber's thread and returns the count;
    /// wakes the publisher once per chunk and at `total`.
    pub fn received(&self, total: u64) -> u64 {
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.warmup {
            self.mark_cpu();
        }
        if n % self.chunk == 0 || n == total {
            if let Ok(mut state) = self.state.lock() {
                state.received = n;
            }
            self.changed.notify_all();
        }
        n
    }

    /// Messages counted so far (exact, not rounded to a chunk).
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn mark_cpu(&self) {
        if let Ok(mut cpu) = self.cpu_at_warmup.lock() {
            *cpu = thread_cpu();
        }
    }

    /// The subscriber thread's CPU time since the warm-up ended; called on
    /// that thread.
    pub fn measured_cpu(&self) -> Option<Duration> {
        let start = (*self.cpu_at_warmup.lock().ok()?)?;
        thread_cpu()?.checked_sub(start)
    }

    /// Blocks until `done` holds; false if the subscriber ended first.
    pub fn wait(&self, done: impl Fn(&State) -> bool) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        loop {
            if done(&state) {
                return true;
            }
            if state.ended {
                return false;
            }
            state = match self.changed.wait(state) {
                Ok(state) => state,
                Err(_) => return false,
            };
        }
    }
}

/// On-CPU time of the calling thread, from the scheduler's own
/// nanosecond account (`/proc/thread-self/schedstat`, first field).
pub fn thread_cpu() -> Option<Duration> {
    schedstat_cpu("/proc/thread-self/schedstat")
}

/// On-CPU time of process `pid`'s main thread (the whole of a
/// single-threaded server such as mosquitto), the same way.
pub fn main_thread_cpu(pid: u32) -> Option<Duration> {
    schedstat_cpu(&format!("/proc/{pid}/schedstat"))
}

fn schedstat_cpu(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The median of `v` (sorted in place); 0 for none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn progress_wakes_the_publisher_per_chunk_and_at_the_total() {
        let chunk = 10;
        let p = Progress::new(0, chunk);
        for _ in 0..chunk - 1 {
            p.received(chunk + 7);
        }
        assert_eq!(p.state.lock().map(|s| s.received).ok(), Some(0));
        assert_eq!(p.count(), chunk - 1);
        assert_eq!(p.received(chunk + 7), chunk);
        assert_eq!(p.state.lock().map(|s| s.received).ok(), Some(chunk));
        for _ in 0..7 {
            p.received(chunk + 7);
        }
        assert!(p.wait(|s| s.received == chunk + 7));
        p.set_ended();
        assert!(!p.wait(|s| s.received > chunk + 7), "an ended subscriber");
    }
}
