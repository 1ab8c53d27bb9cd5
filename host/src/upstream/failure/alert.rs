//! A TLS alert the upstream sent: a refused or missing client certificate, or no agreement,
//! and the alert's registry name.

use rustls::AlertDescription;

use super::{Attempt, FailureReason, UpstreamFailure, no_shared_version};

pub(super) fn from_alert(alert: AlertDescription, attempt: &Attempt<'_>) -> UpstreamFailure {
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
pub(super) fn alert_name(alert: AlertDescription) -> String {
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
