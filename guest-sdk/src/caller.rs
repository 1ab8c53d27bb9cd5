//! The caller's client certificate, as the host verified it on the TLS listener.
//!
//! The host removes every copy of these headers a caller sends and sets its own, so a
//! handler can trust them. The names are the host's (`edgemtls_host::identity_headers`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// RFC 9440 `Client-Cert`.
pub const CLIENT_CERT: &str = "client-cert";
/// RFC 9440 `Client-Cert-Chain`.
pub const CLIENT_CERT_CHAIN: &str = "client-cert-chain";
/// Every other identity header the host sets starts with this.
pub const IDENTITY_HEADER_PREFIX: &str = "edgemtls-client-";
const PRESENTED: &str = "edgemtls-client-cert-presented";
const VERIFIED: &str = "edgemtls-client-cert-verified";
const SUBJECT: &str = "edgemtls-client-subject";
const ISSUER: &str = "edgemtls-client-issuer";
const SERIAL: &str = "edgemtls-client-serial";
const SANS: &str = "edgemtls-client-sans";
const NOT_BEFORE: &str = "edgemtls-client-not-before";
const NOT_AFTER: &str = "edgemtls-client-not-after";
const FINGERPRINT_SHA256: &str = "edgemtls-client-fingerprint-sha256";
const SPKI_SHA256: &str = "edgemtls-client-spki-sha256";

/// The certificate the caller presented. A handler only runs for a caller whose
/// certificate verified (the host refuses the others with 401), so `verified` is true here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Whether it verified against the listener's `client_ca` and CRLs.
    pub verified: bool,
    /// Subject DN, RFC 4514 (`CN=deploy-bot,O=Example`).
    pub subject: String,
    /// Issuer DN, RFC 4514.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Subject alternative names (`DNS:…`, `URI:…`, `IP:…`, `email:…`).
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// SHA-256 of the certificate, lower-case hex.
    pub fingerprint_sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo, base64url without padding.
    pub spki_sha256: String,
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// The rest of the chain the caller sent (DER), in order.
    pub chain: Vec<Vec<u8>>,
}

impl ClientCertificate {
    /// From a request's headers; `None` when the caller presented no certificate (or the
    /// request did not come over the TLS listener).
    pub(crate) fn from_headers(header: impl Fn(&str) -> Option<String>) -> Option<Self> {
        if header(PRESENTED).as_deref() != Some("true") {
            return None;
        }
        let text = |name: &str| header(name).unwrap_or_default();
        let der = byte_sequences(&text(CLIENT_CERT)).into_iter().next().unwrap_or_default();
        Some(Self {
            verified: header(VERIFIED).as_deref() == Some("true"),
            subject: text(SUBJECT),
            issuer: text(ISSUER),
            serial: text(SERIAL),
            sans: text(SANS).split(", ").filter(|s| !s.is_empty()).map(str::to_string).collect(),
            not_before: text(NOT_BEFORE),
            not_after: text(NOT_AFTER),
            fingerprint_sha256: text(FINGERPRINT_SHA256),
            spki_sha256: text(SPKI_SHA256),
            der,
            chain: byte_sequences(&text(CLIENT_CERT_CHAIN)),
        })
    }
}

/// The byte sequences of an RFC 8941 list (`:base64:, :base64:`); malformed members are skipped.
fn byte_sequences(value: &str) -> Vec<Vec<u8>> {
    value
        .split(',')
        .filter_map(|member| member.trim().strip_prefix(':')?.strip_suffix(':').map(str::to_string))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect()
}

/// Whether `name` is an identity header: those are for this hop, and go upstream only when
/// a handler asks ([`crate::forward_with_client_cert`]). Any case, and `_` for `-`, as the
/// host strips them: servers that fold the two would read `client_cert` as `client-cert`.
pub(crate) fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    same_folded(name, CLIENT_CERT.as_bytes())
        || same_folded(name, CLIENT_CERT_CHAIN.as_bytes())
        || name.get(..IDENTITY_HEADER_PREFIX.len()).is_some_and(|start| same_folded(start, IDENTITY_HEADER_PREFIX.as_bytes()))
}

/// `a` and `b` are equal once both are lower-cased and every `_` is read as `-`.
fn same_folded(a: &[u8], b: &[u8]) -> bool {
    let fold = |byte: u8| if byte == b'_' { b'-' } else { byte.to_ascii_lowercase() };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}
