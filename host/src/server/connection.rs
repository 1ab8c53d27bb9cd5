//! One accepted connection, from its first bytes to its close: protocol detection with a
//! deadline, slow readers, idle connections of either protocol, and the server's shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;
use tokio::sync::watch;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::write_timeout::WriteTimeout;

/// The server's stop signal. Every connection holds a [`StopWatcher`]; [`Stopping::finished`]
/// returns when all of them have closed.
pub(super) struct Stopping {
    signal: watch::Sender<bool>,
}

/// A connection's side of [`Stopping`].
pub(crate) struct StopWatcher {
    signal: watch::Receiver<bool>,
}

impl Stopping {
    pub(super) fn new() -> Self {
        Self { signal: watch::channel(false).0 }
    }

    pub(super) fn watcher(&self) -> StopWatcher {
        StopWatcher { signal: self.signal.subscribe() }
    }

    /// Asks every connection to finish what it is doing and close, and waits until they have.
    pub(super) async fn finished(self) {
        let _ = self.signal.send(true);
        self.signal.closed().await;
    }
}

impl StopWatcher {
    async fn stopping(&mut self) {
        // An error means the server is gone: stop as well.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}

/// When a connection last finished a request, and how many it is running now. hyper closes
/// an idle HTTP/1 connection after its header timeout; an HTTP/2 connection has no such
/// timer (its pings keep it alive), so without this an idle client held a connection slot
/// for ever.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last request's end (or of the accept, or of the
    /// start of the close).
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether any request has started on this connection.
    asked: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self { started: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0), asked: AtomicBool::new(false) }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.asked.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// Starts the idle clock again from now.
    fn restart(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    /// Returns once no request has run for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
            let idle_at = last + timeout;
            if self.in_flight.load(Ordering::SeqCst) == 0 && Instant::now() >= idle_at {
                return;
            }
            // Busy, or a request ended meanwhile: look again when the latest it could be
            // idle comes.
            let wake = idle_at.max(Instant::now() + timeout.min(Duration::from_secs(1)));
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// Marks a request as running until dropped: when its response body has been sent, or the
/// client went away.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.last_ms.store(activity.started.elapsed().as_millis() as u64, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as running until hyper has sent it (or
/// dropped it, when the client went away).
struct CountedBody {
    body: HyperOutgoingBody,
    _running: RequestGuard,
}

impl hyper::body::Body for CountedBody {
    type Data = <HyperOutgoingBody as hyper::body::Body>::Data;
    type Error = <HyperOutgoingBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves one plain-HTTP connection: HTTP/1.1 or HTTP/2, told apart by its first bytes.
pub(super) async fn serve_plain<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    builder: Builder<TokioExecutor>,
    header_timeout: Duration,
    stop: StopWatcher,
    handle: H,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<HyperOutgoingBody>> + Send + 'static,
{
    // hyper's protocol detection waits, without a timer, for enough bytes to tell HTTP/1
    // from the HTTP/2 preface: a connection that does not send them within the header
    // timeout is closed here.
    if tokio::time::timeout(header_timeout, protocol_decidable(&stream)).await != Ok(true) {
        return;
    }
    serve(TokioIo::new(stream), peer, builder, header_timeout, stop, handle).await;
}

/// Serves one connection (plain, or TLS after its handshake; `builder` then speaks the
/// protocol ALPN chose) until it closes, goes idle for `header_timeout`, or the server
/// stops (requests in flight finish first, as hyper's graceful shutdown does). A connection
/// that asks for nothing within `header_timeout` is dropped, and a closing one that has not
/// closed `header_timeout` after its last request is dropped too.
pub(super) async fn serve<I, H, F>(
    io: I,
    peer: SocketAddr,
    builder: Builder<TokioExecutor>,
    header_timeout: Duration,
    mut stop: StopWatcher,
    handle: H,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<HyperOutgoingBody>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let running = activity.begin();
            let response = handle(request);
            async move {
                // The request runs until its whole body is sent: a long download is not an
                // idle connection.
                let response = response.await.map(|body| CountedBody { body, _running: running });
                Ok::<_, Infallible>(response)
            }
        })
    };
    // A client that stops reading is dropped after the header timeout too.
    let io = WriteTimeout::new(io, header_timeout);
    // With upgrades: a WebSocket the route forwards takes the connection over once its 101 is
    // sent (`runtime/state/websocket.rs`); hyper never upgrades a request the handler did not.
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection closed with an error");
                }
                return;
            }
            () = stop.stopping(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
                activity.restart();
            }
            () = activity.idle_for(header_timeout) => {
                // HTTP/2's graceful close waits for the peer to answer a ping, which a peer
                // that never answers (nor acknowledges the SETTINGS) makes last until the
                // keep-alive timeout. A peer that asked for nothing within the header timeout
                // loses nothing by a plain close (as HTTP/1's header timeout does), and a
                // close gets one header timeout to finish once no request runs.
                if closing || !activity.asked.load(Ordering::SeqCst) {
                    tracing::debug!(%peer, closing, "dropping a connection that stayed idle");
                    return;
                }
                tracing::debug!(%peer, "closing an idle connection");
                connection.as_mut().graceful_shutdown();
                closing = true;
                activity.restart();
            }
        }
    }
}

/// Waits until `stream` has sent enough to tell its protocol: the 24-byte HTTP/2 preface, or
/// an HTTP/1 request line (a line ending, or bytes that cannot start the preface). `false`
/// when it closes first.
async fn protocol_decidable(stream: &TcpStream) -> bool {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buffer = [0u8; 24];
    loop {
        let n = match stream.peek(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if n == buffer.len() || !H2_PREFACE.starts_with(&buffer[..n]) || buffer[..n].contains(&b'\n') {
            return true;
        }
        // A prefix of the preface: look again shortly (peeking leaves the socket readable,
        // so waiting on readiness would spin).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers a connection over `max_connections` with a 503 and closes it at once, in the
/// accept loop: a fresh connection's send buffer is empty, so the write does not wait, and its
/// descriptor is free before the next accept (shed connections never pile up and take the
/// files the cap keeps for others; a caller that cannot take even this gets the close).
pub(super) fn shed(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    tracing::debug!("connection limit reached; answering 503");
    let _ = stream.try_write(BUSY);
}
