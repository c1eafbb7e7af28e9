//! Admission control: at most R new WebSocket sessions in any one-second
//! window, with an honest hint of when the next slot frees up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// A sliding-window log of recent admissions.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    recent: VecDeque<Instant>,
}

impl Admission {
    /// Admits one more upgrade at `now` if fewer than `per_sec` were admitted
    /// in the last second; otherwise returns the wait until a slot frees up.
    pub(crate) fn try_admit(&mut self, per_sec: u32, now: Instant) -> Result<(), Duration> {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) >= WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() < per_sec as usize {
            self.recent.push_back(now);
            return Ok(());
        }
        // With per_sec == 0 nothing is ever admitted; a one-window hint is
        // the least dishonest answer.
        let wait = match self.recent.front() {
            Some(&oldest) => (oldest + WINDOW).saturating_duration_since(now),
            None => WINDOW,
        };
        Err(wait)
    }

    /// Forgets every admission, as after a restart.
    pub(crate) fn clear(&mut self) {
        self.recent.clear();
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1, so a
/// client that waits exactly that long finds a free slot.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window_and_reports_the_next_slot() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        assert!(a.try_admit(2, t0).is_ok());
        assert!(a.try_admit(2, t0 + Duration::from_millis(300)).is_ok());
        let wait = a.try_admit(2, t0 + Duration::from_millis(400)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(600));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(a.try_admit(2, t0 + WINDOW).is_ok());
        let wait = a.try_admit(2, t0 + WINDOW).unwrap_err();
        assert_eq!(wait, Duration::from_millis(300));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
