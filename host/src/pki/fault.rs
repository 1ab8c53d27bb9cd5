//! What is wrong with a certificate, read once from the verifier's error.
//!
//! rustls reports a refused certificate as one of many `CertificateError` variants (most
//! with a `…Context` twin that carries dates or names, and a version 1 certificate hidden in
//! `Other`); webpki, which `cert verify` runs directly, has its own `Error` with the chain's
//! details that rustls folds into `Other`. Upstream failures, callers' certificates, the
//! PostgreSQL store and `cert verify` each tell their reader about it in their own terms
//! (whose certificate, what to change); they all start from this one reading, so a variant
//! either library adds is handled here once.

use rustls::CertificateError;
use rustls_pki_types::UnixTime;

/// A refused certificate's problem, as the messages about it tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFault {
    /// No chain leads to a trusted CA.
    UnknownIssuer,
    /// Past its notAfter (when rustls says).
    Expired(Option<UnixTime>),
    /// Before its notBefore (when rustls says).
    NotYetValid(Option<UnixTime>),
    /// A CRL lists it.
    Revoked,
    /// No CRL from its issuer says whether it is revoked.
    RevocationUnknown,
    /// The CRL for its issuer is past its nextUpdate.
    CrlExpired,
    /// It is for other names than the one asked for.
    WrongName,
    /// A signature in its chain does not verify.
    BadSignature,
    /// It is not well-formed DER.
    Malformed,
    /// Its extended key usage does not allow this use.
    WrongPurpose,
    /// It is signed with an algorithm this host does not support.
    UnsupportedAlgorithm,
    /// It has a critical extension this host does not understand.
    CriticalExtension,
    /// It is X.509 version 1 (or 2), which webpki does not verify.
    Version1,
    /// Its chain is built wrongly (only webpki's own error tells which way).
    Chain(ChainFault),
    /// Anything else: the reader gets the library's own words.
    Other,
}

/// How a chain is built wrongly, as webpki tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// A CA certificate is presented as the end entity.
    CaAsEndEntity,
    /// A certificate that is not a CA is used as an issuer.
    EndEntityAsCa,
    /// The chain is longer than an issuer's path length allows.
    PathTooLong,
    /// It violates an issuer's name constraints.
    NameConstraints,
    /// A CRL's issuer may not sign CRLs.
    CrlIssuerCannotSign,
    /// The chain leads to a distrusted CA.
    Distrusted,
}

impl CertificateFault {
    /// Reads rustls' `error`.
    pub fn of(error: &CertificateError) -> Self {
        use CertificateError as C;
        match error {
            C::UnknownIssuer => Self::UnknownIssuer,
            C::Expired => Self::Expired(None),
            C::ExpiredContext { not_after, .. } => Self::Expired(Some(*not_after)),
            C::NotValidYet => Self::NotYetValid(None),
            C::NotValidYetContext { not_before, .. } => Self::NotYetValid(Some(*not_before)),
            C::Revoked => Self::Revoked,
            C::UnknownRevocationStatus => Self::RevocationUnknown,
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => Self::CrlExpired,
            C::NotValidForName | C::NotValidForNameContext { .. } => Self::WrongName,
            C::BadSignature => Self::BadSignature,
            C::BadEncoding => Self::Malformed,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => Self::WrongPurpose,
            C::UnsupportedSignatureAlgorithmContext { .. } | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                Self::UnsupportedAlgorithm
            }
            C::UnhandledCriticalExtension => Self::CriticalExtension,
            error if crate::pki::version1::is_version_1_error(error) => Self::Version1,
            _ => Self::Other,
        }
    }

    /// Reads webpki's `error` (from verifying a chain directly, as `cert verify` does).
    pub fn of_webpki(error: &webpki::Error) -> Self {
        use webpki::Error as E;
        match error {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::CertExpired { not_after, .. } => Self::Expired(Some(*not_after)),
            E::CertNotValidYet { not_before, .. } => Self::NotYetValid(Some(*not_before)),
            E::CertRevoked => Self::Revoked,
            E::UnknownRevocationStatus => Self::RevocationUnknown,
            E::CrlExpired { .. } => Self::CrlExpired,
            E::CertNotValidForName(_) => Self::WrongName,
            E::InvalidSignatureForPublicKey | E::InvalidCrlSignatureForPublicKey => Self::BadSignature,
            E::BadDer | E::BadDerTime | E::TrailingData(_) | E::MalformedExtensions | E::ExtensionValueInvalid => Self::Malformed,
            E::RequiredEkuNotFoundContext(_) => Self::WrongPurpose,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | E::UnsupportedCrlSignatureAlgorithmContext(_) => Self::UnsupportedAlgorithm,
            E::UnsupportedCriticalExtension => Self::CriticalExtension,
            E::UnsupportedCertVersion => Self::Version1,
            E::CaUsedAsEndEntity => Self::Chain(ChainFault::CaAsEndEntity),
            E::EndEntityUsedAsCa => Self::Chain(ChainFault::EndEntityAsCa),
            E::PathLenConstraintViolated => Self::Chain(ChainFault::PathTooLong),
            E::NameConstraintViolation => Self::Chain(ChainFault::NameConstraints),
            E::IssuerNotCrlSigner => Self::Chain(ChainFault::CrlIssuerCannotSign),
            E::CertDistrusted => Self::Chain(ChainFault::Distrusted),
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_variants_read_as_their_plain_twins_and_keep_their_dates() {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000));
        let expired = CertificateError::ExpiredContext { time: at, not_after: at };
        assert_eq!(CertificateFault::of(&expired), CertificateFault::Expired(Some(at)));
        assert_eq!(CertificateFault::of(&CertificateError::Expired), CertificateFault::Expired(None));
        assert_eq!(CertificateFault::of(&CertificateError::NotValidForName), CertificateFault::WrongName);
        let version1 = CertificateError::Other(rustls::OtherError(std::sync::Arc::new(webpki::Error::UnsupportedCertVersion)));
        assert_eq!(CertificateFault::of(&version1), CertificateFault::Version1);
    }

    #[test]
    fn webpki_errors_read_as_the_same_faults_with_the_chain_details_rustls_leaves_out() {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000));
        let expired = webpki::Error::CertExpired { time: at, not_after: at };
        assert_eq!(CertificateFault::of_webpki(&expired), CertificateFault::Expired(Some(at)));
        assert_eq!(CertificateFault::of_webpki(&webpki::Error::UnsupportedCertVersion), CertificateFault::Version1);
        assert_eq!(CertificateFault::of_webpki(&webpki::Error::CaUsedAsEndEntity), CertificateFault::Chain(ChainFault::CaAsEndEntity));
    }
}
