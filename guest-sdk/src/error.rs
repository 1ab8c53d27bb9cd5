//! Why an outbound request failed: the certificate, the upstream, the URL or a body. Plain
//! data that `fetch`, `body` and `incoming` share; `problem.rs` turns it into a response.

use std::fmt;

use wasi::http::types::ErrorCode;

use crate::bindings::edgemtls::mtls::outgoing;

/// Why a named certificate could not be used. Each case carries the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// No certificate has this name.
    NotFound(String),
    /// The certificate is disabled.
    Disabled(String),
    /// The certificate is not scoped to the environment the host runs in.
    NotInEnvironment(String),
    /// The certificate has expired.
    Expired(String),
    /// The certificate is not valid yet.
    NotYetValid(String),
}

impl CertificateError {
    /// A stable short name: `not-found`, `disabled`, `not-in-environment`, `expired`, `not-yet-valid`.
    pub fn kind(&self) -> &'static str {
        match self {
            CertificateError::NotFound(_) => "not-found",
            CertificateError::Disabled(_) => "disabled",
            CertificateError::NotInEnvironment(_) => "not-in-environment",
            CertificateError::Expired(_) => "expired",
            CertificateError::NotYetValid(_) => "not-yet-valid",
        }
    }

    /// The certificate name.
    pub fn name(&self) -> &str {
        match self {
            CertificateError::NotFound(n)
            | CertificateError::Disabled(n)
            | CertificateError::NotInEnvironment(n)
            | CertificateError::Expired(n)
            | CertificateError::NotYetValid(n) => n,
        }
    }
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            CertificateError::NotFound(_) => write!(f, "certificate '{name}' not found"),
            CertificateError::Disabled(_) => write!(f, "certificate '{name}' is disabled"),
            CertificateError::NotInEnvironment(_) => write!(f, "certificate '{name}' is not available in this environment"),
            CertificateError::Expired(_) => write!(f, "certificate '{name}' has expired"),
            CertificateError::NotYetValid(_) => write!(f, "certificate '{name}' is not valid yet"),
        }
    }
}

/// Why an upstream request failed: a stable reason and what to do, in plain words.
///
/// The host says this for requests it sent (`edgemtls:mtls/outgoing.failure`); for anything
/// else it is derived from the `wasi:http` error code.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    reason: String,
    message: String,
    code: Option<ErrorCode>,
}

impl UpstreamFailure {
    /// The machine-readable reason, as the host's audit log writes it:
    /// `upstream-hostname-mismatch`, `upstream-unknown-issuer`, `client-certificate-required`, ….
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// What failed and what to do.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the upstream did not answer in time (the host's reason and the SDK's own
    /// both come with one of these codes).
    pub(crate) fn timed_out(&self) -> bool {
        matches!(self.code, Some(ErrorCode::HttpResponseTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionWriteTimeout))
    }

    /// The `wasi:http` error code, when the failure came with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.code.as_ref()
    }

    /// What the host said of a request that failed.
    pub(crate) fn said(failure: outgoing::UpstreamFailure, code: ErrorCode) -> Self {
        Self { reason: failure.reason, message: failure.message, code: Some(code) }
    }

    /// Plain words for a `wasi:http` error code.
    pub(crate) fn from_code(code: ErrorCode) -> Self {
        let (reason, message): (&str, String) = match &code {
            ErrorCode::DnsTimeout => ("connect-failed", "looking up the upstream's name timed out".into()),
            ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => ("connect-failed", "the upstream's name does not resolve".into()),
            ErrorCode::DestinationUnavailable | ErrorCode::DestinationIpUnroutable => {
                ("connect-failed", "the upstream cannot be reached".into())
            }
            ErrorCode::DestinationIpProhibited => ("connect-failed", "the host does not allow connections to that address".into()),
            ErrorCode::ConnectionRefused => ("connection-refused", "the upstream refused the connection".into()),
            ErrorCode::ConnectionTerminated => ("connection-lost", "the upstream closed the connection before it answered".into()),
            ErrorCode::ConnectionTimeout => ("connect-timeout", "connecting to the upstream timed out".into()),
            ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionWriteTimeout | ErrorCode::HttpResponseTimeout => {
                ("response-timeout", "the upstream did not answer in time".into())
            }
            ErrorCode::ConnectionLimitReached => ("outbound-limit", "too many connections are open".into()),
            ErrorCode::TlsProtocolError => ("tls-handshake-failed", "the TLS handshake with the upstream failed".into()),
            ErrorCode::TlsCertificateError => ("upstream-certificate-invalid", "the upstream's certificate was not accepted".into()),
            ErrorCode::TlsAlertReceived(alert) => (
                "tls-alert",
                match &alert.alert_message {
                    Some(name) => format!("the upstream ended the TLS handshake with alert {name}"),
                    None => "the upstream ended the TLS handshake with an alert".into(),
                },
            ),
            ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => {
                ("invalid-request", "the request's URL or method is not valid".into())
            }
            ErrorCode::HttpRequestBodySize(_) => ("invalid-request", "the request body does not match its content-length".into()),
            ErrorCode::HttpRequestDenied => ("egress-denied", "the host does not allow this route to call that upstream".into()),
            ErrorCode::HttpRequestLengthRequired => ("invalid-request", "the upstream requires a content-length".into()),
            ErrorCode::HttpRequestUriTooLong => ("invalid-request", "the request's URL is too long for the upstream".into()),
            ErrorCode::HttpRequestHeaderSectionSize(_)
            | ErrorCode::HttpRequestHeaderSize(_)
            | ErrorCode::HttpRequestTrailerSectionSize(_)
            | ErrorCode::HttpRequestTrailerSize(_) => ("invalid-request", "the request's headers are too large for the upstream".into()),
            ErrorCode::HttpResponseIncomplete => ("connection-lost", "the upstream's response ended early".into()),
            ErrorCode::HttpResponseHeaderSectionSize(_)
            | ErrorCode::HttpResponseHeaderSize(_)
            | ErrorCode::HttpResponseBodySize(_)
            | ErrorCode::HttpResponseTrailerSectionSize(_)
            | ErrorCode::HttpResponseTrailerSize(_) => ("upstream-error", "the upstream's response is larger than allowed".into()),
            ErrorCode::HttpResponseTransferCoding(_) | ErrorCode::HttpResponseContentCoding(_) => {
                ("upstream-error", "the upstream's response uses an encoding that cannot be read".into())
            }
            ErrorCode::HttpUpgradeFailed => ("upstream-error", "the upstream refused the protocol upgrade".into()),
            ErrorCode::HttpProtocolError => ("upstream-error", "the upstream's response is not valid HTTP".into()),
            ErrorCode::LoopDetected => ("upstream-error", "the request loops back to where it came from".into()),
            ErrorCode::ConfigurationError => ("upstream-error", "the host is not configured to send this request".into()),
            ErrorCode::InternalError(Some(text)) => ("upstream-error", text.clone()),
            ErrorCode::InternalError(None) => ("upstream-error", "the upstream request failed".into()),
        };
        Self { reason: reason.to_string(), message, code: Some(code) }
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a fetch failed.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// The named certificate cannot be used; nothing was sent.
    Certificate(CertificateError),
    /// The request failed (connection, TLS, protocol...).
    Upstream(UpstreamFailure),
    /// The URL could not be used.
    InvalidUrl(String),
    /// Reading or writing a body failed.
    Body(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Certificate(e) => e.fmt(f),
            FetchError::Upstream(failure) => failure.fmt(f),
            FetchError::InvalidUrl(reason) => write!(f, "invalid URL: {reason}"),
            FetchError::Body(reason) => write!(f, "body transfer failed: {reason}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// The problem type and reason: `certificate-not-found`, …, the upstream failure's
    /// reason (`upstream-hostname-mismatch`, …), `invalid-url`, `body-error`.
    pub fn kind(&self) -> String {
        match self {
            FetchError::Certificate(e) => format!("certificate-{}", e.kind()),
            FetchError::Upstream(failure) => failure.reason.clone(),
            FetchError::InvalidUrl(_) => "invalid-url".into(),
            FetchError::Body(_) => "body-error".into(),
        }
    }

    /// The status a handler should answer with: 500 for a configuration problem on our
    /// side (certificate, URL), 502 when the upstream failed.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Certificate(_) | FetchError::InvalidUrl(_) => 500,
            FetchError::Upstream(failure) if failure.timed_out() => 504,
            FetchError::Upstream(_) | FetchError::Body(_) => 502,
        }
    }

    /// A short title for the problem: nothing was sent for a certificate or URL problem.
    pub fn title(&self) -> &'static str {
        match self {
            FetchError::Certificate(_) => "Client certificate cannot be used",
            FetchError::InvalidUrl(_) => "Invalid upstream URL",
            FetchError::Upstream(_) | FetchError::Body(_) => "Upstream request failed",
        }
    }
}
