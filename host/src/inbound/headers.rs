//! The request headers that carry a caller's identity to handlers, named once. The host
//! removes every caller-sent copy of them (on every listener) before it sets its own, so a
//! handler can trust what it reads. The guest SDK reads the same names
//! (`edgemtls_guest::ClientCertificate`).

/// RFC 9440: the caller's certificate, a structured-field byte sequence (`:base64(DER):`).
pub const CLIENT_CERT: &str = "client-cert";
/// RFC 9440: the rest of the chain the caller sent, comma-separated byte sequences.
pub const CLIENT_CERT_CHAIN: &str = "client-cert-chain";
/// Every other identity header starts with this.
pub const PREFIX: &str = "edgemtls-client-";
/// `true` when the caller presented a certificate, else `false`.
pub const PRESENTED: &str = "edgemtls-client-cert-presented";
/// `true` when it verified against `client_ca` and the CRLs.
pub const VERIFIED: &str = "edgemtls-client-cert-verified";
/// Why it did not verify (`expired`, `unknown-issuer`, …); only with `verified: false`.
pub const ERROR: &str = "edgemtls-client-cert-error";
/// Subject DN, RFC 4514.
pub const SUBJECT: &str = "edgemtls-client-subject";
/// Issuer DN, RFC 4514.
pub const ISSUER: &str = "edgemtls-client-issuer";
/// Serial number, lower-case hex.
pub const SERIAL: &str = "edgemtls-client-serial";
/// Subject alternative names, `, `-separated (`DNS:a.example, URI:spiffe://…`).
pub const SANS: &str = "edgemtls-client-sans";
/// RFC 3339.
pub const NOT_BEFORE: &str = "edgemtls-client-not-before";
/// RFC 3339.
pub const NOT_AFTER: &str = "edgemtls-client-not-after";
/// SHA-256 of the certificate (DER), lower-case hex: `openssl x509 -fingerprint -sha256`
/// without the colons.
pub const FINGERPRINT_SHA256: &str = "edgemtls-client-fingerprint-sha256";
/// SHA-256 of the SubjectPublicKeyInfo, base64url without padding (as `pin_spki_sha256`,
/// ARCP's key binding and `allowed_client_spki_sha256` write it).
pub const SPKI_SHA256: &str = "edgemtls-client-spki-sha256";

/// Whether `name` is one of the identity headers (any case).
pub fn is_identity_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(CLIENT_CERT)
        || name.eq_ignore_ascii_case(CLIENT_CERT_CHAIN)
        || name.get(..PREFIX.len()).is_some_and(|start| start.eq_ignore_ascii_case(PREFIX))
}

/// Removes every identity header a caller sent: only the host may set them.
pub fn remove_caller_copies(request_headers: &mut hyper::HeaderMap) {
    request_headers.remove(CLIENT_CERT);
    request_headers.remove(CLIENT_CERT_CHAIN);
    if request_headers.keys().any(|name| name.as_str().starts_with(PREFIX)) {
        let forged: Vec<hyper::header::HeaderName> =
            request_headers.keys().filter(|name| name.as_str().starts_with(PREFIX)).cloned().collect();
        for name in forged {
            request_headers.remove(name);
        }
    }
}
