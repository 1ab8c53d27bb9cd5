//! The change feed: a `LISTEN` connection of its own that wakes this node's store watcher
//! when another node writes.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::bridge::{QUERY_TIMEOUT, runtime};
use super::connect::{Connector, FIRST_BACKOFF, MAX_BACKOFF};

/// The channel writes notify.
pub(super) const CHANNEL: &str = "edgemtls_store";

/// Wakes a node's store watcher when another node changes the store: a `LISTEN` connection
/// of its own, made again (with back-off) whenever it drops. A reconnect wakes the watcher
/// too, since notifications sent while it was down are lost; the watcher's poll of the
/// generation is the safety net for anything else.
#[derive(Clone)]
pub struct ChangeFeed {
    signal: Arc<Signal>,
}

struct Signal {
    pending: Mutex<bool>,
    ready: Condvar,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

impl ChangeFeed {
    pub(super) fn start(connector: Connector) -> Option<Self> {
        let runtime = runtime().ok()?;
        let signal = Arc::new(Signal { pending: Mutex::new(false), ready: Condvar::new() });
        runtime.spawn(listen(connector, Arc::downgrade(&signal)));
        Some(Self { signal })
    }

    /// Waits until a change is announced or `timeout` passes; true for a change.
    pub fn wait(&self, timeout: Duration) -> bool {
        let pending = self.signal.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut pending, _) =
            self.signal.ready.wait_timeout_while(pending, timeout, |pending| !*pending).unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *pending, false)
    }
}

impl Signal {
    fn raise(&self) {
        *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.ready.notify_all();
    }
}

/// Listens until the feed is dropped.
async fn listen(connector: Connector, signal: Weak<Signal>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if signal.strong_count() == 0 {
            return;
        }
        if let Ok(Ok((client, mut connection))) = tokio::time::timeout(QUERY_TIMEOUT, connector.connect()).await {
            let listening = async {
                let statement = format!("LISTEN {CHANNEL}");
                let subscribe = client.batch_execute(&statement);
                let mut subscribe = std::pin::pin!(subscribe);
                let mut subscribed = false;
                // Drive the connection while LISTEN is sent, then wait for notifications.
                loop {
                    tokio::select! {
                        result = &mut subscribe, if !subscribed => {
                            if result.is_err() { return; }
                            subscribed = true;
                            backoff = FIRST_BACKOFF;
                            // Anything sent while this connection was down is caught up now.
                            match signal.upgrade() { Some(signal) => signal.raise(), None => return }
                        }
                        message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => match signal.upgrade() {
                                Some(signal) => signal.raise(),
                                None => return,
                            },
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        },
                        () = tokio::time::sleep(Duration::from_secs(10)) => {
                            if signal.strong_count() == 0 { return; }
                        }
                    }
                }
            };
            listening.await;
            drop(client);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
