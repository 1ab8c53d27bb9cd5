//! A client, I/O or TLS error, walked through its causes, to the failure it means.

use super::alert::from_alert;
use super::certificate::from_certificate_error;
use super::{Attempt, FailureReason, UpstreamFailure, no_shared_version};

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
            if let Some(forbidden) = io.get_ref().and_then(|inner| inner.downcast_ref::<crate::upstream::ForbiddenPeer>()) {
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

pub(super) fn from_tls(error: &rustls::Error, attempt: &Attempt<'_>) -> UpstreamFailure {
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
            FailureReason::ClientKeyUnavailable,
            format!("the TLS handshake with {authority} failed: the client certificate's key could not sign: {token}"),
        ),
        other => UpstreamFailure::new(FailureReason::TlsHandshake, format!("the TLS handshake with {authority} failed: {other}")),
    }
}
