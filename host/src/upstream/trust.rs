//! Which servers an outbound request trusts: the public web roots plus configured CA bundles,
//! chosen by the upstream's authority. Hostname verification is always on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;

use crate::config::UpstreamTrust;

/// Why the upstream trust settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A CA bundle could not be read or holds no usable certificate.
    #[error("CA bundle '{path}': {reason}", path = path.display())]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused to build a verifier.
    #[error("cannot build the verifier for upstream hosts {hosts}: {reason}")]
    Verifier {
        /// The hosts of the entry.
        hosts: String,
        /// rustls' reason.
        reason: String,
    },
}

/// Trust profiles: profile 0 trusts the public web roots; each `[[upstreams]]` entry adds one
/// that also trusts its CA bundle, for its hosts.
pub struct TrustProfiles {
    provider: Arc<CryptoProvider>,
    verifiers: Vec<Arc<WebPkiServerVerifier>>,
    by_authority: HashMap<String, usize>,
}

impl std::fmt::Debug for TrustProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustProfiles").field("profiles", &self.verifiers.len()).finish_non_exhaustive()
    }
}

impl TrustProfiles {
    /// Builds the profiles for the `[[upstreams]]` entries of a config.
    pub fn new(upstreams: &[UpstreamTrust]) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut web_roots = RootCertStore::empty();
        web_roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let verifier = |roots: RootCertStore, hosts: &str| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TrustError::Verifier { hosts: hosts.to_string(), reason: e.to_string() })
        };
        let mut verifiers = vec![verifier(web_roots.clone(), "(default)")?];
        let mut by_authority = HashMap::new();
        for entry in upstreams {
            let hosts = entry.hosts.join(", ");
            let mut roots = web_roots.clone();
            if let Some(path) = &entry.ca_bundle {
                let bytes = std::fs::read(path)
                    .map_err(|e| TrustError::CaBundle { path: path.clone(), reason: e.to_string() })?;
                let sections = pem::parse_many(&bytes)
                    .map_err(|e| TrustError::CaBundle { path: path.clone(), reason: format!("invalid PEM: {e}") })?;
                let certs: Vec<_> = sections
                    .into_iter()
                    .filter(|p| p.tag() == "CERTIFICATE")
                    .map(|p| rustls_pki_types::CertificateDer::from(p.into_contents()))
                    .collect();
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TrustError::CaBundle { path: path.clone(), reason: "no usable CA certificate".into() });
                }
            }
            let index = verifiers.len();
            verifiers.push(verifier(roots, &hosts)?);
            for host in &entry.hosts {
                by_authority.insert(host.clone(), index);
            }
        }
        Ok(Self { provider, verifiers, by_authority })
    }

    /// The number of profiles.
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    /// Always false: the default profile exists.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// The profile for a normalized `host:port` authority.
    pub fn profile_for(&self, authority: &str) -> usize {
        self.by_authority.get(authority).copied().unwrap_or(0)
    }

    pub(crate) fn verifier(&self, profile: usize) -> Arc<WebPkiServerVerifier> {
        self.verifiers[profile.min(self.verifiers.len() - 1)].clone()
    }

    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }
}
