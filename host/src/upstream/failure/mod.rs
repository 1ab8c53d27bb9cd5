//! Why an outbound request failed, in words an operator can act on.
//!
//! Every failure gets a stable [`FailureReason`] (the problem `type` a guest answers with,
//! the audit line's `reason`, the metrics `outcome`) and a message that says what failed and
//! what to do. The `wasi:http` error code a guest sees is derived from the same value, so
//! the three never disagree.

mod alert;
mod certificate;
mod classify;

use std::time::Duration;

use rustls::AlertDescription;

use self::alert::alert_name;
pub use self::classify::classify;
use super::Authority;

/// What kind of failure; see [`FailureReason::as_str`] for the stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The upstream's certificate chains to no CA we trust.
    UpstreamUnknownIssuer,
    /// The upstream's certificate is for other names.
    UpstreamHostnameMismatch,
    /// The upstream's certificate has expired.
    UpstreamCertificateExpired,
    /// The upstream's certificate is not valid yet.
    UpstreamCertificateNotYetValid,
    /// A configured CRL lists the upstream's certificate.
    UpstreamCertificateRevoked,
    /// CRLs are configured but none covers the upstream's certificate, or one is out of date.
    UpstreamRevocationUnknown,
    /// The upstream's key matches no configured pin.
    UpstreamPinMismatch,
    /// The upstream's certificate is unusable for another reason (encoding, signature, purpose).
    UpstreamCertificateInvalid,
    /// The upstream asked for a client certificate and the request presented none.
    ClientCertificateRequired,
    /// The upstream refused the client certificate the request presented.
    ClientCertificateRefused,
    /// The upstream ended the handshake with another TLS alert.
    TlsAlert,
    /// The TLS handshake failed for a protocol reason.
    TlsHandshake,
    /// The client certificate's key could not sign the handshake: its PKCS#11 token is
    /// missing, refused the PIN, lost the key, or did not answer in time. Ours, not the
    /// upstream's.
    ClientKeyUnavailable,
    /// Nothing accepted the TCP connection.
    ConnectionRefused,
    /// The TCP connection was not established in time.
    ConnectTimeout,
    /// The connection could not be opened for another reason (name resolution, routing).
    ConnectFailed,
    /// The connection closed before the response arrived.
    ConnectionLost,
    /// The response head did not arrive in time.
    ResponseTimeout,
    /// The handler sent more outbound requests than its limit.
    OutboundLimit,
    /// The route may not call this upstream (`allowed_outbound_hosts`, or a forbidden address).
    EgressDenied,
    /// The request could not be sent as given (URL, headers).
    InvalidRequest,
    /// The request's body failed while it was being sent: its caller went away in the middle
    /// of an upload, or its handler stopped writing it. Not the upstream's doing.
    RequestBodyFailed,
    /// Anything else.
    Other,
}

impl FailureReason {
    /// The stable, machine-readable name: `upstream-hostname-mismatch`, `client-certificate-required`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamUnknownIssuer => "upstream-unknown-issuer",
            Self::UpstreamHostnameMismatch => "upstream-hostname-mismatch",
            Self::UpstreamCertificateExpired => "upstream-certificate-expired",
            Self::UpstreamCertificateNotYetValid => "upstream-certificate-not-yet-valid",
            Self::UpstreamCertificateRevoked => "upstream-certificate-revoked",
            Self::UpstreamRevocationUnknown => "upstream-revocation-unknown",
            Self::UpstreamPinMismatch => "upstream-pin-mismatch",
            Self::UpstreamCertificateInvalid => "upstream-certificate-invalid",
            Self::ClientCertificateRequired => "client-certificate-required",
            Self::ClientCertificateRefused => "client-certificate-refused",
            Self::TlsAlert => "tls-alert",
            Self::TlsHandshake => "tls-handshake-failed",
            Self::ClientKeyUnavailable => "client-key-unavailable",
            Self::ConnectionRefused => "connection-refused",
            Self::ConnectTimeout => "connect-timeout",
            Self::ConnectFailed => "connect-failed",
            Self::ConnectionLost => "connection-lost",
            Self::ResponseTimeout => "response-timeout",
            Self::OutboundLimit => "outbound-limit",
            Self::EgressDenied => "egress-denied",
            Self::InvalidRequest => "invalid-request",
            Self::RequestBodyFailed => "request-body-failed",
            Self::Other => "upstream-error",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who was being called, and with what: the words a failure message needs.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The upstream's `host:port`.
    pub authority: &'a Authority,
    /// The client certificate presented, `None` for none.
    pub certificate: Option<&'a str>,
}

/// A failed outbound request: the reason and a plain message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFailure {
    reason: FailureReason,
    message: String,
    /// The TLS alert, when the upstream sent one (the `wasi:http` code carries it).
    alert: Option<u8>,
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpstreamFailure {}

impl UpstreamFailure {
    /// A failure with `reason` and `message`.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), alert: None }
    }

    /// The machine-readable reason.
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// What failed and what to do, in plain words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response head did not arrive within `limit`.
    pub fn response_timeout(attempt: &Attempt<'_>, limit: Duration) -> Self {
        Self::new(FailureReason::ResponseTimeout, format!("{} sent no response within {} s", attempt.authority, limit.as_secs_f64()))
    }

    /// The closest `wasi:http` error code, for guests that only see that.
    pub fn error_code(&self) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as Code, TlsAlertReceivedPayload};
        match self.reason {
            FailureReason::UpstreamUnknownIssuer
            | FailureReason::UpstreamHostnameMismatch
            | FailureReason::UpstreamCertificateExpired
            | FailureReason::UpstreamCertificateNotYetValid
            | FailureReason::UpstreamCertificateRevoked
            | FailureReason::UpstreamRevocationUnknown
            | FailureReason::UpstreamPinMismatch
            | FailureReason::UpstreamCertificateInvalid => Code::TlsCertificateError,
            FailureReason::ClientCertificateRequired | FailureReason::ClientCertificateRefused | FailureReason::TlsAlert => {
                Code::TlsAlertReceived(TlsAlertReceivedPayload {
                    alert_id: self.alert,
                    alert_message: self.alert.map(|id| alert_name(AlertDescription::from(id))),
                })
            }
            FailureReason::TlsHandshake => Code::TlsProtocolError,
            FailureReason::ConnectionRefused => Code::ConnectionRefused,
            FailureReason::ConnectTimeout => Code::ConnectionTimeout,
            FailureReason::ConnectFailed => Code::DestinationUnavailable,
            FailureReason::ConnectionLost => Code::ConnectionTerminated,
            FailureReason::ResponseTimeout => Code::HttpResponseTimeout,
            FailureReason::InvalidRequest => Code::HttpRequestUriInvalid,
            FailureReason::EgressDenied => Code::HttpRequestDenied,
            FailureReason::ClientKeyUnavailable
            | FailureReason::OutboundLimit
            | FailureReason::RequestBodyFailed
            | FailureReason::Other => Code::InternalError(Some(self.message.clone())),
        }
    }
}

/// The upstream and this host share no TLS version; `what` says how that showed.
pub(super) fn no_shared_version(authority: &Authority, what: &str) -> UpstreamFailure {
    UpstreamFailure::new(
        FailureReason::TlsAlert,
        format!("{authority} {what}; those are set by tls_versions in an [[upstreams]] entry for {authority}"),
    )
}

#[cfg(test)]
mod tests {
    use rustls::CertificateError;
    use rustls_pki_types::UnixTime;

    use super::alert::from_alert;
    use super::certificate::from_certificate_error;
    use super::classify::from_tls;
    use super::*;

    fn authority() -> Authority {
        Authority::parse("api.example:443").unwrap()
    }

    #[test]
    fn an_alert_after_a_named_certificate_is_a_refusal_and_without_one_a_requirement() {
        let refused = from_alert(AlertDescription::UnknownCA, &Attempt { authority: &authority(), certificate: Some("billing") });
        assert_eq!(refused.reason(), FailureReason::ClientCertificateRefused);
        assert!(refused.message().contains("'billing'") && refused.message().contains("unknown_ca"), "{refused}");
        let authority = authority();
        let anonymous = Attempt { authority: &authority, certificate: None };
        let required = from_alert(AlertDescription::CertificateRequired, &anonymous);
        assert_eq!(required.reason(), FailureReason::ClientCertificateRequired);
        match required.error_code() {
            wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::TlsAlertReceived(alert) => {
                assert_eq!(alert.alert_id, Some(116));
                assert_eq!(alert.alert_message.as_deref(), Some("certificate_required"));
            }
            _ => panic!("expected a TLS alert code"),
        }
    }

    #[test]
    fn no_shared_tls_version_names_tls_versions_whichever_side_found_it() {
        let authority = authority();
        let attempt = Attempt { authority: &authority, certificate: Some("billing") };
        let by_alert = from_alert(AlertDescription::ProtocolVersion, &attempt);
        let by_us = from_tls(&rustls::Error::PeerIncompatible(rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig), &attempt);
        for failure in [by_alert, by_us] {
            assert_eq!(failure.reason(), FailureReason::TlsAlert);
            let message = failure.message();
            assert!(message.contains("tls_versions in an [[upstreams]] entry for api.example:443"), "{message}");
            assert!(!message.contains("PeerIncompatible") && !message.contains("Disabled"), "no Debug text: {message}");
        }
    }

    #[test]
    fn a_connect_failure_is_worded_without_the_client_library_framing() {
        /// A client library's outer layer, as hyper-util's "client error (Connect)".
        #[derive(Debug)]
        struct Framing(std::io::Error);
        impl std::fmt::Display for Framing {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Framing {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let unreachable = Framing(std::io::Error::from_raw_os_error(113)); // EHOSTUNREACH
        let failure = classify(&unreachable, &Attempt { authority: &authority(), certificate: Some("billing") });
        let message = failure.message();
        assert_eq!(message, "the request to api.example:443 failed: the host cannot be reached from this machine");
    }

    #[test]
    fn expiry_dates_are_rfc3339() {
        let failure = from_certificate_error(
            &CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            },
            &Attempt { authority: &authority(), certificate: Some("billing") },
        );
        assert!(failure.message().contains("2023-11-14T22:13:20Z"), "{failure}");
    }
}
