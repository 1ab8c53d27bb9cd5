//! Warnings a caller or a guest can cause at will, limited per call site: a flood of failing
//! requests must not become a flood of log lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many warnings one call site logs per second; the rest are counted and reported.
pub const PER_SECOND: u32 = 10;

/// The state of one call site.
pub struct Limiter {
    state: Mutex<Option<Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl Limiter {
    /// A limiter for a `static`.
    pub const fn new() -> Self {
        Self { state: Mutex::new(None) }
    }

    /// `Some(n)` when this warning may be logged, `n` being how many were suppressed since
    /// the last one that was; `None` when it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let window = state.get_or_insert(Window { started: now, logged: 0, suppressed: 0 });
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            window.started = now;
            window.logged = 0;
        }
        if window.logged < PER_SECOND {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

impl Limiter {
    /// Whether this warning may be logged; when it may and some were dropped before it,
    /// first logs how many.
    pub fn permit(&self) -> bool {
        match self.allow() {
            None => false,
            Some(0) => true,
            Some(suppressed) => {
                tracing::warn!(suppressed, "{suppressed} similar warnings were not logged");
                true
            }
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!`, at most [`PER_SECOND`] times a second from this call site; the first
/// warning after a suppressed run says how many were dropped.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)*) => {{
        static LIMITER: $crate::log_limit::Limiter = $crate::log_limit::Limiter::new();
        if LIMITER.permit() {
            tracing::warn!($($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_second_then_a_count() {
        let limiter = Limiter::new();
        for _ in 0..PER_SECOND {
            assert_eq!(limiter.allow(), Some(0));
        }
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        // A new window reports what was dropped.
        if let Ok(mut state) = limiter.state.lock()
            && let Some(window) = state.as_mut()
        {
            window.started -= Duration::from_secs(2);
        }
        assert_eq!(limiter.allow(), Some(2));
    }
}
