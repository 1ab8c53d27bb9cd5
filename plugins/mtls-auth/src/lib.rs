//! `mtls-auth`: admits a caller by its verified client certificate, and by the binding of
//! its bearer token to that certificate, then forwards the request as `url-forward` does.
//!
//! The host has already verified the certificate (`[tls] client_ca`); this handler decides
//! who among the verified callers may pass:
//! - `allowedIssuers`, `allowedSubjects`: `;`-separated DNs (`*` matches any run of
//!   characters; spaces around `=` and `,` and case do not matter). Empty: any.
//! - A bearer token (`Authorization: Bearer <JWT>`) whose claims carry `cnf.x5t#S256` must
//!   match the caller's certificate: RFC 8705's SHA-256 of the certificate, or ARCP's SHA-256
//!   of its public key (SPKI), both base64url. `requireBoundToken = true` also refuses a
//!   request without such a token. The token's signature is not checked here: that is the
//!   upstream's (or its authorization server's) job; this checks only that the token is used
//!   with the certificate it was issued to.
//!
//! Refusals are 401 problems with ARCP's types (`mtls-required`, `mtls-binding-mismatch`) and
//! `mtls-not-allowed`. Then `baseUrl`, `mtlsCertificate` and `forwardClientCert` as in
//! `url-forward`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgemtls_guest::{ClientCertificate, IncomingRequest, Response, config, forward_by_route_options};

struct MtlsAuth;

fn refuse(kind: &str, title: &str, detail: &str) -> Response {
    Response::problem(401, kind, title, detail)
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|&i| rest.is_char_boundary(i)).any(|i| wildcard(tail, &rest[i..]))
        }
    }
}

/// A DN without spaces around `=` and `,`, lower-case.
fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("=")).collect::<Vec<_>>().join(",").to_ascii_lowercase()
}

/// Whether `dn` is among the `;`-separated patterns of option `key` (absent or empty: any).
fn listed(key: &str, dn: &str) -> bool {
    let Some(patterns) = config(key).filter(|p| !p.trim().is_empty()) else { return true };
    let dn = normalize_dn(dn);
    patterns.split(';').map(normalize_dn).any(|pattern| wildcard(&pattern, &dn))
}

/// `cnf.x5t#S256` of the bearer token, if the request carries one with a binding.
fn token_binding(request: &IncomingRequest) -> Result<Option<String>, String> {
    let Some(authorization) = request.header("authorization") else { return Ok(None) };
    let Some(token) = authorization.strip_prefix("Bearer ").or_else(|| authorization.strip_prefix("bearer ")) else {
        return Ok(None);
    };
    let payload = token.split('.').nth(1).ok_or("the bearer token is not a JWT (header.payload.signature)")?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| "the bearer token's payload is not base64url")?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| "the bearer token's payload is not JSON")?;
    Ok(claims["cnf"]["x5t#S256"].as_str().map(str::to_string))
}

/// Whether `binding` names `certificate`: by certificate hash (RFC 8705) or SPKI hash (ARCP).
fn bound_to(binding: &str, certificate: &ClientCertificate) -> bool {
    let binding = binding.trim_end_matches('=');
    let fingerprint: Option<Vec<u8>> = (0..certificate.fingerprint_sha256.len())
        .step_by(2)
        .map(|i| certificate.fingerprint_sha256.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    let certificate_hash = fingerprint.map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    certificate_hash.as_deref() == Some(binding) || certificate.spki_sha256 == binding
}

impl edgemtls_guest::Handler for MtlsAuth {
    fn handle(request: IncomingRequest) -> Response {
        let Some(base) = config("baseUrl").filter(|b| !b.is_empty()) else {
            return Response::problem(500, "handler-config", "mtls-auth is misconfigured", "option baseUrl is required");
        };
        let Some(certificate) = request.client_certificate().filter(|c| c.verified) else {
            return refuse("mtls-required", "Client Certificate Required", "this route requires a verified client certificate");
        };
        if !listed("allowedIssuers", &certificate.issuer) {
            return refuse(
                "mtls-not-allowed",
                "Client Certificate Not Allowed",
                &format!("issuer '{}' is not allowed here", certificate.issuer),
            );
        }
        if !listed("allowedSubjects", &certificate.subject) {
            return refuse(
                "mtls-not-allowed",
                "Client Certificate Not Allowed",
                &format!("subject '{}' is not allowed here", certificate.subject),
            );
        }
        match token_binding(&request) {
            Err(why) => return refuse("mtls-binding-mismatch", "Certificate Mismatch", &why),
            Ok(Some(binding)) if !bound_to(&binding, &certificate) => {
                return refuse(
                    "mtls-binding-mismatch",
                    "Certificate Mismatch",
                    "the client certificate does not match the token's binding (cnf.x5t#S256)",
                );
            }
            Ok(None) if config("requireBoundToken").is_some_and(|v| v.eq_ignore_ascii_case("true")) => {
                return refuse(
                    "mtls-binding-mismatch",
                    "Certificate Mismatch",
                    "this route requires a bearer token bound to the client certificate (cnf.x5t#S256)",
                );
            }
            Ok(_) => {}
        }
        let url = format!("{}{}", base.trim_end_matches('/'), request.path_with_query());
        forward_by_route_options(request, &url).into()
    }
}

edgemtls_guest::handler!(MtlsAuth);
