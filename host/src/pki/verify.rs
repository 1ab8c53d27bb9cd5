//! Checking a certificate against a CA, as `openssl verify -CAfile` does, with the reason in
//! plain words: what `edgemtls pki verify` prints.
//!
//! The chain is built and checked by webpki, the verifier rustls uses on every connection,
//! so a certificate that passes here passes the TLS handshake too (for the same CA and CRLs).

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use webpki::{ExpirationPolicy, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The signature algorithms rustls verifies handshakes with (ring's), for checks made
/// outside a handshake: certificate chains, CRLs, OCSP responses.
pub fn signature_algorithms() -> &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm] {
    static ALGORITHMS: std::sync::LazyLock<&'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm]> =
        std::sync::LazyLock::new(|| rustls::crypto::ring::default_provider().signature_verification_algorithms.all);
    *ALGORITHMS
}

/// What a certificate must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// TLS client authentication (`clientAuth`): what the store's certificates are for.
    Client,
    /// TLS server authentication (`serverAuth`).
    Server,
    /// Either of the two.
    Any,
}

impl Purpose {
    /// The role a re-issued certificate is made for (a client one when either will do).
    fn role(self) -> crate::pki::version1::Role {
        match self {
            Self::Server => crate::pki::version1::Role::Server,
            Self::Client | Self::Any => crate::pki::version1::Role::Client,
        }
    }
}

/// The trust to verify against: CA certificates, extra intermediates and CRLs.
#[derive(Debug, Default)]
pub struct VerifyTrust {
    /// Trusted CA certificates (anchors).
    pub cas: Vec<CertificateDer<'static>>,
    /// Untrusted intermediates that may complete a chain.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// CRLs, parsed.
    pub crls: Vec<ParsedCrl>,
}

/// A CRL parsed once (a large one takes long to parse) and shared, with where it came from
/// (a quoted file name or a URL, for the reason text).
#[derive(Clone)]
pub struct ParsedCrl {
    /// Where it came from.
    pub source: String,
    list: std::sync::Arc<webpki::CertRevocationList<'static>>,
}

impl std::fmt::Debug for ParsedCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCrl").field("source", &self.source).finish_non_exhaustive()
    }
}

impl ParsedCrl {
    /// Parses `der`, from `source`.
    pub fn parse(source: &str, der: &CertificateRevocationListDer<'_>) -> Result<Self, String> {
        let owned = webpki::OwnedCertRevocationList::from_der(der).map_err(|_| format!("the CRL from {source} cannot be parsed"))?;
        Ok(Self { source: source.to_string(), list: std::sync::Arc::new(owned.into()) })
    }

    /// When this CRL says `serial` (raw bytes) was revoked, if it lists it.
    fn revocation_date(&self, serial: &[u8]) -> Option<UnixTime> {
        self.list.find_serial(serial).ok().flatten().map(|entry| entry.revocation_date)
    }
}

impl VerifyTrust {
    /// Adds the CA certificates of a file, or of every certificate file in a directory.
    pub fn add_cas(&mut self, path: &Path) -> Result<(), String> {
        self.cas.extend(read_cas(path)?);
        Ok(())
    }

    /// Adds the certificates of a file (any format [`super::load_certificates`] reads) as
    /// untrusted intermediates.
    pub fn add_intermediates(&mut self, path: &Path) -> Result<(), String> {
        let certificates = super::load_certificates(path, None).map_err(|e| e.to_string())?;
        self.intermediates.extend(certificates);
        Ok(())
    }

    /// Adds the CRLs of a file (PEM or DER), each checked as the verifier will read it.
    pub fn add_crls(&mut self, path: &Path) -> Result<(), String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let crls = super::trust_files::read_crls(path, &provider).map_err(|reason| format!("'{}': {reason}", path.display()))?;
        let source = format!("'{}'", path.display());
        for crl in &crls {
            self.crls.push(ParsedCrl::parse(&source, crl)?);
        }
        Ok(())
    }
}

/// Why a certificate does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyProblem {
    /// No chain leads to a given CA.
    #[error("not issued by the given CA (or an intermediate is missing: pass it with --untrusted)")]
    UnknownIssuer,
    /// It (or a certificate of its chain) has expired.
    #[error("expired on {0}")]
    Expired(String),
    /// It (or a certificate of its chain) is not valid yet.
    #[error("not valid until {0}")]
    NotYetValid(String),
    /// Its extended key usage does not allow the purpose.
    #[error("not for {0} (its extended key usage does not allow it)")]
    WrongPurpose(&'static str),
    /// A CRL lists it.
    #[error("revoked{}, per the CRL from {crl}", .when.as_ref().map(|w| format!(" on {w}")).unwrap_or_default())]
    Revoked {
        /// Where the CRL that lists it came from: a quoted file name or a URL.
        crl: String,
        /// The revocation date, RFC 3339.
        when: Option<String>,
    },
    /// CRLs were given but none is from its issuer.
    #[error("its revocation status is unknown: no CRL given is from its issuer")]
    RevocationUnknown,
    /// The issuer's CRL is past its nextUpdate.
    #[error("the CRL from its issuer is out of date (its nextUpdate has passed)")]
    CrlExpired,
    /// It (or a certificate of its chain) is X.509 version 1.
    #[error("{}", crate::pki::version1::explanation(*.0))]
    Version1(crate::pki::version1::Role),
    /// Anything else, in plain words.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Verifies `leaf` (with `chain`, the certificates that came with it, as intermediates)
/// against `trust` at `now`.
pub fn verify(
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'static>],
    trust: &VerifyTrust,
    purpose: Purpose,
    now: UnixTime,
) -> Result<(), VerifyProblem> {
    let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(|error| match error {
        webpki::Error::UnsupportedCertVersion => VerifyProblem::Version1(purpose.role()),
        _ => VerifyProblem::Invalid("not a well-formed X.509 certificate"),
    })?;
    let anchors: Vec<_> = trust.cas.iter().filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok()).collect();
    if anchors.is_empty() {
        return Err(VerifyProblem::Invalid("no usable CA certificate was given"));
    }
    let intermediates: Vec<CertificateDer<'_>> = chain.iter().chain(&trust.intermediates).cloned().collect();
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = trust.crls.iter().map(|crl| &*crl.list).collect();
    // As `openssl verify -crl_check`: the leaf's status must be known once CRLs are given.
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|builder| {
        builder
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build()
    });
    let algorithms = signature_algorithms();
    let check =
        |usage: KeyUsage| end_entity.verify_for_usage(algorithms, &anchors, &intermediates, now, usage, revocation, None).map(|_| ());
    let outcome = match purpose {
        Purpose::Client => check(KeyUsage::client_auth()),
        Purpose::Server => check(KeyUsage::server_auth()),
        Purpose::Any => match check(KeyUsage::client_auth()) {
            Err(webpki::Error::RequiredEkuNotFoundContext(_)) => check(KeyUsage::server_auth()),
            other => other,
        },
    };
    outcome.map_err(|error| problem(error, leaf, trust, purpose))
}

fn problem(error: webpki::Error, leaf: &CertificateDer<'_>, trust: &VerifyTrust, purpose: Purpose) -> VerifyProblem {
    use crate::pki::{CertificateFault as F, ChainFault};
    let time = |t: UnixTime| crate::pki::rfc3339_unix(t.as_secs());
    match F::of_webpki(&error) {
        F::UnknownIssuer => VerifyProblem::UnknownIssuer,
        F::Expired(Some(not_after)) => VerifyProblem::Expired(time(not_after)),
        F::NotYetValid(Some(not_before)) => VerifyProblem::NotYetValid(time(not_before)),
        F::WrongPurpose => VerifyProblem::WrongPurpose(match purpose {
            Purpose::Client => "TLS client authentication",
            Purpose::Server => "TLS server authentication",
            Purpose::Any => "TLS client or server authentication",
        }),
        F::Revoked => revoked(leaf, trust),
        F::RevocationUnknown => VerifyProblem::RevocationUnknown,
        F::CrlExpired => VerifyProblem::CrlExpired,
        F::BadSignature => VerifyProblem::Invalid("a signature in its chain does not verify against the issuer's key"),
        F::UnsupportedAlgorithm => VerifyProblem::Invalid("its chain uses a signature algorithm that TLS here does not support"),
        F::Version1 => VerifyProblem::Version1(purpose.role()),
        F::Chain(ChainFault::CaAsEndEntity) => VerifyProblem::Invalid("it is a CA certificate, not one for a client or server"),
        F::Chain(ChainFault::EndEntityAsCa) => VerifyProblem::Invalid("its chain uses a certificate that is not a CA as an issuer"),
        F::Chain(ChainFault::PathTooLong) => VerifyProblem::Invalid("its chain is longer than an issuer's path length allows"),
        F::Chain(ChainFault::NameConstraints) => VerifyProblem::Invalid("it violates an issuer's name constraints"),
        F::CriticalExtension => VerifyProblem::Invalid("it has a critical extension that is not supported"),
        F::Chain(ChainFault::CrlIssuerCannotSign) => VerifyProblem::Invalid("a CRL's issuer may not sign CRLs (no cRLSign key usage)"),
        F::Chain(ChainFault::Distrusted) => VerifyProblem::Invalid("its chain leads to a distrusted CA"),
        F::Malformed => VerifyProblem::Invalid("a certificate in its chain is malformed"),
        // webpki gives dates with these, and checks no names here.
        F::Expired(None) | F::NotYetValid(None) | F::WrongName | F::Other => VerifyProblem::Invalid("its chain cannot be verified"),
    }
}

/// Which CRL lists the leaf, and since when: webpki only says "revoked".
fn revoked(leaf: &CertificateDer<'_>, trust: &VerifyTrust) -> VerifyProblem {
    let serial = X509Certificate::from_der(leaf).ok().map(|(_, cert)| cert.raw_serial().to_vec()).unwrap_or_default();
    for crl in &trust.crls {
        if let Some(date) = crl.revocation_date(&serial) {
            return VerifyProblem::Revoked { crl: crl.source.clone(), when: Some(crate::pki::rfc3339_unix(date.as_secs())) };
        }
    }
    VerifyProblem::Revoked { crl: trust.crls.first().map(|crl| crl.source.clone()).unwrap_or_default(), when: None }
}

/// Reads the CA certificates of `path`: a file (PEM or DER), or every certificate file in a
/// directory (files that hold no certificate, such as a CA key, are skipped).
fn read_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("'{}': {e}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut cas = Vec::new();
    for file in &files {
        let bytes =
            crate::files::read_regular_file(file, super::import::MAX_FILE_SIZE).map_err(|e| format!("'{}': {e}", file.display()))?;
        // In a directory, files that are not certificates (a CA key, a README) are skipped.
        let readable = |der: &CertificateDer<'_>| X509Certificate::from_der(der).is_ok();
        match super::pem::certificates_pem_or_der(bytes) {
            Ok(certificates) if path.is_dir() => cas.extend(certificates.into_iter().filter(readable)),
            Ok(certificates) if certificates.iter().all(readable) => cas.extend(certificates),
            Ok(_) => return Err(format!("'{}': not an X.509 certificate (PEM or DER)", file.display())),
            Err(error) if !path.is_dir() => return Err(format!("'{}': {error}", file.display())),
            Err(_) => {}
        }
    }
    if cas.is_empty() {
        return Err(format!("'{}' holds no CA certificate", path.display()));
    }
    Ok(cas)
}
