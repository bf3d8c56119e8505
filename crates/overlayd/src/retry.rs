//! Retrying an activity against etcd while etcd is unreachable: fast at first, never slower than
//! once a second (so overlayd catches up within a second of etcd coming back), and quiet in the
//! log: one warning when the trouble starts, a reminder every [`REMIND_EVERY`], one line when it
//! is over. An outage of hours must not write a line per second.

use std::fmt::Display;
use std::time::Duration;

use std::time::Instant;

use tokio::time::Sleep;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(1);
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// How loudly to log one failure.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    First,
    Reminder(Duration),
    Quiet,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The pause before the next attempt; each call doubles the following one, up to 1 s.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// The retry state of one activity ("endpoint watch", "registration").
#[derive(Debug)]
pub struct Retry {
    what: &'static str,
    backoff: Backoff,
    failing_since: Option<Instant>,
    warned: Option<Instant>,
}

impl Retry {
    pub fn new(what: &'static str) -> Retry {
        Retry {
            what,
            backoff: Backoff::default(),
            failing_since: None,
            warned: None,
        }
    }

    /// Logs a failed attempt; the returned sleep is the pause before the next one.
    pub fn failed(&mut self, error: impl Display) -> Sleep {
        let what = self.what;
        crate::metrics::get().etcd_error(what);
        match self.record_failure(Instant::now()) {
            Report::First => log::warn!("{what}: {error}; retrying"),
            Report::Reminder(d) => {
                log::warn!("{what}: still failing after {} s: {error}", d.as_secs())
            }
            Report::Quiet => log::debug!("{what}: {error}; retrying"),
        }
        tokio::time::sleep(self.backoff.next_delay())
    }

    fn record_failure(&mut self, now: Instant) -> Report {
        let since = *self.failing_since.get_or_insert(now);
        match self.warned {
            None => {
                self.warned = Some(now);
                Report::First
            }
            Some(w) if now.duration_since(w) >= REMIND_EVERY => {
                self.warned = Some(now);
                Report::Reminder(now.duration_since(since))
            }
            Some(_) => Report::Quiet,
        }
    }

    /// An attempt worked: the next failure is retried quickly again, and an outage is over.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.failing_since.take() {
            log::info!(
                "{}: working again after {:.1} s",
                self.what,
                since.elapsed().as_secs_f32()
            );
        }
        self.warned = None;
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST);
    }

    #[test]
    fn warns_once_then_reminds_then_reports_recovery() {
        let mut r = Retry::new("test");
        let t0 = Instant::now();
        assert_eq!(r.record_failure(t0), Report::First);
        assert_eq!(r.record_failure(t0 + MAX), Report::Quiet);
        assert_eq!(
            r.record_failure(t0 + REMIND_EVERY),
            Report::Reminder(REMIND_EVERY)
        );
        assert_eq!(r.record_failure(t0 + REMIND_EVERY + MAX), Report::Quiet);
        r.succeeded();
        assert_eq!((r.failing_since, r.warned), (None, None));
        assert_eq!(r.backoff.next_delay(), FIRST);
        assert_eq!(r.record_failure(t0 + REMIND_EVERY * 2), Report::First);
    }
}
