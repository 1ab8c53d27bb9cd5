//! What the store holds about a certificate.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use time::OffsetDateTime;

use crate::Environment;

impl serde::Serialize for Environment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
use crate::pki::{CertificateMetadata, ExpiryStatus};

/// One stored client certificate. The private key stays sealed in the store; use
/// [`super::Store::private_key`] to unseal it.
#[derive(Debug, Clone)]
pub struct CertificateRecord {
    /// Stable identifier, `cert_` followed by random characters.
    pub id: String,
    /// Unique name that handlers use (`mtlsCertificate: "billing_api"`).
    pub name: String,
    /// Environments the certificate may be used in (at least one, sorted).
    pub environments: Vec<Environment>,
    /// Disabled certificates are refused at resolution time.
    pub enabled: bool,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Parsed leaf metadata.
    pub metadata: CertificateMetadata,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change (environments, enabled flag).
    pub updated_at: OffsetDateTime,
    /// Incremented on every change of this record; part of the identity of pooled connections.
    pub version: i64,
    /// Where the private key lives: sealed in the store, or in a token.
    pub key_location: KeyLocation,
}

/// Where a certificate's private key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// Sealed in the store under the master key.
    Store,
    /// In a PKCS#11 token; the store holds its URI, never the key.
    Token(String),
}

impl KeyLocation {
    /// `store`, or the token key's URI: what `cert list` and `cert show` print.
    pub fn shown(&self) -> &str {
        match self {
            Self::Store => "store",
            Self::Token(uri) => uri,
        }
    }
}

/// A record's private key, as [`super::Store::private_key`] gives it.
#[derive(Debug)]
pub enum StoredKey {
    /// The key, unsealed; it lives only in this process's memory.
    Sealed(PrivateKeyDer<'static>),
    /// The URI of a key in a PKCS#11 token.
    Token(String),
}

/// The JSON shape of a certificate in `cert list --json` and `cert show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateSummary<'a> {
    /// Record id.
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Environments.
    pub environments: Vec<&'static str>,
    /// Enabled flag.
    pub enabled: bool,
    /// Subject DN.
    pub subject: &'a str,
    /// Issuer DN.
    pub issuer: &'a str,
    /// Serial number.
    pub serial: &'a str,
    /// Subject alternative names.
    pub sans: &'a [String],
    /// Key algorithm.
    pub key_type: String,
    /// Key size in bits.
    pub key_bits: u32,
    /// Start of validity (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whole days left until `not_after`.
    pub days_left: i64,
    /// `valid`, `warning`, `critical` or `expired`.
    pub expiry_status: ExpiryStatus,
    /// base64url SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: &'a str,
    /// Hex SHA-256 of the leaf certificate.
    pub fingerprint_sha256: &'a str,
    /// Number of certificates in the chain.
    pub chain_length: usize,
    /// `store`, or the PKCS#11 URI of the key in its token.
    pub key_location: &'a str,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl CertificateRecord {
    /// Whether the certificate may be used in `environment`.
    pub fn allows(&self, environment: Environment) -> bool {
        self.environments.contains(&environment)
    }

    /// The record as reported by `list` and `show`, with expiry computed at `now`.
    pub fn summary(&self, now: OffsetDateTime) -> CertificateSummary<'_> {
        let m = &self.metadata;
        CertificateSummary {
            id: &self.id,
            name: &self.name,
            environments: self.environments.iter().map(|e| e.as_str()).collect(),
            enabled: self.enabled,
            subject: &m.subject,
            issuer: &m.issuer,
            serial: &m.serial,
            sans: &m.sans,
            key_type: m.key_type.to_string(),
            key_bits: m.key_bits,
            not_before: m.not_before,
            not_after: m.not_after,
            days_left: m.days_left(now),
            expiry_status: m.expiry_status(now),
            spki_sha256: &m.spki_sha256,
            fingerprint_sha256: &m.fingerprint_sha256,
            chain_length: self.chain.len(),
            key_location: self.key_location.shown(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A serving host, as registered in the store.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// Random id, `dep_…`.
    pub id: String,
    /// The machine's host name.
    pub hostname: String,
    /// The serving process.
    pub pid: u32,
    /// The config file it serves.
    pub config_path: String,
    /// The environment it runs in.
    pub environment: Environment,
    /// Its listen address.
    pub listen: String,
    /// Certificate names its config references, directly or through variables.
    pub certificates: Vec<String>,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat_at: OffsetDateTime,
}

impl Deployment {
    /// A one-line description for messages: `dep_… (production, /etc/edgemtls.toml on host:pid)`.
    pub fn describe(&self) -> String {
        format!("deployment {} ({}, {} on {} pid {})", self.id, self.environment, self.config_path, self.hostname, self.pid)
    }
}
