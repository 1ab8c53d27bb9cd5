//! The limits a client certificate chain must keep to be presentable: a chain a TLS peer
//! cannot take fails every request (`connection-lost`), so it is refused at import, and a
//! stored record that breaks them (imported before they existed) is not served.

use std::collections::HashMap;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The most certificates a chain may hold, leaf included: Java's default
/// (`jdk.tls.maxCertificateChainLength`); webpki builds paths of at most 6 intermediates.
pub const MAX_CHAIN_LENGTH: usize = 10;

/// The most bytes a chain's certificates may take together. TLS sends them in one handshake
/// message, which rustls peers cap at 64 KiB; 4 KiB is left for that message's framing.
pub const MAX_CHAIN_BYTES: usize = 60 * 1024;

/// Why a chain is not presentable. Its words follow "holds": "'chain.pem' holds a chain of
/// 1551 certificates, ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainProblem {
    /// More than [`MAX_CHAIN_LENGTH`] certificates.
    #[error(
        "a chain of {length} certificates, more than the {MAX_CHAIN_LENGTH} accepted (the leaf and its intermediates; TLS peers give up on longer paths)"
    )]
    TooLong {
        /// How many certificates it holds.
        length: usize,
    },
    /// More than [`MAX_CHAIN_BYTES`] bytes.
    #[error(
        "a chain of {bytes} bytes, more than the {MAX_CHAIN_BYTES} accepted (TLS sends it in one handshake message, which peers cap at 64 KiB)"
    )]
    TooLarge {
        /// The size of its certificates together, DER.
        bytes: usize,
    },
    /// One certificate more than once.
    #[error("the certificate '{subject}' {count} times (a chain lists each certificate once)")]
    Duplicate {
        /// The repeated certificate's subject.
        subject: String,
        /// How often it appears.
        count: usize,
    },
}

/// The first limit `chain` breaks, if any: its length, its size, then a repeated certificate.
pub fn chain_problem(chain: &[CertificateDer<'_>]) -> Option<ChainProblem> {
    if chain.len() > MAX_CHAIN_LENGTH {
        return Some(ChainProblem::TooLong { length: chain.len() });
    }
    let bytes: usize = chain.iter().map(|cert| cert.len()).sum();
    if bytes > MAX_CHAIN_BYTES {
        return Some(ChainProblem::TooLarge { bytes });
    }
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for cert in chain {
        *counts.entry(cert.as_ref()).or_default() += 1;
    }
    // In chain order, so the report does not depend on hashing.
    let repeated = chain.iter().find(|cert| counts.get(cert.as_ref()).is_some_and(|count| *count > 1))?;
    let subject =
        X509Certificate::from_der(repeated).map(|(_, parsed)| parsed.subject().to_string()).unwrap_or_else(|_| "(unparseable)".into());
    Some(ChainProblem::Duplicate { subject, count: counts[repeated.as_ref()] })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;
    use crate::pki::{DevCa, IssueOptions};

    fn leaf_and_ca() -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let ca = DevCa::generate("chain test ca", 30)?;
        let (chain_pem, _) = ca.issue(&IssueOptions { common_name: "client".into(), days: 30, ..Default::default() })?;
        Ok(crate::pki::pem::certificates(chain_pem.as_bytes())?)
    }

    #[test]
    fn a_leaf_and_its_ca_pass() -> anyhow::Result<()> {
        let chain = leaf_and_ca()?;
        assert_eq!(chain.len(), 2);
        assert_eq!(chain_problem(&chain), None);
        Ok(())
    }

    #[test]
    fn a_long_chain_a_large_one_and_a_repeated_certificate_are_named() -> anyhow::Result<()> {
        let chain = leaf_and_ca()?;
        let (leaf, ca) = (chain[0].clone(), chain[1].clone());

        let mut bloated = vec![leaf.clone()];
        bloated.extend(std::iter::repeat_n(ca.clone(), 1550));
        let problem = chain_problem(&bloated).unwrap();
        assert_eq!(problem, ChainProblem::TooLong { length: 1551 });
        assert!(problem.to_string().contains("more than the 10 accepted"), "{problem}");

        let repeated = vec![leaf.clone(), ca.clone(), ca.clone()];
        let problem = chain_problem(&repeated).unwrap();
        assert!(matches!(&problem, ChainProblem::Duplicate { subject, count: 2 } if subject.contains("chain test ca")), "{problem:?}");

        let huge = CertificateDer::from(vec![0u8; MAX_CHAIN_BYTES]);
        assert_eq!(chain_problem(&[leaf, huge]), Some(ChainProblem::TooLarge { bytes: MAX_CHAIN_BYTES + chain[0].len() }));
        Ok(())
    }
}
