//! Outbound requests, with or without a named client certificate.

use std::fmt;

use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

use crate::bindings::edgemtls::mtls::outgoing;
use crate::incoming::DeferredForward;
use crate::{Body, CertificateError, FetchError, Response, UpstreamFailure};

/// An outbound HTTP request. Build it, optionally name a certificate, then [`Request::send`].
#[derive(Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    certificate: Option<String>,
}

impl Request {
    /// A request with `method` (e.g. `"POST"`) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
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

    /// Sends the request. The response body is a [`Body::Stream`]: pass it on, or read it
    /// with [`Body::into_bytes`].
    pub fn send(self) -> Result<Response, FetchError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = Fields::new();
        let full_length = self.body.len_hint();
        for (name, value) in &self.headers {
            if crate::incoming::is_hop_by_hop(name, &self.headers) || (full_length.is_some() && name.eq_ignore_ascii_case("content-length"))
            {
                continue;
            }
            headers.append(name, value).map_err(|e| FetchError::InvalidUrl(header_problem(name, e)))?;
        }
        if let Some(length) = full_length.filter(|n| *n > 0) {
            headers
                .append("content-length", length.to_string().as_bytes())
                .map_err(|e| FetchError::InvalidUrl(header_problem("content-length", e)))?;
        }
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| FetchError::InvalidUrl(format!("{what} rejected in '{}'", self.url));
        request.set_method(&self.method).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(&authority)).map_err(|()| invalid("authority"))?;
        request.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| FetchError::Body("request body already taken".into()))?;

        // Hand the request over first, then stream the body: the host reads while we write.
        // Through edgemtls:mtls even without a certificate (an empty name), so the host can
        // say why a request failed.
        let name = self.certificate.as_deref().unwrap_or("");
        let future = outgoing::handle(request, None, name).map_err(|error| match error {
            outgoing::Error::Certificate(e) => FetchError::Certificate(match e {
                outgoing::CertificateError::NotFound(n) => CertificateError::NotFound(n),
                outgoing::CertificateError::Disabled(n) => CertificateError::Disabled(n),
                outgoing::CertificateError::NotInEnvironment(n) => CertificateError::NotInEnvironment(n),
                outgoing::CertificateError::Expired(n) => CertificateError::Expired(n),
                outgoing::CertificateError::NotYetValid(n) => CertificateError::NotYetValid(n),
            }),
            outgoing::Error::Http(code) => FetchError::Upstream(UpstreamFailure::from_code(code)),
        })?;
        // If the host refused the request, the body stream is closed; the response future
        // then carries the real reason, so report that before the body error.
        let written = self.body.write_to(body);

        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| FetchError::Body("response already taken".into()))?
            .map_err(|code| FetchError::Upstream(UpstreamFailure::of(&future, code)))?;
        written?;
        let status = response.status();
        let headers: Vec<(String, Vec<u8>)> = response.headers().entries();
        let body = response.consume().map_err(|()| FetchError::Body("response body already taken".into()))?;
        let mut out = Response::new(status).with_body(Body::Stream(body));
        for (name, value) in headers {
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

/// Splits `scheme://authority/path?query` into the parts `wasi:http` wants.
fn split_url(url: &str) -> Result<(Scheme, String, String), FetchError> {
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| FetchError::InvalidUrl(format!("'{url}' has no scheme (expected https://...)")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(FetchError::InvalidUrl(format!("unsupported scheme '{other}' in '{url}'"))),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(FetchError::InvalidUrl(format!("'{url}' has no host")));
    }
    let mut path = rest[end..].split('#').next().unwrap_or("").to_string();
    if path.is_empty() || path.starts_with('?') {
        path.insert(0, '/');
    }
    Ok((scheme, authority.to_string(), path))
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
