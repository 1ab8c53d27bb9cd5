//! A small HTTPS upstream that requires client certificates and reports which one each
//! connection presented. `edgemtls dev-upstream` serves it for local development, and the
//! tests use it as the real peer that tells the truth about what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the echo server saw for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The connection number (1-based, in accept order).
    pub connection: usize,
    /// The common name of the client certificate, if one was presented.
    pub client_cn: Option<String>,
    /// The request method.
    pub method: String,
    /// The request path and query.
    pub path: String,
    /// Request body bytes received.
    pub received_bytes: u64,
    /// The value of the `x-expect-cn` header, if the client sent one.
    pub expected_cn: Option<String>,
}

/// Counters and the request log of an [`EchoUpstream`].
#[derive(Debug, Default)]
pub struct EchoLog {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    /// Handshakes that resumed an earlier session (no certificates exchanged).
    resumed: AtomicUsize,
    /// Handshakes that settled on TLS 1.2.
    tls12: AtomicUsize,
    refused: AtomicUsize,
    served: AtomicUsize,
    /// Requests whose `x-expect-cn` matched the certificate presented (`none`: no certificate).
    matched: AtomicUsize,
    /// Requests whose `x-expect-cn` did not match.
    mismatched: AtomicUsize,
    record: bool,
    requests: Mutex<Vec<SeenRequest>>,
}

impl EchoLog {
    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// TLS handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
    /// Completed handshakes that resumed an earlier session.
    pub fn resumed_handshakes(&self) -> usize {
        self.resumed.load(Ordering::SeqCst)
    }
    /// Completed handshakes that settled on TLS 1.2 (the rest are TLS 1.3).
    pub fn tls12_handshakes(&self) -> usize {
        self.tls12.load(Ordering::SeqCst)
    }
    /// TLS handshakes that failed (for example, no or an untrusted client certificate).
    pub fn refused_handshakes(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
    /// Every request served, in order (empty unless [`EchoTuning::record_requests`]).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
    /// Requests served.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
    /// Requests whose `x-expect-cn` matched the presented certificate.
    pub fn matched(&self) -> usize {
        self.matched.load(Ordering::SeqCst)
    }
    /// Requests whose `x-expect-cn` did not match the presented certificate.
    pub fn mismatched(&self) -> usize {
        self.mismatched.load(Ordering::SeqCst)
    }
}

/// Knobs for benchmarks; the defaults suit tests and local development.
#[derive(Debug, Clone, Copy)]
pub struct EchoTuning {
    /// Keep every request in the log (tests); off, only counters are kept.
    pub record_requests: bool,
    /// Offer only X25519 for key exchange.
    pub x25519_only: bool,
    /// Allow TLS session resumption (tickets and session ids).
    pub resumption: bool,
    /// Close the connection after each response, forcing a new connection per request.
    pub close_connections: bool,
    /// Speak TLS 1.2 only, as an older server does.
    pub tls12_only: bool,
}

impl Default for EchoTuning {
    fn default() -> Self {
        Self { record_requests: true, x25519_only: false, resumption: true, close_connections: false, tls12_only: false }
    }
}

/// How to run an [`EchoUpstream`].
#[derive(Debug)]
pub struct EchoOptions {
    /// CA certificates that client certificates must chain to.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// The server's certificate chain.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub server_key: PrivateKeyDer<'static>,
    /// Refuse handshakes without a client certificate (true), or accept them and report
    /// "no certificate" (false).
    pub require_client_cert: bool,
}

/// A running echo upstream; stops when dropped.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: SocketAddr,
    log: Arc<EchoLog>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    parsed.subject().iter_common_name().next()?.as_str().ok().map(str::to_string)
}

impl EchoUpstream {
    /// Binds `addr` and serves until dropped.
    pub async fn start(addr: SocketAddr, options: EchoOptions) -> anyhow::Result<Self> {
        Self::start_tuned(addr, options, EchoTuning::default()).await
    }

    /// Like [`EchoUpstream::start`], with benchmark knobs.
    pub async fn start_tuned(addr: SocketAddr, options: EchoOptions, tuning: EchoTuning) -> anyhow::Result<Self> {
        let mut provider = rustls::crypto::ring::default_provider();
        if tuning.x25519_only {
            provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
        }
        let provider = Arc::new(provider);
        let mut roots = rustls::RootCertStore::empty();
        for ca in options.client_ca {
            roots.add(ca)?;
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !options.require_client_cert {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build()?;
        static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        let versions = if tuning.tls12_only { TLS12_ONLY } else { rustls::DEFAULT_VERSIONS };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(options.server_chain, options.server_key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if !tuning.resumption {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        if tuning.close_connections {
            // One request per connection is an HTTP/1.1 notion.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = anyhow::Context::with_context(TcpListener::bind(addr).await, || format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let log = Arc::new(EchoLog { record: tuning.record_requests, ..EchoLog::default() });
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = task_log.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let acceptor = acceptor.clone();
                let log = task_log.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(error) => {
                            log.refused.fetch_add(1, Ordering::SeqCst);
                            tracing::debug!(%error, "echo upstream refused a handshake");
                            return;
                        }
                    };
                    log.handshakes.fetch_add(1, Ordering::SeqCst);
                    let session = tls.get_ref().1;
                    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        log.resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    if session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) {
                        log.tls12.fetch_add(1, Ordering::SeqCst);
                    }
                    let client_cn = session.peer_certificates().and_then(|c| c.first()).and_then(common_name);
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let client_cn = client_cn.clone();
                        async move {
                            let mut response = answer(&log, connection, client_cn, request).await;
                            if tuning.close_connections {
                                response.headers_mut().insert("connection", hyper::header::HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, log, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has seen so far.
    pub fn log(&self) -> &Arc<EchoLog> {
        &self.log
    }
}

async fn answer(
    log: &EchoLog,
    connection: usize,
    client_cn: Option<String>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<UnsyncBoxBody<Bytes, Infallible>> {
    let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let method = request.method().to_string();
    let expected_cn = request.headers().get("x-expect-cn").and_then(|v| v.to_str().ok()).map(str::to_string);
    let header_names: Vec<String> = request.headers().keys().map(|name| name.as_str().to_string()).collect();
    // `?bytes=N` asks for an N-byte body; otherwise the body echoes what was seen.
    // `&stall_after=M` sends M of them and then nothing more (a stalled upstream).
    let query_number = |name: &str| {
        request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let size = query_number("bytes");
    let stall_after = query_number("stall_after");
    // `&pause_ms=P` waits P ms before each 64 KiB chunk (a slow upstream).
    let pause = query_number("pause_ms").map(std::time::Duration::from_millis);
    // `?answer_after_ms=P` waits P ms before answering (an upstream slow to answer).
    let answer_after = query_number("answer_after_ms").map(std::time::Duration::from_millis);
    // Count the request body as it streams; never hold it whole.
    let mut body = request.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0),
            Err(_) => break,
        }
    }
    if let Some(wait) = answer_after {
        tokio::time::sleep(wait).await;
    }
    log.served.fetch_add(1, Ordering::SeqCst);
    if let Some(expected) = &expected_cn {
        let actual = client_cn.as_deref().unwrap_or("none");
        let counter = if expected == actual { &log.matched } else { &log.mismatched };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    if log.record
        && let Ok(mut requests) = log.requests.lock()
    {
        requests.push(SeenRequest {
            connection,
            client_cn: client_cn.clone(),
            method,
            path: path.clone(),
            received_bytes: received,
            expected_cn,
        });
    }
    let body = match size {
        Some(n) => RepeatBody { remaining: n, stall_at: stall_after.map(|m| n.saturating_sub(m)), pause, sleep: None }.boxed_unsync(),
        None => Full::new(Bytes::from(
            serde_json::json!({
                "client_cn": client_cn,
                "connection": connection,
                "path": path,
                "received_bytes": received,
                "headers": header_names,
            })
            .to_string(),
        ))
        .boxed_unsync(),
    };
    let mut response = hyper::Response::new(body);
    let kind = if size.is_some() { "application/octet-stream" } else { "application/json" };
    response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(kind));
    response.headers_mut().insert("x-received-bytes", hyper::header::HeaderValue::from(received));
    if let Some(cn) = client_cn.and_then(|cn| hyper::header::HeaderValue::from_str(&cn).ok()) {
        response.headers_mut().insert("x-client-cn", cn);
    }
    response
}

/// `remaining` bytes of `x`, produced 64 KiB at a time.
struct RepeatBody {
    remaining: u64,
    /// Stop sending (without ending) when `remaining` reaches this.
    stall_at: Option<u64>,
    /// Wait this long before each chunk.
    pause: Option<std::time::Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

const CHUNK: &[u8] = &[b'x'; 64 * 1024];

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(pause) = self.pause {
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let stall_at = self.stall_at.unwrap_or(0);
        if self.stall_at.is_some() && self.remaining <= stall_at {
            return Poll::Pending;
        }
        let n = self.remaining.min(CHUNK.len() as u64).min(self.remaining - stall_at) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
