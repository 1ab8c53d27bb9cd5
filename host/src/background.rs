//! Threads that do one thing every so often for as long as their owner lives: the store
//! watcher and the deployment heartbeat. They hold only a weak reference, so dropping the
//! owner ends them at their next wake.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// Runs `tick` on a thread named `name` whenever `wake` returns (it waits at most the
/// timeout it is given) and at least every `interval`, while `owner` lives.
pub(crate) fn every_or_when<T: Send + Sync + 'static>(
    name: &str,
    interval: Duration,
    owner: &Arc<T>,
    wake: impl Fn(Duration) + Send + 'static,
    tick: impl Fn(&T) + Send + 'static,
) -> std::io::Result<()> {
    let weak: Weak<T> = Arc::downgrade(owner);
    std::thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            wake(interval);
            let Some(owner) = weak.upgrade() else { break };
            tick(&owner);
        }
    })?;
    Ok(())
}

/// Runs `tick` on a thread named `name` every `interval` while `owner` lives.
pub(crate) fn every<T: Send + Sync + 'static>(
    name: &str,
    interval: Duration,
    owner: &Arc<T>,
    tick: impl Fn(&T) + Send + 'static,
) -> std::io::Result<()> {
    every_or_when(name, interval, owner, std::thread::sleep, tick)
}
