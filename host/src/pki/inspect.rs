//! Metadata of a leaf certificate and the rules a client certificate must pass.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Identity, PkiError};

/// What the store keeps about a certificate besides its bytes, parsed once at import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMetadata {
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// The subject's common name, when it has one.
    pub subject_cn: Option<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Subject alternative names (`DNS:…`, `IP:…`, `email:…`, `URI:…`).
    pub sans: Vec<String>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Key size in bits.
    pub key_bits: u32,
    /// SHA-256 of the DER SubjectPublicKeyInfo, base64url without padding (the pin format).
    pub spki_sha256: String,
    /// SHA-256 of the whole DER certificate, hex.
    pub fingerprint_sha256: String,
}

impl CertificateMetadata {
    /// The expiry status at `now`.
    pub fn expiry_status(&self, now: OffsetDateTime) -> ExpiryStatus {
        ExpiryStatus::at(self.not_after, now)
    }

    /// Whole days from `now` until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

/// The accepted key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// RSA, 2048 bits or more.
    #[serde(rename = "RSA")]
    Rsa,
    /// ECDSA on NIST P-256.
    #[serde(rename = "ECDSA P-256")]
    EcdsaP256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "ECDSA P-384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "Ed25519")]
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::EcdsaP256 => "ECDSA P-256",
            KeyType::EcdsaP384 => "ECDSA P-384",
            KeyType::Ed25519 => "Ed25519",
        })
    }
}

/// How close a certificate is to expiry: `valid` > 14 days, `warning` 7–14, `critical` < 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryStatus {
    /// More than 14 days left.
    Valid,
    /// 7 to 14 days left.
    Warning,
    /// Less than 7 days left.
    Critical,
    /// Past `not_after`.
    Expired,
}

impl ExpiryStatus {
    /// The status of a certificate ending at `not_after`, seen at `now`.
    pub fn at(not_after: OffsetDateTime, now: OffsetDateTime) -> Self {
        let left = not_after - now;
        if left <= time::Duration::ZERO {
            ExpiryStatus::Expired
        } else if left < time::Duration::days(7) {
            ExpiryStatus::Critical
        } else if left <= time::Duration::days(14) {
            ExpiryStatus::Warning
        } else {
            ExpiryStatus::Valid
        }
    }

    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryStatus::Valid => "valid",
            ExpiryStatus::Warning => "warning",
            ExpiryStatus::Critical => "critical",
            ExpiryStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for ExpiryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// `t` as RFC 3339 (`2030-01-31T12:00:00Z`), the one way times are shown; a time RFC 3339
/// cannot express (a year past 9999) falls back to its plain display.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Unix seconds as RFC 3339, or in plain words when out of range.
pub fn rfc3339_unix(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .map(rfc3339)
        .unwrap_or_else(|| format!("{seconds} s after 1970"))
}

/// Reads the metadata of a leaf certificate. `path` only names the file in errors.
pub fn inspect_leaf(path: &Path, der: &CertificateDer<'_>) -> Result<CertificateMetadata, PkiError> {
    let unparseable = |reason: String| PkiError::Unparseable { path: path.to_path_buf(), reason };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| unparseable(format!("invalid X.509 certificate: {e}")))?;

    let time = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| unparseable(format!("validity out of range: {e}")))
    };
    let not_before = time(cert.validity().not_before)?;
    let not_after = time(cert.validity().not_after)?;

    let (key_type, key_bits) = key_type(path, &cert)?;
    let subject_cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);

    let sans = subject_alt_names(&cert);

    Ok(CertificateMetadata {
        subject: cert.subject().to_string(),
        subject_cn,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        sans,
        not_before,
        not_after,
        key_type,
        key_bits,
        spki_sha256: URL_SAFE_NO_PAD.encode(sha256(cert.public_key().raw)),
        fingerprint_sha256: sha256(der).as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// A certificate's subject alternative names, each with its type as OpenSSL writes it:
/// `DNS:api.example.com`, `IP:10.0.0.1`, `URI:spiffe://…`, `email:ops@example.com`.
pub fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = cert.subject_alternative_name() else { return Vec::new() };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
            GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
            GeneralName::URI(uri) => Some(format!("URI:{uri}")),
            GeneralName::IPAddress(bytes) => Some(format!("IP:{}", ip_to_string(bytes))),
            _ => None,
        })
        .collect()
}

fn ip_to_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()).to_string(),
        _ => format!("{bytes:02x?}"),
    }
}

fn key_type(path: &Path, cert: &X509Certificate<'_>) -> Result<(KeyType, u32), PkiError> {
    let spki = cert.public_key();
    let algorithm = &spki.algorithm.algorithm;
    let unsupported = |reason: String| PkiError::UnsupportedKey { path: path.to_path_buf(), reason };
    if *algorithm == oid_registry::OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(unsupported("malformed RSA public key".into())),
        };
        if bits < 2048 {
            return Err(PkiError::RsaKeyTooSmall { path: path.to_path_buf(), bits });
        }
        Ok((KeyType::Rsa, bits as u32))
    } else if *algorithm == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| unsupported("EC key without a named curve".into()))?;
        if curve == oid_registry::OID_EC_P256 {
            Ok((KeyType::EcdsaP256, 256))
        } else if curve == oid_registry::OID_NIST_EC_P384 {
            Ok((KeyType::EcdsaP384, 384))
        } else {
            Err(unsupported(format!("ECDSA curve {curve} is not supported; use P-256 or P-384")))
        }
    } else if *algorithm == oid_registry::OID_SIG_ED25519 {
        Ok((KeyType::Ed25519, 256))
    } else {
        Err(unsupported(format!("key algorithm {algorithm} is not supported; use RSA (2048+), ECDSA P-256/P-384 or Ed25519")))
    }
}

/// Checks that an identity may be stored as a client certificate at `now`, and returns the
/// leaf's metadata: inside its validity period, allowed for client authentication, and with
/// an accepted key type and size.
pub fn validate_client_identity(identity: &Identity, now: OffsetDateTime) -> Result<CertificateMetadata, PkiError> {
    validate_client_chain(&identity.cert_path, &identity.chain, now)
}

/// [`validate_client_identity`] for a leaf-first chain read from `path` whose key is
/// elsewhere (in a token).
pub fn validate_client_chain(path: &Path, chain: &[CertificateDer<'_>], now: OffsetDateTime) -> Result<CertificateMetadata, PkiError> {
    let leaf = chain.first().ok_or_else(|| PkiError::NoCertificate { path: path.to_path_buf() })?;
    let metadata = inspect_leaf(path, leaf)?;

    if metadata.not_after < now {
        return Err(PkiError::Expired { path: path.to_path_buf(), not_after: rfc3339(metadata.not_after) });
    }
    if metadata.not_before > now {
        return Err(PkiError::NotYetValid { path: path.to_path_buf(), not_before: rfc3339(metadata.not_before) });
    }

    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| PkiError::Unparseable { path: path.to_path_buf(), reason: format!("invalid X.509 certificate: {e}") })?;
    // A CA certificate is not a client certificate, unless it says it is one with an
    // explicit clientAuth EKU (`openssl req -x509` marks self-signed client certificates
    // CA:TRUE by default).
    let says_client_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    if let Ok(Some(constraints)) = cert.basic_constraints()
        && constraints.value.ca
        && !says_client_auth
    {
        return Err(PkiError::CaCertificate { path: path.to_path_buf() });
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        // No EKU at all means "any use"; an EKU list must name clientAuth (or anyExtendedKeyUsage).
        if !eku.client_auth && !eku.any {
            let mut usages = Vec::new();
            if eku.server_auth {
                usages.push("serverAuth".to_string());
            }
            if eku.code_signing {
                usages.push("codeSigning".to_string());
            }
            if eku.email_protection {
                usages.push("emailProtection".to_string());
            }
            if eku.time_stamping {
                usages.push("timeStamping".to_string());
            }
            if eku.ocsp_signing {
                usages.push("OCSPSigning".to_string());
            }
            usages.extend(eku.other.iter().map(|oid| oid.to_id_string()));
            return Err(PkiError::NoClientAuth { path: path.to_path_buf(), usages: usages.join(", ") });
        }
    }
    Ok(metadata)
}
