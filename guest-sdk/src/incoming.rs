//! The incoming side: the request a handler receives and the response it returns.

use wasi::http::types::{Fields, IncomingRequest as WasiIncomingRequest, Method, OutgoingResponse, ResponseOutparam};

use crate::bindings::edgemtls::mtls::pass_through;
use crate::{Body, FetchError};

/// A request handler. Export it with [`crate::handler!`].
pub trait Handler {
    /// Answers one request. A panic becomes a 500 from the host.
    fn handle(request: IncomingRequest) -> Response;
}

/// The request a handler receives.
pub struct IncomingRequest {
    inner: WasiIncomingRequest,
}

impl IncomingRequest {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        match self.inner.method() {
            Method::Get => "GET".into(),
            Method::Head => "HEAD".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Connect => "CONNECT".into(),
            Method::Options => "OPTIONS".into(),
            Method::Trace => "TRACE".into(),
            Method::Patch => "PATCH".into(),
            Method::Other(other) => other,
        }
    }

    /// The path and query, e.g. `/billing/invoices?page=2`.
    pub fn path_with_query(&self) -> String {
        self.inner.path_with_query().unwrap_or_else(|| "/".into())
    }

    /// All headers, in order.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        self.inner.headers().entries()
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.inner.headers().get(&name).into_iter().next().and_then(|v| String::from_utf8(v).ok())
    }

    /// The certificate the caller presented on the TLS listener, as the host verified it;
    /// `None` when it presented none.
    pub fn client_certificate(&self) -> Option<crate::ClientCertificate> {
        crate::ClientCertificate::from_headers(|name| self.header(name))
    }

    /// The path without the query, e.g. `/billing/invoices`.
    pub fn path(&self) -> String {
        let full = self.path_with_query();
        full.split('?').next().unwrap_or("/").to_string()
    }

    /// The query without `?`, or an empty string.
    pub fn query(&self) -> String {
        self.path_with_query().split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default()
    }

    /// The body, as a stream that can be passed on without buffering.
    pub fn into_body(self) -> Result<Body, FetchError> {
        let body = self.inner.consume().map_err(|()| FetchError::Body("request body already taken".into()))?;
        Ok(Body::Stream(body))
    }

    /// Reads the whole body.
    pub fn body(self) -> Result<Vec<u8>, FetchError> {
        self.into_body()?.into_bytes()
    }

    /// The underlying `wasi:http` request, for streaming.
    pub fn into_inner(self) -> WasiIncomingRequest {
        self.inner
    }
}

impl From<WasiIncomingRequest> for IncomingRequest {
    fn from(inner: WasiIncomingRequest) -> Self {
        Self { inner }
    }
}

/// A response: status, headers and body.
///
/// A response made from a [`crate::Forward`] is filled in by the host when the handler
/// returns it: until then its status is 0 and it has no headers or body. Change it anyway
/// and the forward is made in the guest, with the changes on top of the upstream's response:
/// a status other than 0 replaces the upstream's; each header replaces the upstream's of that
/// name, except `set-cookie`, which is added beside the upstream's cookies; and a body
/// replaces the upstream's together with the headers that described it (`content-encoding`,
/// `content-length`, `content-range`, `etag`, `last-modified` and the digests), a partial
/// 206 becoming 200 unless the handler set a status. To read the upstream's response, call
/// [`crate::Forward::send`].
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Body,
    /// A forward the host makes when this response is returned unchanged ([`crate::Forward`]).
    forward: Option<Box<dyn DeferredForward>>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Body::default(), forward: None }
    }

    /// The response of a forward not made yet: status 0, no headers, no body.
    pub(crate) fn forwarded(forward: Box<dyn DeferredForward>) -> Self {
        Self { forward: Some(forward), ..Self::new(0) }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A forward held by a [`Response`] ([`crate::Forward`], in `fetch.rs`): made by the host
/// when the handler returns the response as it was, else in the guest. A trait object, so a
/// handler that never forwards links none of it, and its component imports neither
/// `edgemtls:mtls/forward` nor `outgoing` (it stays a plain `wasi:http` component). Declared
/// here, beside the response that holds it, so `incoming` needs nothing from `fetch`.
pub(crate) trait DeferredForward: std::fmt::Debug {
    /// The host forwards and answers `out`: nothing passes through the guest.
    fn in_host(self: Box<Self>, out: wasi::http::types::ResponseOutparam);
    /// The guest forwards, for a handler that changed the response.
    fn in_guest(self: Box<Self>) -> Response;
}

/// Runs `H` for one request; used by [`crate::handler!`].
#[doc(hidden)]
pub fn run_handler<H: Handler>(request: WasiIncomingRequest, response_out: ResponseOutparam) {
    let response = H::handle(IncomingRequest { inner: request });
    send_response(response, response_out);
}

/// Headers that describe a body rather than the resource: a replaced body makes them wrong.
const REPRESENTATION: &[&str] = &[
    "content-encoding",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Headers a handler adds beside the upstream's rather than in their place: each value is
/// its own (a cookie), and they cannot be combined into one.
const ADDED_BESIDE: &[&str] = &["set-cookie"];

/// The upstream's response with what the handler set on a forward's response (see
/// [`Response`]): its status when not 0, its headers in place of the upstream's of the same
/// names, its body (when it has one) in place of the upstream's and of the headers that
/// described that.
fn on_top_of(mut upstream: Response, changes: Response) -> Response {
    let body_replaced = changes.body.len_hint() != Some(0);
    if changes.status != 0 {
        upstream.status = changes.status;
    } else if body_replaced && upstream.status == 206 {
        // A whole new body is not part of anything.
        upstream.status = 200;
    }
    upstream.headers.retain(|(name, _)| {
        let added_beside = ADDED_BESIDE.iter().any(|h| h.eq_ignore_ascii_case(name));
        let set_by_handler = !added_beside && changes.headers.iter().any(|(changed, _)| changed.eq_ignore_ascii_case(name));
        let described_old_body = body_replaced && REPRESENTATION.iter().any(|h| h.eq_ignore_ascii_case(name));
        !set_by_handler && !described_old_body
    });
    upstream.headers.extend(changes.headers);
    if body_replaced {
        upstream.body = changes.body;
    }
    upstream
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the host sets itself; a proxy must not
/// pass them on.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// Whether `name` is hop-by-hop: one of [`HOP_BY_HOP`], or named by a `Connection` header
/// among `headers` (RFC 9110 §7.6.1), so it must not be forwarded.
pub(crate) fn is_hop_by_hop(name: &str, headers: &[(String, Vec<u8>)]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, value)| String::from_utf8_lossy(value).split(',').any(|listed| listed.trim().eq_ignore_ascii_case(name)))
}

fn send_response(mut response: Response, out: ResponseOutparam) {
    if let Some(forward) = response.forward.take() {
        let unchanged = response.status == 0 && response.headers.is_empty() && response.body.len_hint() == Some(0);
        if unchanged {
            return forward.in_host(out);
        }
        response = on_top_of(forward.in_guest(), response);
    }
    let full_length = response.body.len_hint();
    let left_out = |name: &str| {
        is_hop_by_hop(name, &response.headers)
            // A body held in memory gets its own, exact length below.
            || (full_length.is_some() && name.eq_ignore_ascii_case("content-length"))
    };
    let body = match (response.body, RESPOND_IN_HOST.get()) {
        // A body received and not read (an upstream's, the caller's) streams from the host to
        // the caller without entering the guest, and the handler returns at once.
        (Body::Stream(body), Some(respond_in_host)) => {
            let headers: Vec<(String, Vec<u8>)> = response.headers.iter().filter(|(name, _)| !left_out(name)).cloned().collect();
            return respond_in_host(response.status, &headers, body, out);
        }
        (body, _) => body,
    };
    let headers = Fields::new();
    for (name, value) in response.headers.iter().filter(|(name, _)| !left_out(name)) {
        // A header the host forbids is dropped rather than failing the response.
        let _ = headers.append(name, value);
    }
    if let Some(length) = full_length {
        let _ = headers.append("content-length", length.to_string().as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let Ok(outgoing_body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    // The client may have gone away; nothing useful to do about a write error then.
    let _ = body.write_to(outgoing_body);
}

/// How a handler answers with an unread body in the host (`edgemtls:mtls/pass-through`).
type RespondInHost = fn(u16, &[(String, Vec<u8>)], wasi::http::types::IncomingBody, ResponseOutparam);

/// Set by the first [`crate::Request::send`], so that only a handler that sends imports
/// `pass-through` (with `outgoing`, which it imports anyway): one that neither sends nor
/// forwards stays a plain `wasi:http` component, and splices a caller's body it answers with
/// through `wasi:io` streams.
static RESPOND_IN_HOST: std::sync::OnceLock<RespondInHost> = std::sync::OnceLock::new();

/// From now on, answer with unread bodies in the host.
pub(crate) fn answer_unread_bodies_in_host() {
    let _ = RESPOND_IN_HOST.set(pass_through::respond_with_body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Response {
        Response::new(200)
            .with_header("content-type", "application/json")
            .with_header("content-encoding", "gzip")
            .with_header("etag", "\"v1\"")
            .with_header("cache-control", "max-age=60")
            .with_header("set-cookie", "session=abc")
            .with_body("{\"compressed\":true}")
    }

    fn names(response: &Response) -> Vec<&str> {
        response.headers.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn a_header_the_handler_sets_replaces_the_upstreams_and_the_rest_stay() {
        let changes = Response::new(0)
            .with_header("Cache-Control", "no-store")
            .with_header("x-changed", "yes")
            .with_header("Set-Cookie", "theme=dark");
        let merged = on_top_of(upstream(), changes);
        assert_eq!(merged.status, 200, "status 0 keeps the upstream's");
        assert_eq!(
            names(&merged),
            ["content-type", "content-encoding", "etag", "set-cookie", "Cache-Control", "x-changed", "Set-Cookie"],
            "a cookie the handler sets goes beside the upstream's"
        );
        assert_eq!(merged.header("cache-control"), Some("no-store"));
        assert_eq!(merged.body.len_hint(), Some(19), "no body set: the upstream's stays");
    }

    #[test]
    fn a_body_the_handler_sets_replaces_the_upstreams_with_the_headers_that_described_it() {
        let changes = Response::new(203).with_header("content-type", "text/plain").with_body("plain text");
        let merged = on_top_of(upstream(), changes);
        assert_eq!(merged.status, 203);
        assert_eq!(names(&merged), ["cache-control", "set-cookie", "content-type"], "content-encoding and etag described the old body");
        assert_eq!(merged.body.len_hint(), Some(10));

        let partial = Response::new(206).with_header("content-range", "bytes 0-9/100").with_body("0123456789");
        let merged = on_top_of(partial, Response::new(0).with_body("whole"));
        assert_eq!(merged.status, 200, "a new body is whole, not part of the upstream's");
        assert!(names(&merged).is_empty(), "{:?}", names(&merged));
    }
}
