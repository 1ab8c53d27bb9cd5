//! Reading certificate chains and private keys from PEM, DER, PKCS#12 and PKCS#7 files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::{Decode, Encode};
use rustls::sign::SigningKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;
use crate::files::expand_tilde;

/// Certificate and key files larger than this are refused before parsing.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// What to import: a certificate file and, unless it carries the key itself, a key file.
#[derive(Debug, Clone, Copy)]
pub struct ImportRequest<'a> {
    /// PEM (chain, optionally with the key), DER, PKCS#12 / PFX or PKCS#7 (`.p7b`).
    pub cert_path: &'a Path,
    /// A separate private key (PEM or DER; PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<&'a Path>,
    /// The password of a PKCS#12 file or an encrypted PKCS#8 key, if any.
    pub password: Option<&'a str>,
}

/// A client identity read from files: a leaf-first chain and the matching private key.
pub struct Identity {
    /// The chain, leaf first, then each issuer in order when present in the input.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
    /// The file the certificates came from.
    pub cert_path: PathBuf,
    /// The file the key came from.
    pub key_path: PathBuf,
    /// Things worth telling the operator that do not stop the import.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key bytes.
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Reads a certificate chain and private key, and checks that the key matches the leaf and
/// that the chain keeps the limits TLS peers impose ([`super::chain_problem`]).
///
/// The leaf is the certificate whose public key matches the private key, wherever it appears
/// in the input (`.p7b` files often list the CA first); the rest of the chain follows it in
/// issuer order.
pub fn load_identity(request: ImportRequest<'_>) -> Result<Identity, PkiError> {
    let cert_path = expand_tilde(request.cert_path);
    let mut warnings = Vec::new();
    let contents = read_limited(&cert_path)?;
    let parsed = parse_container(&cert_path, &contents, request.password)?;
    if parsed.certs.is_empty() {
        return Err(PkiError::NoCertificate { path: cert_path });
    }

    let (key, key_path) = match request.key_path {
        Some(key_path) => {
            let key_path = expand_tilde(key_path);
            if let Some(warning) = permissive_mode_warning(&key_path) {
                warnings.push(warning);
            }
            let bytes = read_limited(&key_path)?;
            let mut keys = parse_container(&key_path, &bytes, request.password)?.keys;
            (single_key(&key_path, &mut keys)?, key_path)
        }
        None => {
            let mut keys = parsed.keys;
            if !keys.is_empty()
                && let Some(warning) = permissive_mode_warning(&cert_path)
            {
                warnings.push(warning);
            }
            (single_key(&cert_path, &mut keys)?, cert_path.clone())
        }
    };

    let chain = order_chain(&cert_path, &key_path, parsed.certs, &key)?;
    if let Some(problem) = super::chain_problem(&chain) {
        return Err(PkiError::Chain { path: cert_path, problem });
    }
    // Stored all the same: upstreams that verify with OpenSSL (nginx) accept a version 1
    // client certificate.
    if chain.first().is_some_and(super::version1::is_version_1) {
        warnings.push(format!(
            "'{}': upstreams that verify client certificates with OpenSSL (nginx, for one) accept this certificate, \
             but those that verify with rustls or webpki refuse it: {}",
            cert_path.display(),
            super::version1::explanation(super::version1::Role::Client)
        ));
    }
    Ok(Identity { chain, key, cert_path, key_path, warnings })
}

/// Reads the certificates of a file in any format `load_identity` accepts (a key in it is
/// ignored), leaf first: the first certificate that is not a CA's (a `.p7b` often lists the
/// CA first), then the others in file order.
pub fn load_certificates(path: &Path, password: Option<&str>) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let path = expand_tilde(path);
    let contents = read_limited(&path)?;
    let mut certs = parse_container(&path, &contents, password)?.certs;
    let is_ca = |cert: &CertificateDer<'_>| {
        X509Certificate::from_der(cert)
            .ok()
            .and_then(|(_, parsed)| parsed.basic_constraints().ok().flatten().map(|bc| bc.value.ca))
            .unwrap_or(false)
    };
    match certs.iter().position(|cert| !is_ca(cert)) {
        None if certs.is_empty() => Err(PkiError::NoCertificate { path }),
        Some(leaf) => {
            let leaf = certs.remove(leaf);
            certs.insert(0, leaf);
            Ok(certs)
        }
        None => Ok(certs),
    }
}

/// The certificates and keys found in one file.
#[derive(Default)]
struct Parsed {
    certs: Vec<CertificateDer<'static>>,
    keys: Vec<PrivateKeyDer<'static>>,
}

fn read_limited(path: &Path) -> Result<Vec<u8>, PkiError> {
    let read_error = |error| PkiError::Read { path: path.to_path_buf(), error };
    // Opening a FIFO for reading waits for a writer: look before opening.
    if !std::fs::metadata(path).map_err(read_error)?.is_file() {
        return Err(read_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > MAX_FILE_SIZE {
        return Err(PkiError::TooLarge { path: path.to_path_buf(), size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(PkiError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64 });
    }
    Ok(bytes)
}

#[cfg(unix)]
fn permissive_mode_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0)
        .then(|| format!("key file '{}' is readable by group or others (mode {:o}); consider chmod 600", path.display(), mode & 0o777))
}

#[cfg(not(unix))]
fn permissive_mode_warning(_path: &Path) -> Option<String> {
    None
}

fn single_key(path: &Path, keys: &mut Vec<PrivateKeyDer<'static>>) -> Result<PrivateKeyDer<'static>, PkiError> {
    match keys.len() {
        0 => Err(PkiError::NoKey { path: path.to_path_buf() }),
        1 => Ok(keys.remove(0)),
        count => Err(PkiError::ManyKeys { path: path.to_path_buf(), count }),
    }
}

fn unparseable(path: &Path, reason: impl Into<String>) -> PkiError {
    PkiError::Unparseable { path: path.to_path_buf(), reason: reason.into() }
}

fn parse_container(path: &Path, bytes: &[u8], password: Option<&str>) -> Result<Parsed, PkiError> {
    if super::pem::looks_like_pem(bytes) { parse_pem(path, bytes, password) } else { parse_der(path, bytes, password) }
}

fn parse_pem(path: &Path, bytes: &[u8], password: Option<&str>) -> Result<Parsed, PkiError> {
    let sections = super::pem::sections(bytes).map_err(|reason| unparseable(path, reason.to_string()))?;
    let mut parsed = Parsed::default();
    for section in sections {
        // `openssl rsa -aes256 -traditional` keeps the label and encrypts the body, naming the
        // cipher in headers: read as a plain key it would look like an unsupported one.
        let legacy_encrypted = section.headers().get("Proc-Type").is_some_and(|value| value.contains("ENCRYPTED"));
        if legacy_encrypted && section.tag().ends_with("PRIVATE KEY") {
            return Err(PkiError::LegacyEncryptedKey { path: path.to_path_buf() });
        }
        let der = section.contents().to_vec();
        match section.tag() {
            "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => {
                check_certificate(path, &der)?;
                parsed.certs.push(CertificateDer::from(der));
            }
            "PKCS7" | "CMS" => parsed.certs.extend(parse_pkcs7(&der).map_err(|reason| unparseable(path, reason))?),
            "PRIVATE KEY" => parsed.keys.push(PrivatePkcs8KeyDer::from(der).into()),
            "RSA PRIVATE KEY" => parsed.keys.push(PrivatePkcs1KeyDer::from(der).into()),
            "EC PRIVATE KEY" => parsed.keys.push(PrivateSec1KeyDer::from(der).into()),
            "ENCRYPTED PRIVATE KEY" => {
                let password = password.ok_or_else(|| PkiError::EncryptedKey { path: path.to_path_buf() })?;
                let plain = super::keygen::decrypt_key(&der, password).map_err(|failure| match failure {
                    super::keygen::DecryptFailure::WrongPassphrase => PkiError::WrongPassphrase { path: path.to_path_buf() },
                    super::keygen::DecryptFailure::Unsupported => {
                        unparseable(path, "the key is encrypted with a scheme that is not supported (use PBES2 with AES)")
                    }
                })?;
                parsed.keys.push(PrivatePkcs8KeyDer::from(plain).into());
            }
            // EC PARAMETERS, public keys and the like carry nothing we need.
            _ => {}
        }
    }
    if parsed.certs.is_empty() && parsed.keys.is_empty() {
        return Err(unparseable(path, "PEM file has no CERTIFICATE, PKCS7 or PRIVATE KEY section"));
    }
    Ok(parsed)
}

fn check_certificate(path: &Path, der: &[u8]) -> Result<(), PkiError> {
    X509Certificate::from_der(der).map(|_| ()).map_err(|e| unparseable(path, format!("invalid X.509 certificate: {e}")))
}

fn parse_der(path: &Path, bytes: &[u8], password: Option<&str>) -> Result<Parsed, PkiError> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();

    if let Ok((rest, _)) = X509Certificate::from_der(bytes)
        && rest.is_empty()
    {
        return Ok(Parsed { certs: vec![CertificateDer::from(bytes.to_vec())], keys: Vec::new() });
    }
    if let Ok(certs) = parse_pkcs7(bytes) {
        return Ok(Parsed { certs, keys: Vec::new() });
    }
    match p12_keystore::Pkcs12Archive::from_pkcs12(bytes, password.unwrap_or("")) {
        Ok(archive) => return Ok(pkcs12_contents(&archive)),
        // A structural error on a file not named .p12/.pfx means "not PKCS#12": keep trying.
        Err(p12_keystore::error::Error::DerError(_) | p12_keystore::error::Error::InvalidVersion)
            if !matches!(extension.as_str(), "p12" | "pfx") => {}
        Err(error) => {
            return Err(PkiError::Pkcs12 { path: path.to_path_buf(), reason: pkcs12_reason(&error, password.is_some()) });
        }
    }
    if let Ok(key) = PrivateKeyDer::try_from(bytes) {
        return Ok(Parsed { certs: Vec::new(), keys: vec![key.clone_key()] });
    }
    Err(unparseable(path, "not a PEM file, a DER certificate or key, a PKCS#7 (.p7b) chain or a PKCS#12 (.p12/.pfx) file"))
}

/// Extracts the certificates of a PKCS#7 / CMS `SignedData` (the usual `.p7b` chain).
fn parse_pkcs7(der: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;

    let info = ContentInfo::from_der(der).map_err(|e| format!("invalid PKCS#7: {e}"))?;
    const SIGNED_DATA: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    if info.content_type != SIGNED_DATA {
        return Err(format!("PKCS#7 content type {} is not signedData", info.content_type));
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| format!("invalid PKCS#7 signedData: {e}"))?;
    let mut certs = Vec::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            let der = cert.to_der().map_err(|e| format!("invalid certificate in PKCS#7: {e}"))?;
            certs.push(CertificateDer::from(der));
        }
    }
    if certs.is_empty() {
        return Err("PKCS#7 file contains no certificates".into());
    }
    Ok(certs)
}

fn pkcs12_contents(archive: &p12_keystore::Pkcs12Archive) -> Parsed {
    let certs = archive.certs.iter().map(|bag| CertificateDer::from(bag.cert.as_der().to_vec())).collect();
    let keys = archive.keys.iter().map(|bag| PrivatePkcs8KeyDer::from(bag.key.as_der().to_vec()).into()).collect();
    Parsed { certs, keys }
}

fn pkcs12_reason(error: &p12_keystore::error::Error, had_password: bool) -> String {
    use p12_keystore::error::Error;
    match error {
        Error::MacError(_) | Error::UnpadError if had_password => "wrong password".into(),
        Error::MacError(_) | Error::UnpadError => {
            "the file is password protected; name the variable holding the password with --password-env".into()
        }
        other => format!("{other}"),
    }
}

/// Puts the certificate matching `key` first and its issuers after it.
fn order_chain(
    cert_path: &Path,
    key_path: &Path,
    certs: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let signing_key = signing_key(cert_path, key_path, &certs, key)?;
    let key_spki = signing_key
        .public_key()
        .ok_or_else(|| PkiError::UnsupportedKey { path: key_path.to_path_buf(), reason: "cannot derive the public key".into() })?;

    // (certificate, SPKI, subject, issuer), raw DER.
    type Candidate = (CertificateDer<'static>, Vec<u8>, Vec<u8>, Vec<u8>);
    let mut remaining: Vec<Candidate> = Vec::new();
    for cert in certs {
        let (_, parsed) =
            X509Certificate::from_der(&cert).map_err(|e| unparseable(cert_path, format!("invalid X.509 certificate: {e}")))?;
        let spki = parsed.public_key().raw.to_vec();
        let subject = parsed.subject().as_raw().to_vec();
        let issuer = parsed.issuer().as_raw().to_vec();
        remaining.push((cert, spki, subject, issuer));
    }
    let leaf_index = remaining
        .iter()
        .position(|(_, spki, _, _)| spki.as_slice() == key_spki.as_ref())
        .ok_or_else(|| PkiError::KeyMismatch { cert_path: cert_path.to_path_buf(), key_path: key_path.to_path_buf() })?;

    let leaf = remaining.remove(leaf_index);
    let mut issuer = leaf.3.clone();
    let mut subject = leaf.2.clone();
    let mut chain = vec![leaf.0];
    // Follow issuer links; stop at a self-signed root or when the input has no issuer.
    while issuer != subject {
        let Some(next) = remaining.iter().position(|(_, _, s, _)| *s == issuer) else { break };
        let (cert, _, s, i) = remaining.remove(next);
        chain.push(cert);
        subject = s;
        issuer = i;
    }
    // Certificates that are not part of the leaf's path are kept, after it, in input order.
    chain.extend(remaining.into_iter().map(|(cert, ..)| cert));
    Ok(chain)
}

fn signing_key(
    cert_path: &Path,
    key_path: &Path,
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<Arc<dyn SigningKey>, PkiError> {
    rustls::crypto::ring::sign::any_supported_type(key).map_err(|_| {
        // ring refuses RSA keys under 2048 bits; say so rather than "unsupported".
        for cert in certs {
            if let Ok((_, parsed)) = X509Certificate::from_der(cert)
                && let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = parsed.public_key().parsed()
            {
                let bits = rsa.key_size();
                if bits < 2048 {
                    return PkiError::RsaKeyTooSmall { path: cert_path.to_path_buf(), bits };
                }
                if bits > 4096 {
                    return PkiError::RsaKeyTooLarge { path: cert_path.to_path_buf(), bits };
                }
            }
        }
        PkiError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: "expected RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 in PKCS#8, PKCS#1 or SEC1 form".into(),
        }
    })
}
