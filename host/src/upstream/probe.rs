//! One real request with an identity, reported step by step: what `edgemtls cert test`
//! shows before an operator switches to a new certificate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::failure::{Attempt, FailureReason, UpstreamFailure, classify};
use super::{Authority, ClientIdentity};

/// What happened, as far as it got.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProbeReport {
    /// The URL requested.
    pub url: String,
    /// The certificate presented (`None`: no certificate).
    pub certificate: Option<String>,
    /// TCP connect time.
    pub connect_ms: Option<f64>,
    /// TLS handshake time.
    pub handshake_ms: Option<f64>,
    /// Negotiated TLS version.
    pub tls_version: Option<String>,
    /// Negotiated cipher suite.
    pub cipher_suite: Option<String>,
    /// The server certificate's subject.
    pub server_subject: Option<String>,
    /// The server certificate's issuer.
    pub server_issuer: Option<String>,
    /// The server certificate's end of validity (RFC 3339).
    pub server_not_after: Option<String>,
    /// HTTP status of a `GET` over the connection.
    pub status: Option<u16>,
    /// Time to the response head, from the start.
    pub total_ms: Option<f64>,
    /// Why it failed, machine-readable (as in the audit log): `upstream-unknown-issuer`, ….
    pub reason: Option<String>,
    /// Why it failed, in plain words.
    pub error: Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Connects to `url` (https) presenting `identity`, sends `GET`, and reports each step.
/// Never fails: a failure is recorded in the report's `error`.
pub async fn probe(identity: &ClientIdentity, url: &http::Uri) -> ProbeReport {
    let mut report = ProbeReport { url: url.to_string(), certificate: identity.name().map(str::to_string), ..ProbeReport::default() };
    if let Err(failure) = run(identity, url, &mut report).await {
        report.reason = Some(failure.reason().as_str().to_string());
        report.error = Some(failure.message().to_string());
    }
    report
}

fn invalid(message: String) -> UpstreamFailure {
    UpstreamFailure::new(FailureReason::InvalidRequest, message)
}

/// `TLS 1.3`, as people write it.
fn tls_version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".into(),
        other => format!("TLS version 0x{:04x}", u16::from(other)),
    }
}

async fn run(identity: &ClientIdentity, url: &http::Uri, report: &mut ProbeReport) -> Result<(), UpstreamFailure> {
    if url.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(invalid(format!("'{url}' is not an https:// URL; only those can be tested")));
    }
    let authority = Authority::of(url).ok_or_else(|| invalid(format!("'{url}' has no host")))?;
    // The socket and the server name take the bare address of an IPv6 literal.
    let host = authority.bare_host().to_string();
    let port = authority.port();
    let attempt = Attempt { authority: &authority, certificate: identity.name() };
    // The pools' own rules: trust profile, pins, TLS versions and revocation.
    let rules = identity.rules_for(&authority)?;

    let started = Instant::now();
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| UpstreamFailure::new(FailureReason::ConnectTimeout, format!("connecting to {authority} timed out after 10 s")))?
        .map_err(|e| classify(&e, &attempt))?;
    report.connect_ms = Some(ms(started.elapsed()));

    let server_name = ServerName::try_from(host.clone()).map_err(|e| invalid(format!("'{host}' is not a valid server name: {e}")))?;
    let handshake_started = Instant::now();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(rules.tls)).connect(server_name, tcp).await.map_err(|e| classify(&e, &attempt))?;
    report.handshake_ms = Some(ms(handshake_started.elapsed()));
    let (_, session) = tls.get_ref();
    report.tls_version = session.protocol_version().map(tls_version_name);
    report.cipher_suite = session.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).map(str::to_string);
    if let Some(leaf) = session.peer_certificates().and_then(|c| c.first())
        && let Ok((_, cert)) = X509Certificate::from_der(leaf)
    {
        report.server_subject = Some(cert.subject().to_string());
        report.server_issuer = Some(cert.issuer().to_string());
        report.server_not_after = Some(crate::pki::rfc3339(cert.validity().not_after.to_datetime()));
    }
    // As a pooled connection (`RevocationGuard`): no request before the issuer has answered.
    super::refuse_if_revoked(rules.revocation.as_deref(), &authority.to_string(), session).await.map_err(|e| classify(&e, &attempt))?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| classify(&e, &attempt))?;
    let connection = tokio::spawn(connection);
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::get(path)
        .header(http::header::HOST, url.authority().map(|a| a.as_str()).unwrap_or(&host))
        .header(http::header::USER_AGENT, concat!("edgemtls/", env!("CARGO_PKG_VERSION"), " cert-test"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| invalid(format!("cannot build a request for '{url}': {e}")))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            // TLS 1.3 servers refuse a client certificate after the handshake: the connection
            // fails with the alert, and the request only sees it end. Report the cause.
            let cause = match tokio::time::timeout(Duration::from_secs(5), connection).await {
                Ok(Ok(Err(connection_error))) => connection_error,
                _ => error,
            };
            return Err(classify(&cause, &attempt));
        }
    };
    report.status = Some(response.status().as_u16());
    report.total_ms = Some(ms(started.elapsed()));
    let _ = response.into_body().collect().await;
    Ok(())
}
