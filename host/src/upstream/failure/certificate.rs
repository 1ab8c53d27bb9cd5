//! A certificate the upstream presented and this host refused: its reason and what to do.

use rustls::CertificateError;
use rustls_pki_types::UnixTime;

use super::{Attempt, FailureReason, UpstreamFailure};
use crate::pki::CertificateFault;
use crate::upstream::trust::{HostnameMismatch, PinMismatch};

pub(super) fn from_certificate_error(error: &CertificateError, attempt: &Attempt<'_>) -> UpstreamFailure {
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
fn rfc3339(time: UnixTime) -> String {
    crate::pki::rfc3339_unix(time.as_secs())
}
