//! Answers with the caller's certificate as the SDK parses it, and every identity header as
//! the handler received it, one `key: value` line each.

use edgemtls_guest::{IDENTITY_HEADER_PREFIX, IncomingRequest, Response};

struct CallerEcho;

impl edgemtls_guest::Handler for CallerEcho {
    fn handle(request: IncomingRequest) -> Response {
        let mut out = String::new();
        match request.client_certificate() {
            None => out.push_str("sdk.presented: false\n"),
            Some(certificate) => {
                out.push_str("sdk.presented: true\n");
                out.push_str(&format!("sdk.verified: {}\n", certificate.verified));
                out.push_str(&format!("sdk.subject: {}\n", certificate.subject));
                out.push_str(&format!("sdk.issuer: {}\n", certificate.issuer));
                out.push_str(&format!("sdk.serial: {}\n", certificate.serial));
                out.push_str(&format!("sdk.sans: {}\n", certificate.sans.join(" | ")));
                out.push_str(&format!("sdk.fingerprint: {}\n", certificate.fingerprint_sha256));
                out.push_str(&format!("sdk.spki: {}\n", certificate.spki_sha256));
                out.push_str(&format!("sdk.der_bytes: {}\n", certificate.der.len()));
                out.push_str(&format!("sdk.chain_len: {}\n", certificate.chain.len()));
            }
        }
        for (name, value) in request.headers() {
            let identity = name.starts_with(IDENTITY_HEADER_PREFIX) || name.starts_with("client-cert");
            if identity {
                out.push_str(&format!("header.{name}: {}\n", String::from_utf8_lossy(&value)));
            }
        }
        Response::new(200).with_header("content-type", "text/plain").with_body(out)
    }
}

edgemtls_guest::handler!(CallerEcho);
