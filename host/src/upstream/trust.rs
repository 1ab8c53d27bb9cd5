//! Which servers an outbound request trusts, chosen by the upstream's authority.
//!
//! Profile 0 trusts the public web roots with full verification. Each `[[upstreams]]` entry
//! adds a profile for its hosts: its CA bundle on top of the web roots, optional CRLs and
//! SPKI pins, and the two explicit, logged escape hatches `verify = false` and
//! `check_hostname = false`. Handshake signatures are always checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::Authority;
use crate::config::{TlsVersions, UpstreamTrust};
use crate::revocation::UpstreamRevocation;

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
    /// A CRL file could not be read or parsed.
    #[error("CRL '{path}': {reason}", path = path.display())]
    Crl {
        /// The CRL file.
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

/// The server key did not match any configured pin.
#[derive(Debug, thiserror::Error)]
#[error("the server's public key ({actual}) matches no pin_spki_sha256 entry")]
pub struct PinMismatch {
    /// The server key's pin, base64url as `pin_spki_sha256` takes it.
    pub actual: String,
}

/// The server certificate is not for the name the request used.
#[derive(Debug, thiserror::Error)]
#[error("the certificate is for {}, not '{expected}'", self.names_text())]
pub struct HostnameMismatch {
    /// The name the request used.
    pub expected: String,
    /// The DNS names and IP addresses the certificate is for.
    pub names: Vec<String>,
}

impl HostnameMismatch {
    /// The certificate's names for a sentence: `a.example, 10.0.0.1`, or `no name at all`.
    pub fn names_text(&self) -> String {
        if self.names.is_empty() { "no name at all".into() } else { self.names.join(", ") }
    }
}

/// The DNS names and IP addresses in a certificate's subjectAltName, which is what
/// hostname verification matches (the subject CN is not used).
fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else { return Vec::new() };
    crate::pki::subject_alt_names(&parsed)
        .into_iter()
        .filter_map(|name| name.strip_prefix("DNS:").or_else(|| name.strip_prefix("IP:")).map(str::to_string))
        .collect()
}

/// Trust profiles; see the module docs.
pub struct TrustProfiles {
    provider: Arc<CryptoProvider>,
    /// The default profile first, then one per listed `[[upstreams]]` entry.
    profiles: Vec<Profile>,
    by_authority: HashMap<Authority, usize>,
}

/// What one `[[upstreams]]` entry (or the default) asks of the connections it covers.
struct Profile {
    verifier: Arc<UpstreamVerifier>,
    /// Its revocation checking, if it has any.
    revocation: Option<Arc<UpstreamRevocation>>,
    /// The TLS versions it speaks.
    versions: TlsVersions,
}

impl std::fmt::Debug for TrustProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustProfiles").field("profiles", &self.profiles.len()).finish_non_exhaustive()
    }
}

/// The crypto of every upstream connection: rustls' defaults, with TLS 1.3's AES-128-GCM
/// (SHA-256) offered before AES-256-GCM (SHA-384), in the order BoringSSL, Go and browsers
/// offer them. Both stay offered and the server chooses; servers that follow the client's
/// order (rustls', OpenSSL's by default) pick AES-128, whose SHA-256 key schedule runs on the
/// CPU's SHA extensions where SHA-384 has none: the resumed handshakes of a connection per
/// request spent 5.5% of their CPU in SHA-512 blocks.
fn upstream_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: only that one suite moves, to the front.
    provider.cipher_suites.sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

impl TrustProfiles {
    /// Builds the profiles for the `[[upstreams]]` entries of a config.
    pub fn new(upstreams: &[UpstreamTrust]) -> Result<Self, TrustError> {
        let provider = Arc::new(upstream_provider());
        let mut web_roots = RootCertStore::empty();
        web_roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let default = WebPkiServerVerifier::builder_with_provider(Arc::new(web_roots.clone()), provider.clone())
            .build()
            .map_err(|e| TrustError::Verifier { hosts: "(default)".into(), reason: e.to_string() })?;
        let mut profiles =
            vec![Profile { verifier: Arc::new(UpstreamVerifier::strict(default)), revocation: None, versions: TlsVersions::default() }];
        let mut by_authority = HashMap::new();
        for entry in upstreams {
            let hosts = entry.hosts.join(", ");
            let mut roots = web_roots.clone();
            // Read once: the roots take them, and revocation checking looks for issuers in them.
            let mut bundle = Vec::new();
            if let Some(path) = &entry.ca_bundle {
                let bundle_error = |reason| TrustError::CaBundle { path: path.clone(), reason };
                bundle = crate::pki::trust_files::read_ca_bundle(path).map_err(bundle_error)?;
                crate::pki::trust_files::add_ca_certificates(bundle.clone(), &mut roots).map_err(bundle_error)?;
            }
            let mut crls = Vec::new();
            for path in &entry.crl {
                crls.extend(
                    crate::pki::trust_files::read_crls(path, &provider).map_err(|reason| TrustError::Crl { path: path.clone(), reason })?,
                );
            }
            let mut builder = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if !crls.is_empty() {
                builder = builder.with_crls(crls).only_check_end_entity_revocation();
            }
            let inner = builder.build().map_err(|e| TrustError::Verifier { hosts: hosts.clone(), reason: e.to_string() })?;
            let revocation = match entry.revocation.checks() {
                true => Some(Arc::new(UpstreamRevocation::new(entry.revocation, bundle))),
                false => None,
            };
            // Weakened entries are reported once, by whoever loads the config (`serve`,
            // `check`, `cert test`), not again here on every reload.
            // `hosts = ["*"]` replaces the default profile (index 0) for every unlisted host.
            let is_default = entry.hosts.iter().any(|h| h == crate::config::DEFAULT_UPSTREAM);
            let index = if is_default { 0 } else { profiles.len() };
            let verifier = Arc::new(UpstreamVerifier {
                inner,
                verify: entry.verify,
                check_hostname: entry.check_hostname,
                pins: entry.pin_spki_sha256.clone(),
                keep_staples: revocation.is_some(),
            });
            let profile = Profile { verifier, revocation, versions: entry.tls_versions };
            if is_default {
                profiles[0] = profile;
                continue;
            }
            profiles.push(profile);
            // Entries were checked when the config was read; one that is not an authority
            // could never match a request.
            for authority in entry.hosts.iter().filter_map(|host| Authority::parse(host)) {
                by_authority.insert(authority, index);
            }
        }
        Ok(Self { provider, profiles, by_authority })
    }

    /// The number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Always false: the default profile exists.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The profile for `authority`.
    pub fn profile_for(&self, authority: &Authority) -> usize {
        self.by_authority.get(authority).copied().unwrap_or(0)
    }

    /// Profile `index`; an index out of range is the last profile, as it always was.
    fn profile(&self, index: usize) -> &Profile {
        &self.profiles[index.min(self.profiles.len() - 1)]
    }

    /// The TLS versions `profile` speaks.
    pub(crate) fn tls_versions(&self, profile: usize) -> &'static [&'static rustls::SupportedProtocolVersion] {
        self.profile(profile).versions.rustls()
    }

    pub(crate) fn verifier(&self, profile: usize) -> Arc<UpstreamVerifier> {
        self.profile(profile).verifier.clone()
    }

    pub(crate) fn revocation(&self, profile: usize) -> Option<Arc<UpstreamRevocation>> {
        self.profiles.get(profile).and_then(|p| p.revocation.clone())
    }

    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }
}

/// WebPKI verification plus pins, with the configured (and logged) relaxations.
#[derive(Debug)]
pub(crate) struct UpstreamVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
    check_hostname: bool,
    pins: Vec<[u8; 32]>,
    /// Remember stapled OCSP responses for the revocation check after the handshake.
    keep_staples: bool,
}

impl UpstreamVerifier {
    fn strict(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self { inner, verify: true, check_hostname: true, pins: Vec::new(), keep_staples: false }
    }
}

fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
    digest.as_ref().try_into().ok()
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.keep_staples && !ocsp_response.is_empty() {
            crate::revocation::remember_staple(end_entity, ocsp_response);
        }
        if self.verify {
            match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(_) => {}
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) if !self.check_hostname => {}
                // Say which names the certificate is for, from the certificate itself
                // (webpki's list is formatted for debugging).
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => {
                    let mismatch = HostnameMismatch { expected: server_name.to_str().into_owned(), names: subject_alt_names(end_entity) };
                    return Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))));
                }
                Err(error) => return Err(error),
            }
        }
        if !self.pins.is_empty() {
            let actual = spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            if !self.pins.contains(&actual) {
                use base64::Engine;
                let actual = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(actual);
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    actual,
                })))));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
