//! Knowing when every request that started on one version of the config has finished.
//!
//! Each version of the routes holds one [`Version`]; so does every request (through its
//! route's context) until its guest is done, response body included. A reload retires the
//! old version and waits on it: when the last holder lets go, the wait ends. That is what
//! lets `edgemtls reload` return only once nothing still uses the old certificate names.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// One version of the config, held by its routes and the requests running on it.
#[derive(Debug, Default)]
pub struct Version {
    retired: Mutex<Option<oneshot::Sender<()>>>,
}

impl Version {
    /// A new version.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        let sender = match self.retired.get_mut() {
            Ok(sender) => sender.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

/// Gives up our hold on `version`; the receiver completes when nothing holds it any more.
pub fn retire(version: Arc<Version>) -> oneshot::Receiver<()> {
    let (sender, finished) = oneshot::channel();
    match version.retired.lock() {
        Ok(mut slot) => *slot = Some(sender),
        Err(poisoned) => *poisoned.into_inner() = Some(sender),
    }
    finished
}

/// Waits up to `limit` for a retired version; returns whether everything on it finished.
pub async fn finished_within(finished: &mut oneshot::Receiver<()>, limit: Duration) -> bool {
    tokio::time::timeout(limit, finished).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retire_waits_for_the_last_holder() {
        let version = Version::new();
        let held = version.clone();
        let (release, released) = oneshot::channel::<()>();
        let holder = tokio::spawn(async move {
            let _ = released.await;
            drop(held);
        });
        let mut finished = retire(version);
        let waiting = tokio::spawn(async move { finished_within(&mut finished, Duration::from_secs(30)).await });
        // Still held: the wait cannot have finished.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        release.send(()).unwrap();
        holder.await.unwrap();
        assert!(waiting.await.unwrap(), "the wait ends when the last holder lets go");
    }

    #[tokio::test]
    async fn retire_gives_up_at_the_limit() {
        let version = Version::new();
        let _held = version.clone();
        assert!(!finished_within(&mut retire(version), Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn retire_of_an_unheld_version_returns_at_once() {
        assert!(finished_within(&mut retire(Version::new()), Duration::from_secs(30)).await);
    }
}
