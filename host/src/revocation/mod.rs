//! Whether a certificate has been revoked, asked of its issuer: the CRLs that the
//! certificate's distribution points name, fetched over HTTP and checked by the same webpki
//! verification as `pki verify` (so the CRL must be signed by the certificate's issuer and
//! current), and OCSP (stapled, or the responder the certificate names).
//!
//! Two users: every new upstream connection whose `[[upstreams]]` entry sets `revocation`
//! (`server.rs`), and `cert status` / `cert show` for the store's own client certificates,
//! so an operator learns of a revocation before an upstream refuses the certificate.

mod cache;
mod fetch;
mod ocsp;
mod server;

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{RevocationMode, RevocationPolicy};
pub use fetch::FetchError;
pub(crate) use server::{CALLER_CHECKS, CHECKS};
pub use server::{RevocationRefusal, UpstreamRevocation};

/// Keeps the OCSP response a server stapled to its certificate during the handshake, for the
/// check that follows it (the response is verified when it is read).
pub(crate) fn remember_staple(certificate: &CertificateDer<'_>, response: &[u8]) {
    cache::CACHE.store_staple(certificate, response);
}

/// What the issuer says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RevocationStatus {
    /// Its issuer's current CRL does not list it, or its OCSP responder says it is good.
    Good {
        /// Who said so: the CRL's URL, or the OCSP responder.
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
            // `source` is a CRL's URL, "the OCSP responder URL" or the stapled response.
            Self::Good { source } => Some(format!("not revoked, per {source}")),
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

/// What the issuer of a stored certificate says (`cert status`, `cert show`): OCSP from the
/// responder it names, else the CRLs its distribution points name, each checked against the
/// issuer in `chain` (leaf first, as stored). `timeout` bounds each source.
pub async fn check_stored(chain: &[CertificateDer<'static>], timeout: Duration) -> RevocationStatus {
    // A CRL is fetched once per run, however many records name it (the cache and its
    // single-flight lock are shared).
    let policy = RevocationPolicy { mode: RevocationMode::Both, soft_fail: false, timeout, crl_cache_ttl: Duration::from_secs(60) };
    UpstreamRevocation::for_stored(policy).status(chain).await
}

#[cfg(test)]
mod tests {
    use super::RevocationStatus;

    #[test]
    fn a_good_answer_names_who_gave_it_whether_crl_or_ocsp() {
        let by_ocsp = RevocationStatus::Good { source: "the OCSP responder http://ocsp.example/".into() };
        assert_eq!(by_ocsp.detail().as_deref(), Some("not revoked, per the OCSP responder http://ocsp.example/"));
        let by_crl = RevocationStatus::Good { source: "http://ca.example/ca.crl".into() };
        assert_eq!(by_crl.detail().as_deref(), Some("not revoked, per http://ca.example/ca.crl"));
    }
}
