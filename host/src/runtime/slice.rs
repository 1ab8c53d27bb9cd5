//! Time slices for guests that compute, and the pace of the epoch that measures them.
//!
//! A guest that computes without waiting on the host holds its async worker until it
//! yields; wasmtime asks it to at every epoch tick past its deadline. Ticking every
//! millisecond gave a normal request beside four looping guests a 2 ms median (10 ms ticks:
//! 20 ms), but the ticker's 1,000 wake-ups a second cost the worker serving requests about
//! 12% of its CPU on these VMs (`bench/ab_h1.py`: a forwarded request 49 µs against 43 µs
//! with 10 ms ticks), whether or not any guest computed. So the epoch ticks every 10 ms
//! (which also bounds how late a deadline is noticed) until a guest is seen to compute
//! across a whole tick, and then every half millisecond for as long as guests keep doing so:
//! the same normal request then reads a 4-5 ms median, as with the fixed 1 ms tick.
//!
//! A guest yields only once it has run across a whole tick since it was last resumed
//! (from a host call, or from its last yield): one that mostly waits on the host never
//! pays for a yield, and one that computes gives way within two ticks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The tick while requests run and no guest computes for long.
const CALM_TICK: Duration = Duration::from_millis(10);

/// The tick while some guest computes: a computing guest's slice is one to two of these,
/// so at most a millisecond, as with the old fixed 1 ms tick.
const SLICING_TICK: Duration = Duration::from_micros(500);

/// How many ticks the fast pace lasts after a guest last used up its slice (100 ms).
const SLICING_FOR: u64 = 200;

/// The tick while no request runs: it looks only this often, to cost nothing when idle.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// The epoch's ticks, counted by the ticker just before it advances the engine's epoch.
#[derive(Clone, Default)]
pub(super) struct Ticks(Arc<TickCount>);

#[derive(Default)]
struct TickCount {
    now: AtomicU64,
    /// One more than the tick at which a guest last used up its slice (0: never).
    last_used_up: AtomicU64,
}

impl Ticks {
    pub(super) fn advance(&self) {
        self.0.now.fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.0.now.load(Ordering::Relaxed)
    }

    /// How long the ticker sleeps before the next tick: `running` is whether any request runs.
    pub(super) fn pace(&self, running: bool) -> Duration {
        let last = self.0.last_used_up.load(Ordering::Relaxed);
        if !running {
            IDLE_TICK
        } else if last != 0 && self.now() + 1 < last + SLICING_FOR {
            SLICING_TICK
        } else {
            CALM_TICK
        }
    }
}

/// One instance's current slice: the tick at which its guest was last resumed.
#[derive(Clone)]
pub(super) struct Slice {
    ticks: Ticks,
    resumed: Arc<AtomicU64>,
}

impl Slice {
    pub(super) fn new(ticks: &Ticks) -> Self {
        Self { ticks: ticks.clone(), resumed: Arc::new(AtomicU64::new(ticks.now())) }
    }

    /// Whether the guest has run from before one tick until after the next, and so must
    /// yield; the epoch then ticks fast for a while, to slice it finely.
    pub(super) fn used_up(&self) -> bool {
        let now = self.ticks.now();
        let used_up = now.saturating_sub(self.resumed.load(Ordering::Relaxed)) >= 2;
        if used_up {
            self.ticks.0.last_used_up.store(now + 1, Ordering::Relaxed);
        }
        used_up
    }

    /// Drives `guest` (a call into the instance), starting a new slice at every poll: each
    /// poll resumes the guest after it waited (on the host, or after yielding).
    pub(super) async fn run<F: Future>(&self, guest: F) -> F::Output {
        let mut guest = std::pin::pin!(guest);
        std::future::poll_fn(|cx| {
            self.resumed.store(self.ticks.now(), Ordering::Relaxed);
            guest.as_mut().poll(cx)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_used_up_only_after_a_whole_tick() {
        let ticks = Ticks::default();
        let slice = Slice::new(&ticks);
        assert!(!slice.used_up());
        ticks.advance();
        assert!(!slice.used_up(), "resumed just before a tick: not a whole tick yet");
        ticks.advance();
        assert!(slice.used_up());
    }

    #[test]
    fn each_poll_starts_a_new_slice() {
        let ticks = Ticks::default();
        let slice = Slice::new(&ticks);
        ticks.advance();
        ticks.advance();
        assert!(slice.used_up());
        let mut polls = 0;
        let guest = std::future::poll_fn(|_| {
            polls += 1;
            std::task::Poll::Ready(())
        });
        futures_util::FutureExt::now_or_never(slice.run(guest)).expect("ready at once");
        assert_eq!(polls, 1);
        assert!(!slice.used_up());
    }

    #[test]
    fn the_epoch_ticks_fast_only_while_guests_compute() {
        let ticks = Ticks::default();
        assert_eq!(ticks.pace(false), IDLE_TICK);
        assert_eq!(ticks.pace(true), CALM_TICK, "no guest has computed yet");
        let slice = Slice::new(&ticks);
        ticks.advance();
        ticks.advance();
        assert!(slice.used_up());
        assert_eq!(ticks.pace(true), SLICING_TICK);
        assert_eq!(ticks.pace(false), IDLE_TICK);
        for _ in 0..SLICING_FOR {
            ticks.advance();
        }
        assert_eq!(ticks.pace(true), CALM_TICK, "no guest has used up a slice for a while");
    }
}
