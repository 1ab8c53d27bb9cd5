//! Outbound requests, with or without a named client certificate.

use std::fmt;

use crate::bindings::edgemtls::mtls::outgoing;
use crate::incoming::DeferredForward;
use crate::{Body, CertificateError, FetchError, Response, UpstreamFailure};

/// An outbound HTTP request. Build it, optionally name a certificate, then [`Request::send`].
#[derive(Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    certificate: Option<String>,
}

impl Request {
    /// A request with `method` (e.g. `"POST"`) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        // The standard methods in any case, as fetch takes them; others as they are.
        const STANDARD: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
        let method = match STANDARD.iter().find(|standard| standard.eq_ignore_ascii_case(method)) {
            Some(standard) => standard.to_string(),
            None => method.to_string(),
        };
        Self { method, url: url.to_string(), headers: Vec::new(), body: Body::default(), certificate: None }
    }

    /// A `GET` request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body; a [`Body::Stream`] (e.g. [`crate::IncomingRequest::into_body`]) is
    /// passed through without buffering.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// Presents the client certificate named `name` (as in `edgemtls cert create --name`).
    /// An empty name means no certificate.
    pub fn mtls_certificate(mut self, name: &str) -> Self {
        self.certificate = (!name.is_empty()).then(|| name.to_string());
        self
    }

    /// Sends the request and waits for the upstream's answer. The response body is a
    /// [`Body::Stream`]: pass it on (the host streams it, it never enters the guest), or
    /// read it with [`Body::into_bytes`].
    pub fn send(self) -> Result<Response, FetchError> {
        let full_length = self.body.len_hint();
        let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            if crate::incoming::is_hop_by_hop(name, &self.headers) || (full_length.is_some() && name.eq_ignore_ascii_case("content-length"))
            {
                continue;
            }
            headers.push((name.clone(), value.clone()));
        }
        if let Some(length) = full_length.filter(|n| *n > 0) {
            headers.push(("content-length".into(), length.to_string().into_bytes()));
        }
        let body = match self.body {
            Body::Full(bytes) => outgoing::RequestBody::Bytes(bytes),
            Body::Stream(stream) => outgoing::RequestBody::Streamed(stream),
        };
        // Through edgemtls:mtls even without a certificate (an empty name), so the host can
        // say why a request failed. One call: the host sends, and answers with the head.
        let name = self.certificate.as_deref().unwrap_or("");
        let answer = outgoing::send(&self.method, &self.url, &headers, body, name).map_err(|error| match error {
            outgoing::SendError::Certificate(e) => FetchError::Certificate(match e {
                outgoing::CertificateError::NotFound(n) => CertificateError::NotFound(n),
                outgoing::CertificateError::Disabled(n) => CertificateError::Disabled(n),
                outgoing::CertificateError::NotInEnvironment(n) => CertificateError::NotInEnvironment(n),
                outgoing::CertificateError::Expired(n) => CertificateError::Expired(n),
                outgoing::CertificateError::NotYetValid(n) => CertificateError::NotYetValid(n),
            }),
            outgoing::SendError::Header((name, e)) => FetchError::InvalidUrl(header_problem(&name, e)),
            outgoing::SendError::InvalidRequest(detail) => FetchError::InvalidUrl(detail),
            outgoing::SendError::Upstream((code, failure)) => FetchError::Upstream(UpstreamFailure::said(failure, code)),
        })?;
        crate::incoming::answer_unread_bodies_in_host();
        let mut out = Response::new(answer.status).with_body(Body::Stream(answer.body));
        for (name, value) in answer.headers.entries() {
            out = out.with_header(&name, value);
        }
        Ok(out)
    }
}

fn header_problem(name: &str, error: wasi::http::types::HeaderError) -> String {
    use wasi::http::types::HeaderError;
    match error {
        HeaderError::InvalidSyntax => format!("header '{name}' is not a valid HTTP header"),
        HeaderError::Forbidden => format!("header '{name}' may not be set by a handler"),
        HeaderError::Immutable => format!("header '{name}' cannot be changed here"),
    }
}

/// Passes `request` on to `url` — method, headers (minus hop-by-hop and the caller's
/// identity headers) and body — presenting the certificate `certificate` (empty: none).
///
/// Nothing is sent yet. Return the [`Forward`] from the handler (it converts into a
/// [`Response`]) and the host makes it (`edgemtls:mtls/forward`): the headers and both
/// bodies pass from the caller to the upstream and back without entering the guest, and the
/// handler's instance is free again as soon as the upstream answers. Call
/// [`Forward::send`] instead to forward in the guest and read or change the upstream's
/// response. Either way, a failure is answered with a problem+json response naming it.
pub fn forward(request: crate::IncomingRequest, url: &str, certificate: &str) -> Forward {
    Forward { request: request.into_inner(), url: url.to_string(), certificate: certificate.to_string(), client_cert: false }
}

/// As [`forward`], and passes the caller's verified certificate on as RFC 9440
/// `Client-Cert` and `Client-Cert-Chain` (what nginx's `$ssl_client_escaped_cert` does for
/// an upstream that wants to know the end client).
pub fn forward_with_client_cert(request: crate::IncomingRequest, url: &str, certificate: &str) -> Forward {
    Forward { client_cert: true, ..forward(request, url, certificate) }
}

/// Forwards as the built-in handlers do, as the route's options say: the certificate named
/// by `mtlsCertificate` (absent or empty: none), and the caller's certificate passed on when
/// `forwardClientCert` is `true`.
pub fn forward_by_route_options(request: crate::IncomingRequest, url: &str) -> Forward {
    let certificate = crate::config("mtlsCertificate").unwrap_or_default();
    let client_cert = crate::config("forwardClientCert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Forward { client_cert, ..forward(request, url, &certificate) }
}

/// A request to pass on, not sent yet: see [`forward`]. Returned from a handler, the host
/// sends it; [`Forward::send`] sends it from the guest.
#[must_use = "a forward is sent only when the handler returns it, or by send()"]
pub struct Forward {
    request: wasi::http::types::IncomingRequest,
    url: String,
    certificate: String,
    client_cert: bool,
}

impl Forward {
    /// Forwards now, from the guest, and returns the upstream's response (its body streams
    /// as the handler passes it on), or a problem+json response naming the failure.
    pub fn send(self) -> Response {
        let request = crate::IncomingRequest::from(self.request);
        let method = request.method();
        let headers = request.headers();
        let body = match request.into_body() {
            Ok(body) => body,
            Err(error) => return error.into_response(),
        };
        let mut outbound = Request::new(&method, &self.url).mtls_certificate(&self.certificate).body(body);
        for (name, value) in headers {
            let rfc9440 = name.eq_ignore_ascii_case(crate::CLIENT_CERT) || name.eq_ignore_ascii_case(crate::CLIENT_CERT_CHAIN);
            if crate::caller::is_identity_header(&name) && !(self.client_cert && rfc9440) {
                continue;
            }
            outbound = outbound.header(&name, value);
        }
        match outbound.send() {
            Ok(upstream) => upstream,
            Err(error) => error.into_response(),
        }
    }
}

impl From<Forward> for Response {
    /// The response the host makes by forwarding; see [`Response`] on changing it.
    fn from(forward: Forward) -> Self {
        Response::forwarded(Box::new(forward))
    }
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward").field("url", &self.url).field("certificate", &self.certificate).finish_non_exhaustive()
    }
}

impl DeferredForward for Forward {
    fn in_host(self: Box<Self>, out: wasi::http::types::ResponseOutparam) {
        let options = crate::bindings::edgemtls::mtls::forward::ForwardOptions { client_cert: self.client_cert };
        crate::bindings::edgemtls::mtls::forward::forward(self.request, &self.url, &self.certificate, options, out);
    }

    fn in_guest(self: Box<Self>) -> Response {
        self.send()
    }
}
