//! Why an outbound request failed, in words an operator can act on.
//!
//! Every failure gets a stable [`FailureReason`] (the problem `type` a guest answers with,
//! the audit line's `reason`, the metrics `outcome`) and a message that says what failed and
//! what to do. The `wasi:http` error code a guest sees is derived from the same value, so
//! the three never disagree.

use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

use crate::pki::CertificateFault;
use rustls_pki_types::UnixTime;

use super::Authority;
use super::trust::{HostnameMismatch, PinMismatch};

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
            Self::ConnectionRefused => "connection-refused",
            Self::ConnectTimeout => "connect-timeout",
            Self::ConnectFailed => "connect-failed",
            Self::ConnectionLost => "connection-lost",
            Self::ResponseTimeout => "response-timeout",
            Self::OutboundLimit => "outbound-limit",
            Self::EgressDenied => "egress-denied",
            Self::InvalidRequest => "invalid-request",
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
    pub fn error_code(&self) -> wasmtime_wasi_http::Error {
        use wasmtime_wasi_http::Error as Code;
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
                Code::TlsAlertReceived { alert_id: self.alert, alert_message: self.alert.map(|id| alert_name(AlertDescription::from(id))) }
            }
            FailureReason::TlsHandshake => Code::TlsProtocolError,
            FailureReason::ConnectionRefused => Code::ConnectionRefused,
            FailureReason::ConnectTimeout => Code::ConnectionTimeout,
            FailureReason::ConnectFailed => Code::DestinationUnavailable,
            FailureReason::ConnectionLost => Code::ConnectionTerminated,
            FailureReason::ResponseTimeout => Code::HttpResponseTimeout,
            FailureReason::InvalidRequest => Code::HttpRequestUriInvalid,
            FailureReason::EgressDenied => Code::HttpRequestDenied,
            FailureReason::OutboundLimit | FailureReason::Other => Code::InternalError(Some(self.message.clone())),
        }
    }
}

/// Classifies `error` (a client, I/O or TLS error and its causes) for `attempt`.
pub fn classify(error: &(dyn std::error::Error + 'static), attempt: &Attempt<'_>) -> UpstreamFailure {
    let mut connecting = false;
    for current in crate::error_chain::causes(error) {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return from_tls(tls, attempt);
        }
        if let Some(client) = current.downcast_ref::<hyper_util::client::legacy::Error>() {
            connecting |= client.is_connect();
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return from_tls(tls, attempt);
            }
            if let Some(refusal) = io.get_ref().and_then(|inner| inner.downcast_ref::<crate::revocation::RevocationRefusal>()) {
                let reason = match refusal.revoked {
                    true => FailureReason::UpstreamCertificateRevoked,
                    false => FailureReason::UpstreamRevocationUnknown,
                };
                return UpstreamFailure::new(reason, refusal.detail.clone());
            }
            if let Some(forbidden) = io.get_ref().and_then(|inner| inner.downcast_ref::<super::ForbiddenPeer>()) {
                return UpstreamFailure::new(
                    FailureReason::EgressDenied,
                    format!("{} is {}, which {}; handlers may never call it", attempt.authority, forbidden.peer, forbidden.why),
                );
            }
            use std::io::ErrorKind;
            let authority = attempt.authority;
            match io.kind() {
                ErrorKind::ConnectionRefused => {
                    return UpstreamFailure::new(
                        FailureReason::ConnectionRefused,
                        format!("{authority} refused the connection: nothing accepts connections on that port"),
                    );
                }
                ErrorKind::TimedOut => {
                    return UpstreamFailure::new(
                        FailureReason::ConnectTimeout,
                        format!("connecting to {authority} timed out: check the address and any firewall between"),
                    );
                }
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
                    return UpstreamFailure::new(
                        FailureReason::ConnectionLost,
                        format!("{authority} closed the connection before it answered"),
                    );
                }
                _ => {}
            }
        }
    }
    let cause = crate::error_chain::plain_cause(error);
    if connecting {
        return UpstreamFailure::new(FailureReason::ConnectFailed, format!("cannot connect to {}: {cause}", attempt.authority));
    }
    UpstreamFailure::new(FailureReason::Other, format!("the request to {} failed: {cause}", attempt.authority))
}

fn from_tls(error: &rustls::Error, attempt: &Attempt<'_>) -> UpstreamFailure {
    let authority = attempt.authority;
    match error {
        rustls::Error::InvalidCertificate(certificate) => from_certificate_error(certificate, attempt),
        rustls::Error::AlertReceived(alert) => from_alert(*alert, attempt),
        rustls::Error::NoCertificatesPresented => {
            UpstreamFailure::new(FailureReason::UpstreamCertificateInvalid, format!("{authority} presented no certificate"))
        }
        // A server from before TLS 1.3 answers a 1.3-only hello with TLS 1.2 rather than
        // an alert: the refusal is ours.
        rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig | rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13,
        ) => no_shared_version(authority, "answered with a TLS version this host does not offer it"),
        // A client key in a PKCS#11 token that could not sign: the token's words, not rustls'.
        rustls::Error::Other(other) if let Some(token) = other.0.downcast_ref::<crate::pkcs11::TokenError>() => UpstreamFailure::new(
            FailureReason::TlsHandshake,
            format!("the TLS handshake with {authority} failed: the client certificate's key could not sign: {token}"),
        ),
        other => UpstreamFailure::new(FailureReason::TlsHandshake, format!("the TLS handshake with {authority} failed: {other}")),
    }
}

/// The upstream and this host share no TLS version; `what` says how that showed.
fn no_shared_version(authority: &Authority, what: &str) -> UpstreamFailure {
    UpstreamFailure::new(
        FailureReason::TlsAlert,
        format!("{authority} {what}; those are set by tls_versions in an [[upstreams]] entry for {authority}"),
    )
}

fn from_certificate_error(error: &CertificateError, attempt: &Attempt<'_>) -> UpstreamFailure {
    use FailureReason as R;
    let authority = attempt.authority;
    // Our own verifier's refusals (`upstream/trust.rs`) come back as `Other`.
    if let CertificateError::Other(other) = error {
        if let Some(mismatch) = other.0.downcast_ref::<HostnameMismatch>() {
            return UpstreamFailure::new(
                R::UpstreamHostnameMismatch,
                format!(
                    "{authority} presented a certificate for {}, not '{}'; call it by one of those names, \
                     or have it present a certificate for '{}'",
                    mismatch.names_text(),
                    mismatch.expected,
                    mismatch.expected
                ),
            );
        }
        if let Some(pin) = other.0.downcast_ref::<PinMismatch>() {
            return UpstreamFailure::new(
                R::UpstreamPinMismatch,
                format!(
                    "{authority}'s public key ({}) matches no pin_spki_sha256 entry of its [[upstreams]] entry; \
                     if the upstream rotated its key on purpose, add the new pin",
                    pin.actual
                ),
            );
        }
    }
    let (reason, message) = match CertificateFault::of(error) {
        CertificateFault::UnknownIssuer => (
            R::UpstreamUnknownIssuer,
            format!(
                "{authority} presented a certificate signed by a CA this host does not trust; \
                 add that CA to ca_bundle in an [[upstreams]] entry for {authority}"
            ),
        ),
        CertificateFault::Expired(None) => {
            (R::UpstreamCertificateExpired, format!("{authority} presented an expired certificate; it must renew it"))
        }
        CertificateFault::Expired(Some(not_after)) => (
            R::UpstreamCertificateExpired,
            format!("{authority} presented a certificate that expired at {}; it must renew it", rfc3339(not_after)),
        ),
        CertificateFault::NotYetValid(None) => (
            R::UpstreamCertificateNotYetValid,
            format!("{authority} presented a certificate that is not valid yet; check both machines' clocks"),
        ),
        CertificateFault::NotYetValid(Some(not_before)) => (
            R::UpstreamCertificateNotYetValid,
            format!("{authority} presented a certificate that is not valid before {}; check both machines' clocks", rfc3339(not_before)),
        ),
        CertificateFault::Revoked => (
            R::UpstreamCertificateRevoked,
            format!("{authority} presented a revoked certificate: a crl in its [[upstreams]] entry lists it"),
        ),
        CertificateFault::RevocationUnknown => (
            R::UpstreamRevocationUnknown,
            format!(
                "cannot tell whether {authority}'s certificate is revoked: no configured crl was issued by its CA; \
                 add that CA's CRL to the [[upstreams]] entry"
            ),
        ),
        CertificateFault::CrlExpired => {
            (R::UpstreamRevocationUnknown, format!("the CRL configured for {authority} is past its next update; fetch a current one"))
        }
        CertificateFault::WrongName => (R::UpstreamHostnameMismatch, format!("{authority} presented a certificate for other names")),
        CertificateFault::BadSignature => {
            (R::UpstreamCertificateInvalid, format!("{authority} presented a certificate whose signature does not verify"))
        }
        CertificateFault::Malformed => (R::UpstreamCertificateInvalid, format!("{authority} presented a malformed certificate")),
        CertificateFault::WrongPurpose => (
            R::UpstreamCertificateInvalid,
            format!("{authority} presented a certificate that is not for TLS servers (no serverAuth extended key usage)"),
        ),
        CertificateFault::CriticalExtension => (
            R::UpstreamCertificateInvalid,
            format!("{authority} presented a certificate with a critical extension this host does not understand"),
        ),
        CertificateFault::Version1 => (
            R::UpstreamCertificateInvalid,
            format!(
                "{authority} presented a certificate that cannot be used: {}",
                crate::pki::version1::explanation(crate::pki::version1::Role::Server)
            ),
        ),
        CertificateFault::UnsupportedAlgorithm | CertificateFault::Chain(_) | CertificateFault::Other => {
            (R::UpstreamCertificateInvalid, format!("{authority} presented a certificate that cannot be used: {error}"))
        }
    };
    UpstreamFailure::new(reason, message)
}

fn from_alert(alert: AlertDescription, attempt: &Attempt<'_>) -> UpstreamFailure {
    let authority = attempt.authority;
    let name = alert_name(alert);
    let refusals = [
        AlertDescription::BadCertificate,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::CertificateRevoked,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateUnknown,
        AlertDescription::UnknownCA,
        AlertDescription::AccessDenied,
        AlertDescription::DecryptError,
        AlertDescription::CertificateRequired,
    ];
    let mut failure = match attempt.certificate {
        // TLS 1.3 servers send certificate_required; TLS 1.2 ones handshake_failure or bad_certificate.
        None if refusals.contains(&alert) || alert == AlertDescription::HandshakeFailure => UpstreamFailure::new(
            FailureReason::ClientCertificateRequired,
            format!(
                "{authority} requires a client certificate and this request presented none (TLS alert {name}); \
                 name a certificate for this upstream"
            ),
        ),
        Some(certificate) if refusals.contains(&alert) => {
            let why = match alert {
                AlertDescription::UnknownCA => format!("it does not trust the CA that issued '{certificate}'"),
                AlertDescription::CertificateExpired => format!("it considers '{certificate}' expired"),
                AlertDescription::CertificateRevoked => format!("it lists '{certificate}' as revoked"),
                AlertDescription::AccessDenied => format!("it does not allow the identity in '{certificate}'"),
                _ => format!("check that it trusts the CA that issued '{certificate}'"),
            };
            UpstreamFailure::new(
                FailureReason::ClientCertificateRefused,
                format!("{authority} refused client certificate '{certificate}' (TLS alert {name}): {why}"),
            )
        }
        // With a certificate presented, handshake_failure says no more than "we could not
        // agree": a key type, a cipher suite or a version.
        Some(certificate) if alert == AlertDescription::HandshakeFailure => UpstreamFailure::new(
            FailureReason::TlsAlert,
            format!(
                "{authority} ended the TLS handshake with alert handshake_failure: it may not accept the key type of \
                 '{certificate}', or shares no TLS version or cipher suite with this host"
            ),
        ),
        _ if alert == AlertDescription::ProtocolVersion => no_shared_version(
            authority,
            "ended the TLS handshake with alert protocol_version: it speaks none of the TLS versions this host offers it",
        ),
        _ => UpstreamFailure::new(FailureReason::TlsAlert, format!("{authority} ended the TLS handshake with alert {name}")),
    };
    failure.alert = Some(u8::from(alert));
    failure
}

/// The alert's name as the TLS registry spells it (`certificate_required`).
fn alert_name(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let name = match alert {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::RecordOverflow => "record_overflow",
        A::HandshakeFailure => "handshake_failure",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        other => return format!("number {}", u8::from(other)),
    };
    name.to_string()
}

fn rfc3339(time: UnixTime) -> String {
    crate::pki::rfc3339_unix(time.as_secs())
}

#[cfg(test)]
mod tests {
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
            wasmtime_wasi_http::Error::TlsAlertReceived { alert_id, alert_message } => {
                assert_eq!(alert_id, Some(116));
                assert_eq!(alert_message.as_deref(), Some("certificate_required"));
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
