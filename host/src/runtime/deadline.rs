//! A request's deadline, which its streaming response can push forward.
//!
//! A handler has `request_timeout` to answer; once its response streams, each chunk moves
//! the deadline to `stream_idle_timeout` after it. So a long download flows for as long as
//! it makes progress, and a stalled one ends. The epoch callback (a guest computing) and the
//! request's task (a guest waiting on the host) both read the same cell.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the current request must end. Cheap to clone; clones share the instant.
#[derive(Clone, Debug)]
pub(super) struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`.
    at: Arc<AtomicU64>,
}

impl Deadline {
    pub(super) fn new(at: Instant) -> Self {
        let base = Instant::now();
        let deadline = Self { base, at: Arc::new(AtomicU64::new(0)) };
        deadline.at.store(deadline.offset(at), Ordering::Relaxed);
        deadline
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant.
    pub(super) fn get(&self) -> Instant {
        self.base + Duration::from_nanos(self.at.load(Ordering::Relaxed))
    }

    /// Moves the deadline to `at` if that is later.
    pub(super) fn extend_to(&self, at: Instant) {
        self.at.fetch_max(self.offset(at), Ordering::Relaxed);
    }

    /// Whether it has passed.
    pub(super) fn passed(&self) -> bool {
        Instant::now() >= self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_only_moves_later() {
        let start = Instant::now();
        let deadline = Deadline::new(start + Duration::from_secs(10));
        deadline.extend_to(start + Duration::from_secs(5));
        assert!(deadline.get() >= start + Duration::from_secs(10) - Duration::from_millis(1));
        deadline.extend_to(start + Duration::from_secs(20));
        assert!(deadline.get() >= start + Duration::from_secs(20) - Duration::from_millis(1));
        assert!(!deadline.passed());
    }
}
