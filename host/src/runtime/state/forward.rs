//! `edgemtls:mtls/forward`: proxying in the host.
//!
//! A handler that passes a request on and the answer back unchanged (url-forward,
//! url-rewrite, the SDK's `forward`) does most of its work crossing the component boundary:
//! every header into the guest and out again, the outgoing request built field by field, and
//! both bodies pumped through guest calls until they end. Here the guest names the URL and
//! the certificate in one call, and the host does the rest: it builds the upstream request
//! from the incoming one, sends it through the same admission, identity and audit as
//! `wasi:http`, and answers the caller with the upstream's response. Bodies stream in the
//! host, so the guest returns, and its instance serves again, as soon as the head is back.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::StatusCode;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::p2::bindings::http::types as wasi;
use wasmtime_wasi_http::p2::body::{HostIncomingBody, HyperOutgoingBody};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::HostState;
use super::dispatch::{Via, dispatch};
use super::websocket::{self, WebSocketUpgrade};
use crate::Problem;
use crate::identity_headers as identity;
use crate::runtime::bindings::forward;

/// How much of a request body one read takes from the caller's connection.
const READ_CHUNK: usize = 64 * 1024;

impl forward::Host for HostState {
    async fn forward(
        &mut self,
        request: Resource<HostIncomingRequest>,
        url: String,
        certificate: String,
        options: forward::ForwardOptions,
        response_out: Resource<HostResponseOutparam>,
    ) -> wasmtime::Result<()> {
        let outparam = self.table.delete(response_out)?;
        let upgrade = self.upgrade.take();
        let response = match self.upstream_request(request, &url, options.client_cert)? {
            Ok(upstream) => self.send(upstream, &certificate, upgrade).await,
            Err(problem) => problem.into_response(),
        };
        (outparam.send)(Ok(response));
        Ok(())
    }
}

impl HostState {
    /// The request to send upstream, built from the caller's (which this consumes), or the
    /// problem that says why there is none.
    fn upstream_request(
        &mut self,
        request: Resource<HostIncomingRequest>,
        url: &str,
        client_cert: bool,
    ) -> wasmtime::Result<Result<http::Request<WasiBody>, Problem>> {
        let caller_headers = self.caller_headers.take();
        let mut view = wasmtime_wasi_http::WasiHttpView::http(self);
        let borrowed = || Resource::<HostIncomingRequest>::new_borrow(request.rep());
        let method = wasi::HostIncomingRequest::method(&mut view, borrowed())?;
        // The one incoming request a handler gets carries the caller's headers, which the
        // host kept when the request began: it is valid (checked just above) only while they
        // are kept, since forwarding consumes both.
        let mut headers = caller_headers.ok_or_else(|| wasmtime::Error::msg("the caller's headers were already forwarded"))?;
        let body = match wasi::HostIncomingRequest::consume(&mut view, borrowed())? {
            Ok(body) => Some(self.table.delete(body)?),
            Err(()) => None,
        };
        let mut view = wasmtime_wasi_http::WasiHttpView::http(self);
        wasi::HostIncomingRequest::drop(&mut view, request)?;

        let uri = match upstream_uri(url) {
            Ok(uri) => uri,
            Err(reason) => return Ok(Err(Problem::invalid_url(&reason))),
        };
        let Some(method) = http_method(method) else {
            return Ok(Err(Problem::invalid_url("method rejected")));
        };
        let withheld = |name: &http::header::HeaderName| {
            let name = name.as_str();
            let rfc9440 = name == identity::CLIENT_CERT || name == identity::CLIENT_CERT_CHAIN;
            identity::is_identity_header(name) && !(client_cert && rfc9440)
        };
        if headers.keys().any(withheld) {
            let names: Vec<http::header::HeaderName> = headers.keys().filter(|name| withheld(name)).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
        let upstream = http::Request::builder().method(method).uri(uri);
        // A guest that took the body itself cannot have it sent: say so, as the SDK would.
        let Some(body) = body else {
            return Ok(Err(Problem::request_body_taken()));
        };
        let body = request_body(body, self.stream_idle);
        let mut upstream = match upstream.body(body) {
            Ok(upstream) => upstream,
            Err(error) => return Ok(Err(Problem::invalid_url(&error.to_string()))),
        };
        *upstream.headers_mut() = headers;
        crate::hop_by_hop::remove_all(upstream.headers_mut());
        Ok(Ok(upstream))
    }

    /// Sends `request` presenting `certificate` (empty: none), as `wasi:http` requests are
    /// sent: counted against the outbound cap, checked against egress, audited. Returns the
    /// caller's response: the upstream's, or a problem. With the caller's WebSocket
    /// `upgrade`, the request asks the upstream for it too, over a connection of its own, and
    /// a 101 answer starts the tunnel between them.
    async fn send(
        &mut self,
        mut request: http::Request<WasiBody>,
        certificate: &str,
        upgrade: Option<WebSocketUpgrade>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let context = self.hooks.context.clone();
        // The place is taken first: over the cap, nothing is sent.
        let upgrade = match upgrade {
            Some(upgrade) => match self.tunnels.try_reserve() {
                Some(place) => Some((upgrade, place)),
                None => {
                    context.metrics.record_websocket(&context.route, "over-limit");
                    crate::warn_limited!(route = %context.route, max_websockets = self.tunnels.max(), "WebSocket refused: max_websockets tunnels are open");
                    return Problem::websockets_busy(self.tunnels.max()).into_response();
                }
            },
            None => None,
        };
        let identity = match self.resolve_named(certificate) {
            Ok(identity) => identity,
            Err(error) => return Problem::certificate_unusable(&error).into_response(),
        };
        let admission = self.hooks.admit(request.uri());
        let via = if upgrade.is_some() {
            websocket::set_upgrade_headers(request.headers_mut());
            Via::Upgrade
        } else {
            Via::Pool(None)
        };
        let result = dispatch(context.clone(), identity, admission, request, via).await;
        match result {
            Ok(mut response) => {
                crate::hop_by_hop::remove_all(response.headers_mut());
                if let Some((caller, place)) = upgrade {
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        let upstream = hyper::upgrade::on(&mut response);
                        websocket::set_upgrade_headers(response.headers_mut());
                        context.metrics.record_websocket(&context.route, "opened");
                        self.tunnels.start(caller, upstream, place, context.metrics.clone(), context.route.clone());
                    } else {
                        // The upstream answered as HTTP; so does the caller's connection.
                        context.metrics.record_websocket(&context.route, "refused");
                    }
                }
                response
            }
            Err(failure) => Problem::upstream_failed(&failure).into_response(),
        }
    }
}

/// The caller's request body as the upstream request's: empty when it has already ended (a
/// GET, a HEAD), so nothing announces a body that is not there; else streamed as it arrives,
/// and ended with an error when the caller sends nothing for `idle` (an upstream that
/// answered early would otherwise wait on a stalled upload without end).
pub(super) fn request_body(mut body: HostIncomingBody, idle: std::time::Duration) -> WasiBody {
    let Some(mut stream) = body.take_stream() else {
        return empty();
    };
    let first = match stream.read(READ_CHUNK) {
        Err(StreamError::Closed) => return empty(),
        other => other,
    };
    let chunks = futures_util::stream::unfold((Some(first), stream, body), move |(first, mut stream, body)| async move {
        let mut next = first;
        loop {
            match next.take() {
                Some(Ok(bytes)) if !bytes.is_empty() => {
                    return Some((Ok(hyper::body::Frame::data(bytes)), (None, stream, body)));
                }
                Some(Err(StreamError::Closed)) => return None,
                Some(Err(StreamError::LastOperationFailed(error) | StreamError::Trap(error))) => {
                    let error = error
                        .downcast::<wasmtime_wasi_http::Error>()
                        .unwrap_or_else(|other| wasmtime_wasi_http::Error::InternalError(Some(other.to_string())));
                    return Some((Err(error), (None, stream, body)));
                }
                // Nothing buffered yet: wait for the caller to send more.
                Some(Ok(_)) | None => {
                    if tokio::time::timeout(idle, stream.ready()).await.is_err() {
                        return Some((Err(wasmtime_wasi_http::Error::ConnectionReadTimeout), (None, stream, body)));
                    }
                    next = Some(stream.read(READ_CHUNK));
                }
            }
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

pub(super) fn empty() -> WasiBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body the guest handed over whole: its length is known, so hyper announces it.
pub(super) fn whole(bytes: Vec<u8>) -> WasiBody {
    if bytes.is_empty() {
        return empty();
    }
    Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed_unsync()
}

/// `url` as an absolute `http`/`https` URI, or why it is not one. Split as the guest SDK
/// splits a URL (`fetch.rs`), in its words, so both paths refuse the same URLs alike.
pub(super) fn upstream_uri(url: &str) -> Result<http::Uri, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("'{url}' has no scheme (expected https://...)"))?;
    // A WebSocket URL names the same connection as its HTTP twin: the upgrade is a request.
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => http::uri::Scheme::HTTPS,
        "http" | "ws" => http::uri::Scheme::HTTP,
        other => return Err(format!("unsupported scheme '{other}' in '{url}'")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    let mut path = rest[end..].split('#').next().unwrap_or("").to_string();
    if path.is_empty() || path.starts_with('?') {
        path.insert(0, '/');
    }
    http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build().map_err(|_| format!("'{url}' is not a valid URL"))
}

fn http_method(method: wasi::Method) -> Option<http::Method> {
    Some(match method {
        wasi::Method::Get => http::Method::GET,
        wasi::Method::Head => http::Method::HEAD,
        wasi::Method::Post => http::Method::POST,
        wasi::Method::Put => http::Method::PUT,
        wasi::Method::Delete => http::Method::DELETE,
        wasi::Method::Connect => http::Method::CONNECT,
        wasi::Method::Options => http::Method::OPTIONS,
        wasi::Method::Trace => http::Method::TRACE,
        wasi::Method::Patch => http::Method::PATCH,
        wasi::Method::Other(other) => return http::Method::from_bytes(other.as_bytes()).ok(),
    })
}
