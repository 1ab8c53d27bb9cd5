//! WebSockets through the host forward: an HTTP/1.1 `Upgrade: websocket` passed to the
//! upstream, and once both sides switched protocols, a tunnel that copies bytes both ways.
//!
//! The caller's upgrade is taken out of its request before the guest runs (hyper keeps it in
//! the request's extensions, which wasi-http's conversion drops) and handed to the instance
//! for that one request. A guest that forwards the request (`edgemtls:mtls/forward`) sends
//! the upgrade upstream over a connection of its own; any other guest answers as usual and
//! the upgrade is dropped. The caller's identity checks ran before the guest, so a refused
//! caller never reaches the upstream. Tunnels hold no instance and no instance slot; they
//! are capped by `max_websockets` and closed after `websocket_idle_timeout_ms` without a
//! byte either way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// A caller's request to switch to the WebSocket protocol, waiting for the 101 answer.
#[derive(Clone)]
pub struct WebSocketUpgrade(OnUpgrade);

impl WebSocketUpgrade {
    /// Takes the caller's pending upgrade out of `request` when it asks for a WebSocket: a
    /// `GET` over HTTP/1.1 with `Upgrade: websocket` and `Connection: upgrade`. Called
    /// before the hop-by-hop headers that say so are dropped.
    pub fn take<B>(request: &mut hyper::Request<B>) -> Option<Self> {
        if request.method() != http::Method::GET || request.version() != http::Version::HTTP_11 || !asks_websocket(request.headers()) {
            return None;
        }
        request.extensions_mut().remove::<OnUpgrade>().map(Self)
    }
}

fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn asks_websocket(headers: &http::HeaderMap) -> bool {
    has_token(headers, http::header::CONNECTION, "upgrade") && has_token(headers, http::header::UPGRADE, "websocket")
}

/// Sets the hop-by-hop headers that ask (or, on a 101, answer) for the WebSocket protocol:
/// the forward removed every hop-by-hop header, these among them.
pub(super) fn set_upgrade_headers(headers: &mut http::HeaderMap) {
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
}

/// The host's tunnels: how many may be open, and how long one may stay silent.
#[derive(Debug)]
pub(crate) struct Tunnels {
    open: Arc<Semaphore>,
    max: u32,
    idle: Duration,
}

impl Tunnels {
    pub(crate) fn new(max: u32, idle: Duration) -> Self {
        Self { open: Arc::new(Semaphore::new(max as usize)), max, idle }
    }

    /// A place for one more tunnel, or `None` when `max_websockets` are open.
    pub(super) fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// Runs the tunnel between the caller and the upstream, both of which switched
    /// protocols, on a task of its own until either side closes or it is idle too long.
    pub(super) fn start(
        &self,
        caller: WebSocketUpgrade,
        upstream: OnUpgrade,
        place: OwnedSemaphorePermit,
        metrics: Arc<Metrics>,
        route: String,
    ) {
        let idle = self.idle;
        tokio::spawn(async move {
            let _open = OpenTunnel::new(place, metrics);
            let (caller, upstream) = match tokio::join!(caller.0, upstream) {
                (Ok(caller), Ok(upstream)) => (caller, upstream),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(route, %error, "a WebSocket upgrade did not complete");
                    return;
                }
            };
            let activity = Arc::new(Activity::new());
            let mut caller = Watched { inner: TokioIo::new(caller), activity: activity.clone() };
            let mut upstream = Watched { inner: TokioIo::new(upstream), activity: activity.clone() };
            let copy = tokio::io::copy_bidirectional(&mut caller, &mut upstream);
            tokio::pin!(copy);
            loop {
                tokio::select! {
                    result = &mut copy => {
                        if let Err(error) = result {
                            tracing::debug!(route, %error, "a WebSocket tunnel ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep_until(activity.last().checked_add(idle).unwrap_or_else(Instant::now).into()) => {
                        if activity.last().elapsed() >= idle {
                            tracing::info!(route, websocket_idle_timeout_ms = idle.as_millis() as u64, "closing a WebSocket tunnel that carried nothing in time");
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// One open tunnel: its place under `max_websockets` and its count in the gauge.
struct OpenTunnel {
    _place: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl OpenTunnel {
    fn new(place: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.set_websocket_open(true);
        Self { _place: place, metrics }
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.metrics.set_websocket_open(false);
    }
}

/// When a tunnel last read a byte, from either side.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A tunnel's side that records each read that brought bytes.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::asks_websocket;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(name, value)| (http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap())).collect()
    }

    #[test]
    fn a_websocket_is_asked_for_with_both_tokens_in_any_case_and_list() {
        assert!(asks_websocket(&headers(&[("connection", "Upgrade"), ("upgrade", "websocket")])));
        // Firefox lists keep-alive first; tokens are case-insensitive.
        assert!(asks_websocket(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")])));
        assert!(!asks_websocket(&headers(&[("upgrade", "websocket")])), "Upgrade without Connection: upgrade is not an upgrade");
        assert!(!asks_websocket(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])), "only WebSockets are proxied");
        assert!(!asks_websocket(&headers(&[("connection", "keep-alive")])));
    }
}
