//! Reading trust material from files, one way for both directions: the CA bundles and CRLs
//! that `[[upstreams]]` trusts servers with and that `[tls]` trusts callers with. Reasons
//! are plain words; callers add the file and the key that named it.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

/// The largest CA bundle or CRL file read; those of real PKIs stay well under it.
const MAX_TRUST_FILE_BYTES: u64 = 32 << 20;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    crate::files::read_regular_file(path, MAX_TRUST_FILE_BYTES).map_err(|e| e.to_string())
}

/// Adds the CA certificates of a bundle (PEM or DER) to `roots`; a bundle without a usable
/// one is refused.
pub fn add_ca_bundle(path: &Path, roots: &mut RootCertStore) -> Result<(), String> {
    add_ca_certificates(read_ca_bundle(path)?, roots)
}

/// The certificates of a CA bundle file (PEM or DER), for a caller that needs them besides
/// adding them to roots with [`add_ca_certificates`].
pub fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    super::pem::certificates_pem_or_der(read(path)?).map_err(|e| e.to_string())
}

/// Adds a bundle's certificates to `roots`; a bundle without a usable one is refused.
pub fn add_ca_certificates(certificates: Vec<CertificateDer<'static>>, roots: &mut RootCertStore) -> Result<(), String> {
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err("no usable CA certificate".into());
    }
    Ok(())
}

/// The CRLs of a file (PEM or DER), each parsed as the verifier will, so that a bad one is
/// refused here with its reason rather than by a verifier's builder.
pub fn read_crls(path: &Path, provider: &Arc<CryptoProvider>) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = super::pem::crls_pem_or_der(read(path)?).map_err(|e| e.to_string())?;
    if crls.is_empty() {
        return Err("no X509 CRL section".into());
    }
    for crl in &crls {
        check_crl(crl, provider)?;
    }
    Ok(crls)
}

/// Parses one CRL as the verifier will and says what is wrong with it, in plain words.
fn check_crl(crl: &CertificateRevocationListDer<'static>, provider: &Arc<CryptoProvider>) -> Result<(), String> {
    use rustls::CertRevocationListError as E;
    use rustls::client::VerifierBuilderError;
    // Any root will do: only the CRL's own parsing is checked here.
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().take(1).cloned());
    let error = match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).with_crls([crl.clone()]).build() {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    Err(match &error {
        VerifierBuilderError::InvalidCrl(crl_error) => match crl_error {
            E::ParseError | E::Other(_) => "not a valid X.509 CRL: it could not be parsed".to_string(),
            E::BadSignature => "its signature does not verify".into(),
            E::InvalidCrlNumber => "its CRL number is invalid".into(),
            E::InvalidRevokedCertSerialNumber => "it lists an invalid serial number".into(),
            E::IssuerInvalidForCrl => "its issuer may not sign CRLs (no cRLSign key usage)".into(),
            E::UnsupportedCrlVersion => "only version 2 CRLs are supported".into(),
            E::UnsupportedCriticalExtension => "it has a critical extension that is not supported".into(),
            E::UnsupportedDeltaCrl => "delta CRLs are not supported; use a complete CRL".into(),
            E::UnsupportedIndirectCrl => "indirect CRLs are not supported".into(),
            E::UnsupportedRevocationReason => "it uses a revocation reason that is not supported".into(),
            _ => "it cannot be used (its signature algorithm is not supported)".into(),
        },
        other => other.to_string(),
    })
}
