//! Whether a certificate has been revoked, asked of its issuer: the CRLs that the
//! certificate's distribution points name, fetched over HTTP and checked by the same webpki
//! verification as `pki verify` (so the CRL must be signed by the certificate's issuer and
//! current).
//!
//! `cert status` and `cert show` use it for the store's own client certificates, so an
//! operator learns of a revocation before an upstream refuses the certificate.

mod fetch;

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use fetch::FetchError;

use crate::pki::{Purpose, VerifyProblem, VerifyTrust};

/// What the issuer says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RevocationStatus {
    /// Its issuer's current CRL does not list it.
    Good {
        /// The CRL's URL.
        source: String,
    },
    /// Its issuer's CRL lists it.
    Revoked {
        /// The CRL's URL.
        source: String,
        /// What the CRL says, in plain words (with the date).
        detail: String,
    },
    /// The certificate names no HTTP CRL distribution point: there is nothing to ask.
    NotPublished,
    /// The question could not be answered.
    Unknown {
        /// Why, in plain words.
        detail: String,
    },
}

impl RevocationStatus {
    /// One word for tables: good, REVOKED, none, unknown.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Good { .. } => "good",
            Self::Revoked { .. } => "REVOKED",
            Self::NotPublished => "none",
            Self::Unknown { .. } => "unknown",
        }
    }

    /// The full sentence, when there is more to say than the word.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Good { source } => Some(format!("not on its issuer's CRL ({source})")),
            Self::Revoked { detail, .. } | Self::Unknown { detail } => Some(detail.clone()),
            Self::NotPublished => None,
        }
    }
}

/// The HTTP CRL distribution points a certificate names, in its order.
pub fn crl_urls(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else { return Vec::new() };
    let mut urls = Vec::new();
    for extension in parsed.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = extension.parsed_extension() else { continue };
        for point in points.iter() {
            let Some(DistributionPointName::FullName(names)) = &point.distribution_point else { continue };
            for name in names {
                if let GeneralName::URI(uri) = name
                    && uri.to_ascii_lowercase().starts_with("http://")
                {
                    urls.push(uri.to_string());
                }
            }
        }
    }
    urls
}

/// Asks the CRLs of `chain[0]`'s distribution points, verifying each against the issuer in
/// `chain` (the chain as stored: leaf first, then its issuers). `timeout` bounds each fetch.
pub async fn check_crl(chain: &[CertificateDer<'static>], now: UnixTime, timeout: Duration) -> RevocationStatus {
    let Some((leaf, issuers)) = chain.split_first() else {
        return RevocationStatus::Unknown { detail: "there is no certificate to check".into() };
    };
    let urls = crl_urls(leaf);
    if urls.is_empty() {
        return RevocationStatus::NotPublished;
    }
    // The top of the stored chain stands in for the trust anchor: the question here is what
    // the issuer says, not whether some CA is trusted (the upstream decides that).
    let Some((anchor, intermediates)) = issuers.split_last() else {
        return RevocationStatus::Unknown {
            detail: "its issuer's certificate is not stored with it, so its CRL cannot be checked (import the chain)".into(),
        };
    };
    let mut failures = Vec::new();
    for url in &urls {
        let crls = match fetch::crls(url, timeout).await {
            Ok(crls) => crls,
            Err(error) => {
                failures.push(format!("{url}: {error}"));
                continue;
            }
        };
        let trust = VerifyTrust {
            cas: vec![anchor.clone()],
            intermediates: intermediates.to_vec(),
            crls: crls.into_iter().map(|crl| (url.clone(), crl)).collect(),
        };
        return match crate::pki::verify(leaf, &[], &trust, Purpose::Any, now) {
            Ok(()) => RevocationStatus::Good { source: url.clone() },
            Err(problem @ VerifyProblem::Revoked { .. }) => {
                RevocationStatus::Revoked { source: url.clone(), detail: problem.to_string() }
            }
            Err(VerifyProblem::RevocationUnknown) => {
                RevocationStatus::Unknown { detail: format!("the CRL at {url} is not from its issuer") }
            }
            Err(VerifyProblem::CrlExpired) => {
                RevocationStatus::Unknown { detail: format!("the CRL at {url} is out of date (its nextUpdate has passed)") }
            }
            Err(problem) => RevocationStatus::Unknown { detail: format!("its revocation cannot be checked: {problem}") },
        };
    }
    RevocationStatus::Unknown { detail: format!("no CRL could be fetched: {}", failures.join("; ")) }
}
