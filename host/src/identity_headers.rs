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

/// Whether `name` is one of the identity headers in any spelling a server may read as it:
/// any case, and `_` for `-`. CGI, WSGI and many frameworks fold `client_cert` and
/// `Client-Cert` into the same `HTTP_CLIENT_CERT`, so a caller's `client_cert` beside the
/// host's real `client-cert` would be read as the forged one.
pub fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    same_folded(name, CLIENT_CERT.as_bytes())
        || same_folded(name, CLIENT_CERT_CHAIN.as_bytes())
        || name.get(..PREFIX.len()).is_some_and(|start| same_folded(start, PREFIX.as_bytes()))
}

/// Whether two header names are one header to a server that folds case and `_`.
pub fn same_name(a: &str, b: &str) -> bool {
    same_folded(a.as_bytes(), b.as_bytes())
}

/// Removes every header a caller sent under one of `names` (lower-case), in every spelling.
pub fn remove_named(request_headers: &mut hyper::HeaderMap, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let forged: Vec<hyper::header::HeaderName> =
        request_headers.keys().filter(|name| names.iter().any(|named| same_name(name.as_str(), named))).cloned().collect();
    for name in forged {
        request_headers.remove(name);
    }
}

/// `a` and `b` are equal once both are lower-cased and every `_` is read as `-`.
fn same_folded(a: &[u8], b: &[u8]) -> bool {
    let fold = |byte: u8| if byte == b'_' { b'-' } else { byte.to_ascii_lowercase() };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// Removes every identity header a caller sent, in every spelling: only the host may set
/// them.
pub fn remove_caller_copies(request_headers: &mut hyper::HeaderMap) {
    if request_headers.keys().any(|name| is_identity_header(name.as_str())) {
        let forged: Vec<hyper::header::HeaderName> =
            request_headers.keys().filter(|name| is_identity_header(name.as_str())).cloned().collect();
        for name in forged {
            request_headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_identity_header_is_one() {
        for name in [
            "client-cert",
            "Client-Cert",
            "client_cert",
            "CLIENT_CERT",
            "client_cert-chain",
            "client-cert_chain",
            "edgemtls-client-subject",
            "edgemtls_client_subject",
            "EDGEMTLS_CLIENT-SUBJECT",
            "edgemtls_client_anything",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["client-certs", "clientcert", "x-client-cert", "edgemtls-clientsubject", "edgemtls-server-x", "client"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn caller_copies_go_in_every_spelling_and_others_stay() {
        let mut headers = hyper::HeaderMap::new();
        for name in ["client_cert", "client-cert", "edgemtls_client_subject", "Edgemtls-Client-Verified", "x-tenant"] {
            headers.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a valid name"),
                "forged".parse().expect("a valid value"),
            );
        }
        remove_caller_copies(&mut headers);
        let left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(left, ["x-tenant"]);
    }
}
