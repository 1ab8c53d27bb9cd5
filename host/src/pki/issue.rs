//! A development PKI: a local CA that issues client and server certificates, so that a
//! newcomer needs no openssl to try mutual TLS.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::keygen::{DecryptFailure, decrypt_key, encrypt_key};
use crate::key_types::NewKeyType;

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_TAG: &str = "ENCRYPTED PRIVATE KEY";

/// A development certificate authority: `ca.pem` and `ca.key` in one directory, or
/// `ca.pem` and `ca.key.uri` (the PKCS#11 URI of a CA key that stays in a token).
pub struct DevCa {
    cert_pem: String,
    key: CaKey,
}

/// The file beside `ca.pem` that names a CA key in a token.
pub const CA_KEY_URI_FILE: &str = "ca.key.uri";

/// Where the CA key is: in memory (from `ca.key`), or in a token that signs for us.
enum CaKey {
    File(KeyPair),
    Token(crate::pkcs11::TokenCaKey),
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::File(key) => key.der_bytes(),
            Self::Token(key) => key.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::File(key) => rcgen::PublicKeyData::algorithm(key),
            Self::Token(key) => key.algorithm(),
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::File(key) => key.sign(message),
            Self::Token(key) => key.sign(message),
        }
    }
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// What to issue with [`DevCa::issue`].
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// Subject common name; also the file stem of the output.
    pub common_name: String,
    /// Issue a server certificate (`serverAuth`, SANs) instead of a client one (`clientAuth`).
    pub server: bool,
    /// Subject alternative names (DNS names or IP addresses). Server certificates without any
    /// get the common name.
    pub sans: Vec<String>,
    /// Validity in days from now.
    pub days: u32,
    /// The new certificate's key algorithm.
    pub key_type: NewKeyType,
    /// A CRL distribution point (http URL) to name in the certificate.
    pub crl_url: Option<String>,
    /// An OCSP responder (http URL) to name in the certificate (authorityInfoAccess).
    pub ocsp_url: Option<String>,
}

impl Default for IssueOptions {
    /// A client certificate valid for 30 days, P-256, no SANs, names no CRL or OCSP responder.
    fn default() -> Self {
        Self {
            common_name: String::new(),
            server: false,
            sans: Vec::new(),
            days: 30,
            key_type: NewKeyType::default(),
            crl_url: None,
            ocsp_url: None,
        }
    }
}

/// The files written by [`DevCa::issue_to`].
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// The certificate followed by the CA certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

fn generate_error(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn token_error(e: crate::pkcs11::TokenError) -> PkiError {
    PkiError::Generate(format!("the CA key in the token cannot be used: {e}"))
}

/// A signing failure, in the token's words when the token failed.
fn sign_error(key: &CaKey, e: rcgen::Error) -> PkiError {
    match (key, &e) {
        (CaKey::Token(key), rcgen::Error::RemoteKeyError) => match key.last_error() {
            Some(error) => PkiError::Generate(format!("the CA key in the token could not sign: {error}")),
            None => generate_error(e),
        },
        _ => generate_error(e),
    }
}

/// A development CA's certificate, valid for `days` from five minutes ago, whatever holds its key.
fn ca_params(common_name: &str, days: u32) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "edgemtls development");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = valid_until(now, days)?;
    Ok(params)
}

impl DevCa {
    /// Creates a new CA (ECDSA P-256) valid for `days`.
    pub fn generate(common_name: &str, days: u32) -> Result<Self, PkiError> {
        Self::generate_with(common_name, days, NewKeyType::P256)
    }

    /// Creates a new CA with a key of `key_type`, valid for `days`.
    pub fn generate_with(common_name: &str, days: u32, key_type: NewKeyType) -> Result<Self, PkiError> {
        let key = key_type.generate()?;
        let params = ca_params(common_name, days)?;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        Ok(Self { cert_pem: cert.pem(), key: CaKey::File(key) })
    }

    /// Creates a new CA whose key is in a token: the key the URI names, or (when the token has
    /// none) a new `key_type` key pair generated there. The key never leaves the token.
    pub fn generate_in_token(
        common_name: &str,
        days: u32,
        key_type: NewKeyType,
        uri: &crate::pkcs11::KeyUri,
        settings: &crate::pkcs11::TokenSettings,
    ) -> Result<(Self, crate::pkcs11::CaKeyOrigin), PkiError> {
        let (key, origin) = crate::pkcs11::TokenCaKey::open_or_generate(uri, settings, Some(key_type)).map_err(token_error)?;
        let params = ca_params(common_name, days)?;
        let key = CaKey::Token(key);
        let cert = params.self_signed(&key).map_err(|e| sign_error(&key, e))?;
        Ok((Self { cert_pem: cert.pem(), key }, origin))
    }

    /// Loads a CA from its certificate file and the token key the URI names, which must be
    /// the certificate's.
    pub fn load_with_token_key(
        cert_path: &Path,
        uri: &crate::pkcs11::KeyUri,
        settings: &crate::pkcs11::TokenSettings,
    ) -> Result<Self, PkiError> {
        let cert_pem = crate::files::read_regular_file(cert_path, 1 << 20)
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))
            .map_err(|error| PkiError::Read { path: cert_path.to_path_buf(), error })?;
        let (key, _) = crate::pkcs11::TokenCaKey::open_or_generate(uri, settings, None).map_err(token_error)?;
        Issuer::from_ca_cert_pem(&cert_pem, &key)
            .map_err(|e| PkiError::Unparseable { path: cert_path.to_path_buf(), reason: e.to_string() })?;
        let first = super::pem::certificates(cert_pem.as_bytes()).ok().and_then(|certs| certs.into_iter().next());
        let cert_spki = first.and_then(|der| {
            use x509_parser::prelude::{FromDer, X509Certificate};
            X509Certificate::from_der(&der).ok().map(|(_, cert)| cert.public_key().subject_public_key.data.to_vec())
        });
        if cert_spki.as_deref() != Some(rcgen::PublicKeyData::der_bytes(&key)) {
            return Err(PkiError::Unparseable {
                path: cert_path.to_path_buf(),
                reason: format!("its public key is not the one of the {} ; name the CA's own key", uri.key_shown()),
            });
        }
        Ok(Self { cert_pem, key: CaKey::Token(key) })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`; an encrypted key is refused (see
    /// [`DevCa::load_with_passphrase`]).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Self::load_with_passphrase(dir, None)
    }

    /// Whether `dir`'s `ca.key` is encrypted (`pki init --encrypt`).
    pub fn key_is_encrypted(dir: &Path) -> bool {
        Self::key_file_is_encrypted(&dir.join("ca.key"))
    }

    /// Whether the CA key file `key_path` is encrypted PKCS#8.
    pub fn key_file_is_encrypted(key_path: &Path) -> bool {
        crate::files::read_regular_file(key_path, 1 << 20)
            .is_ok_and(|bytes| bytes.windows(ENCRYPTED_TAG.len()).any(|w| w == ENCRYPTED_TAG.as_bytes()))
    }

    /// Loads `ca.pem` and `ca.key` from `dir`, decrypting the key with `passphrase` when
    /// `pki init --encrypt` wrote it.
    pub fn load_with_passphrase(dir: &Path, passphrase: Option<&str>) -> Result<Self, PkiError> {
        Self::load_files(&dir.join("ca.pem"), &dir.join("ca.key"), passphrase)
    }

    /// Loads a CA from its certificate and key files, whatever their names (another PKI's
    /// `ca-cert.pem` and `ca-key.pem`), decrypting the key with `passphrase` when it is
    /// encrypted PKCS#8.
    pub fn load_files(cert_path: &Path, key_path: &Path, passphrase: Option<&str>) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            crate::files::read_regular_file(path, 1 << 20)
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
                })
                .map_err(|error| PkiError::Read { path: path.to_path_buf(), error })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key_path = key_path.to_path_buf();
        let key = if key_pem.contains(ENCRYPTED_TAG) {
            let passphrase = passphrase.ok_or_else(|| PkiError::CaKeyEncrypted { path: key_path.clone() })?;
            let der = super::pem::sections(key_pem.as_bytes())
                .ok()
                .and_then(|sections| sections.into_iter().find(|s| s.tag() == ENCRYPTED_TAG))
                .map(|section| section.contents().to_vec())
                .ok_or_else(|| PkiError::Unparseable {
                    path: key_path.clone(),
                    reason: "its ENCRYPTED PRIVATE KEY section cannot be read".into(),
                })?;
            let plain = decrypt_key(&der, passphrase).map_err(|failure| match failure {
                DecryptFailure::WrongPassphrase => PkiError::WrongPassphrase { path: key_path.clone() },
                DecryptFailure::Unsupported => PkiError::Unparseable {
                    path: key_path.clone(),
                    reason: "it is encrypted with a scheme that is not supported (use PBES2 with AES)".into(),
                },
            })?;
            let plain = rustls_pki_types::PrivatePkcs8KeyDer::from(plain);
            KeyPair::try_from(&plain).map_err(|e| PkiError::Unparseable { path: key_path.clone(), reason: e.to_string() })?
        } else {
            KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Unparseable { path: key_path.clone(), reason: e.to_string() })?
        };
        // Fail now, with the file named, rather than on the first issue.
        Issuer::from_ca_cert_pem(&cert_pem, &key)
            .map_err(|e| PkiError::Unparseable { path: cert_path.to_path_buf(), reason: e.to_string() })?;
        // A key that is not the certificate's would issue certificates nothing can verify.
        let first = super::pem::certificates(cert_pem.as_bytes()).ok().and_then(|certs| certs.into_iter().next());
        let cert_spki = first.and_then(|der| {
            use x509_parser::prelude::{FromDer, X509Certificate};
            X509Certificate::from_der(&der).ok().map(|(_, cert)| cert.public_key().subject_public_key.data.to_vec())
        });
        if cert_spki.as_deref() != Some(key.public_key_raw()) {
            return Err(PkiError::Unparseable {
                path: key_path,
                reason: format!("this key does not belong to the certificate in '{}'; use the pair `pki init` wrote", cert_path.display()),
            });
        }
        Ok(Self { cert_pem, key: CaKey::File(key) })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.pem` and `ca.key` (0600) into `dir`, creating it; with a passphrase the
    /// key is encrypted PKCS#8.
    /// A CA key in a token is named by `ca.key.uri` instead (its URI, no secret).
    pub fn write_to(&self, dir: &Path, passphrase: Option<&str>) -> Result<(PathBuf, PathBuf), PkiError> {
        let key_pem = match (&self.key, passphrase) {
            (CaKey::File(key), Some(passphrase)) => encrypt_key(key, passphrase)?,
            (CaKey::File(key), None) => key.serialize_pem(),
            (CaKey::Token(key), _) => key.uri().to_string() + "\n",
        };
        std::fs::create_dir_all(dir).map_err(|error| PkiError::Write { path: dir.to_path_buf(), error })?;
        let cert = dir.join("ca.pem");
        std::fs::write(&cert, &self.cert_pem).map_err(|error| PkiError::Write { path: cert.clone(), error })?;
        let key = match &self.key {
            CaKey::File(_) => {
                let key = dir.join("ca.key");
                write_private_file(&key, key_pem.as_bytes())?;
                key
            }
            CaKey::Token(_) => {
                let key = dir.join(CA_KEY_URI_FILE);
                std::fs::write(&key, key_pem).map_err(|error| PkiError::Write { path: key.clone(), error })?;
                key
            }
        };
        Ok((cert, key))
    }

    /// Issues a certificate and returns `(certificate chain PEM, private key PEM)`.
    pub fn issue(&self, options: &IssueOptions) -> Result<(String, String), PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue_with_validity(options, now - Duration::minutes(5), valid_until(now, options.days)?)
    }

    /// Like [`DevCa::issue`] with an explicit validity period (`options.days` is ignored), for
    /// tests of expired and not-yet-valid certificates.
    pub fn issue_with_validity(
        &self,
        options: &IssueOptions,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(generate_error)?;
        let key = options.key_type.generate()?;

        let mut sans = options.sans.clone();
        if options.server && sans.is_empty() {
            sans.push(options.common_name.clone());
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
        for san in &sans {
            params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    // rcgen takes any IA5 string; a SAN must be a name TLS clients can match.
                    rustls_pki_types::DnsName::try_from(san.as_str()).map_err(|_| {
                        PkiError::Generate(format!("'{san}' is neither a DNS name nor an IP address; use --san with a host name such as api.example.com, or an address"))
                    })?;
                    SanType::DnsName(san.clone().try_into().map_err(generate_error)?)
                }
            });
        }
        params.distinguished_name.push(DnType::CommonName, options.common_name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "edgemtls development");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![if options.server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        if let Some(url) = &options.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![http_url(url)?] }];
        }
        if let Some(url) = &options.ocsp_url {
            params.custom_extensions.push(ocsp_responder_extension(&http_url(url)?)?);
        }
        let cert = params.signed_by(&key, &issuer).map_err(|e| sign_error(&self.key, e))?;
        Ok((format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem()))
    }

    /// Signs a certificate revocation list (PEM, valid for 7 days from now) that revokes the
    /// certificates with `serials`, each written as [`super::CertificateMetadata::serial`]
    /// shows it (colon-separated hex, e.g. `3a:0f:…`). For testing `crl = [...]` upstream
    /// trust; an empty list gives a valid CRL that revokes nothing.
    pub fn revocation_list(&self, serials: &[&str]) -> Result<String, PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(generate_error)?;
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for serial in serials {
            let bytes = serial
                .split(':')
                .map(|byte| u8::from_str_radix(byte.trim(), 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
                .filter(|bytes| !bytes.is_empty())
                .ok_or_else(|| PkiError::Generate(format!("'{serial}' is not a serial number in colon-separated hex")))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: now - Duration::minutes(1),
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&issuer).map_err(|e| sign_error(&self.key, e))?.pem().map_err(generate_error)
    }

    /// Issues a certificate into `dir` as `<name>.pem` and `<name>.key` (0600), where `<name>`
    /// is the common name with anything but letters, digits, `-`, `_` and `.` replaced by `-`.
    pub fn issue_to(&self, options: &IssueOptions, dir: &Path) -> Result<IssuedFiles, PkiError> {
        let (cert_pem, key_pem) = self.issue(options)?;
        std::fs::create_dir_all(dir).map_err(|error| PkiError::Write { path: dir.to_path_buf(), error })?;
        let stem = file_stem(&options.common_name);
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, cert_pem).map_err(|error| PkiError::Write { path: cert.clone(), error })?;
        write_private_file(&key, key_pem.as_bytes())?;
        Ok(IssuedFiles { cert, key })
    }
}

/// `url`, when it is an http URL: CRL distribution points and OCSP responders are plain HTTP
/// (their answers are signed), and clients fetch nothing else.
fn http_url(url: &str) -> Result<String, PkiError> {
    let parsed: Option<http::Uri> = url.parse().ok();
    match parsed {
        Some(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(url.to_string()),
        _ => Err(PkiError::Generate(format!("'{url}' is not an http:// URL; CRL and OCSP URLs are plain http"))),
    }
}

/// authorityInfoAccess naming an OCSP responder (RFC 5280 §4.2.2.1), which rcgen does not
/// write itself.
fn ocsp_responder_extension(url: &str) -> Result<rcgen::CustomExtension, PkiError> {
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    const OCSP: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    let location = der::asn1::Ia5String::new(url).map_err(|_| PkiError::Generate(format!("'{url}' is not ASCII")))?;
    let access = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let der = access.to_der().map_err(|e| PkiError::Generate(format!("encoding authorityInfoAccess: {e}")))?;
    Ok(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der))
}

/// The file stem [`DevCa::issue_to`] uses for a common name.
///
/// Only letters, digits, `-`, `_` and inner dots survive, so the stem never names a hidden
/// file or another directory (`../evil` becomes `evil`).
pub fn file_stem(common_name: &str) -> String {
    let mapped: String =
        common_name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let trimmed = mapped.trim_matches(|c| c == '.' || c == '-');
    if trimmed.is_empty() { "certificate".to_string() } else { trimmed.to_string() }
}

/// Writes a secret to `path` with mode 0600 (created that way, and tightened if it existed).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let write_error = |error| PkiError::Write { path: path.to_path_buf(), error };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path).map_err(write_error)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
        file.write_all(contents).map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(write_error)?;
        file.write_all(contents).map_err(write_error)
    }
}

/// `days` after `now`, or a plain error when that is past what certificates can say.
fn valid_until(now: OffsetDateTime, days: u32) -> Result<OffsetDateTime, PkiError> {
    now.checked_add(Duration::days(i64::from(days)))
        .filter(|end| end.year() <= 9999)
        .ok_or_else(|| PkiError::Generate(format!("a validity of {days} days ends after the year 9999; use fewer days")))
}

#[cfg(test)]
mod file_stem_tests {
    use super::file_stem;

    #[test]
    fn never_hidden_and_never_a_path() {
        assert_eq!(file_stem("../evil"), "evil");
        assert_eq!(file_stem(".hidden"), "hidden");
        assert_eq!(file_stem("billing client"), "billing-client");
        assert_eq!(file_stem("api.example.com"), "api.example.com");
        assert_eq!(file_stem("../.."), "certificate");
    }
}
