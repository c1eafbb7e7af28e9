//! Admission control: at most `R` upgrades in any one second, and a refused
//! upgrade is told, in `Retry-After`, when a slot is really free for it.
//!
//! Slots are paced one every `1/R` second. An upgrade that finds no slot
//! free now books the next free one (the tail of a queue) and is refused
//! with the whole seconds until it, rounded up. The booked admission is
//! held from the slot until the instant the refused client was told to
//! come back, so no newcomer can take it in between; newcomers are admitted
//! only when no booking is pending at all. HTTP carries no identity of the
//! client across dials, so from the instant it was told (and for
//! [`BOOKING_GRACE_MS`] after) a booking goes to whoever dials first: a
//! client that comes back when it was told finds room unless a newcomer
//! dials in the same instant, and no second ever admits more than `R`.

use std::collections::VecDeque;

const SECOND_MS: u64 = 1000;
/// How long a booked slot waits for a client after it is due: the
/// `Retry-After` rounding (under a second) plus the client's jitter.
pub const BOOKING_GRACE_MS: u64 = 3 * SECOND_MS;

/// The answer to one upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit {
    /// Go ahead.
    Now,
    /// Refuse with 503 and this `Retry-After`, in whole seconds (at least 1).
    RetryAfter(u64),
}

/// The sliding window of admissions and the queue of booked slots, on the
/// caller's millisecond clock.
#[derive(Debug, Clone)]
pub struct Admission {
    per_sec: u32,
    spacing_ms: u64,
    /// Instants of the admissions in the last second, in order.
    window: VecDeque<u64>,
    /// Admissions promised to refused upgrades: the instant each client
    /// was told to come back.
    booked: Vec<u64>,
    /// The next slot free for booking.
    next_slot: u64,
}

impl Admission {
    /// At most `per_sec` (at least 1) admissions in any one second.
    pub fn new(per_sec: u32) -> Self {
        let per_sec = per_sec.max(1);
        Admission {
            per_sec,
            spacing_ms: SECOND_MS.div_ceil(u64::from(per_sec)),
            window: VecDeque::new(),
            booked: Vec::new(),
            next_slot: 0,
        }
    }

    fn room(&mut self, now: u64) -> bool {
        while self.window.front().is_some_and(|&a| a + SECOND_MS <= now) {
            self.window.pop_front();
        }
        self.window.len() < self.per_sec as usize
    }

    /// Decides an upgrade arriving at `now_ms`.
    pub fn try_admit(&mut self, now_ms: u64) -> Admit {
        let now = now_ms;
        self.booked.retain(|&ret| ret + BOOKING_GRACE_MS >= now);
        let room = self.room(now);
        if room {
            // The earliest booking whose client may be back by now.
            let due = (0..self.booked.len())
                .filter(|&i| self.booked[i] <= now)
                .min_by_key(|&i| self.booked[i]);
            if let Some(i) = due {
                self.booked.swap_remove(i);
                self.window.push_back(now);
                return Admit::Now;
            }
            if self.booked.is_empty() && self.next_slot <= now {
                self.next_slot = now + self.spacing_ms;
                self.window.push_back(now);
                return Admit::Now;
            }
        }
        let slot = self.next_slot.max(now);
        self.next_slot = slot + self.spacing_ms;
        let secs = retry_after_secs(slot - now);
        self.booked.push(now + secs * SECOND_MS);
        Admit::RetryAfter(secs)
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1, so a client
/// that waits exactly that long is at or past its slot.
pub fn retry_after_secs(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(SECOND_MS).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_r_per_second_and_refusals_are_queued() {
        let mut a = Admission::new(2);
        assert_eq!(a.try_admit(0), Admit::Now);
        // The next slot is 500 ms on.
        assert_eq!(a.try_admit(100), Admit::RetryAfter(1));
        assert_eq!(a.try_admit(100), Admit::RetryAfter(1));
        // Third refusal books the slot at 1500.
        assert_eq!(a.try_admit(100), Admit::RetryAfter(2));
        // A newcomer at 600 may not take the slot at 500, held for a
        // client told to come back at 1100: refused, booked at 2000.
        assert_eq!(a.try_admit(600), Admit::RetryAfter(2));
        // The clients told "1 s" come back at 1100: both slots are due.
        assert_eq!(a.try_admit(1100), Admit::Now);
        assert_eq!(a.try_admit(1100), Admit::Now);
        // The one told "2 s" comes back at 2100.
        assert_eq!(a.try_admit(2100), Admit::Now);
        assert_eq!(a.try_admit(2600), Admit::Now);
    }

    /// Every client comes back exactly when told and is admitted then; no
    /// one-second window ever holds more than R admissions.
    #[test]
    fn retry_after_is_honest_for_a_herd() {
        for r in [1u32, 3, 10, 50] {
            let mut a = Admission::new(r);
            let mut admitted = Vec::new();
            // 5 R clients dial at t = 0, each retries exactly when told.
            let mut due: Vec<u64> = vec![0; 5 * r as usize];
            let mut refusals = 0;
            while !due.is_empty() {
                due.sort_unstable();
                let t = due.remove(0);
                match a.try_admit(t) {
                    Admit::Now => admitted.push(t),
                    Admit::RetryAfter(s) => {
                        refusals += 1;
                        // A client refused twice was lied to the first time;
                        // only the initial herd's refusals are allowed.
                        assert!(t == 0, "r={r}: refused again at {t}");
                        due.push(t + s * 1000);
                    }
                }
            }
            assert_eq!(admitted.len(), 5 * r as usize);
            assert!(refusals > 0);
            for (i, &t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&u| u < t + 1000).count();
                assert!(
                    in_window <= r as usize,
                    "r={r}: {in_window} in the second from {t}"
                );
            }
        }
    }

    #[test]
    fn an_unclaimed_booking_lapses() {
        let mut a = Admission::new(1);
        assert_eq!(a.try_admit(0), Admit::Now);
        assert_eq!(a.try_admit(0), Admit::RetryAfter(1));
        // Nobody came back for the booking at 1000; long after, a newcomer
        // gets in at once.
        assert_eq!(a.try_admit(10_000), Admit::Now);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(2000), 2);
        assert_eq!(retry_after_secs(2001), 3);
    }
}
