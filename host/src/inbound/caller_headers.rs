//! `caller_headers`: the verified caller's facts under the header names their consumers
//! read (nginx's `$ssl_client_*` variables, ContextForge's `PROXY_USER_HEADER`, ARCP's
//! `MTLS_CERT_HEADER`). The names are removed from what callers send, in every spelling, on
//! every request (`server/request.rs`), before these are set.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::Caller;
use crate::config::{CallerField, CallerHeader};

/// What nginx's `$ssl_client_escaped_cert` leaves as it is (`ngx_escape_uri` with
/// `NGX_ESCAPE_URI_COMPONENT`): letters, digits and `-` `.` `_` `~`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Sets `headers` for `caller` (`None` on the plain-HTTP listener): each with its value, or
/// left out when the caller has no such fact (no certificate, no common name), as nginx
/// leaves out a header whose variable is empty.
pub fn apply(headers: &[CallerHeader], caller: Option<&Caller>, request_headers: &mut hyper::HeaderMap) {
    for header in headers {
        let Ok(name) = HeaderName::from_bytes(header.name.as_bytes()) else { continue };
        if let Some(value) = value(header.field, caller).and_then(|v| HeaderValue::try_from(v).ok()) {
            request_headers.insert(name, value);
        }
    }
}

fn value(field: CallerField, caller: Option<&Caller>) -> Option<String> {
    let caller = caller?;
    let leaf = caller.leaf();
    let Some(certificate) = caller.certificate.as_ref().filter(|c| c.verdict.is_ok()) else {
        // A certificate that did not verify never reaches a handler (it is refused with 401).
        return (field == CallerField::Verify && leaf.is_none()).then(|| "NONE".into());
    };
    let leaf = leaf?;
    Some(match field {
        CallerField::SubjectDn => certificate.subject.clone(),
        CallerField::SubjectCn => certificate.subject_cn.clone()?,
        CallerField::IssuerDn => certificate.issuer.clone(),
        CallerField::Serial => nginx_serial(&certificate.serial),
        CallerField::FingerprintSha1 => hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf).as_ref()),
        CallerField::FingerprintSha256 => certificate.fingerprint_sha256.clone(),
        CallerField::Verify => "SUCCESS".into(),
        CallerField::EscapedCert => utf8_percent_encode(&pem(leaf), URI_COMPONENT).to_string(),
        CallerField::Rfc9440 => format!(":{}:", STANDARD.encode(leaf)),
        CallerField::SpkiSha256 => URL_SAFE_NO_PAD.encode(certificate.spki_sha256),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The serial as `i2a_ASN1_INTEGER` prints it (nginx, `openssl x509 -serial`): upper-case,
/// without the sign byte DER adds before a high bit.
fn nginx_serial(lower_hex: &str) -> String {
    let digits = match lower_hex.strip_prefix("00") {
        Some(rest) if !rest.is_empty() => rest,
        _ => lower_hex,
    };
    digits.to_ascii_uppercase()
}

/// PEM as OpenSSL writes it: 64 characters a line, each line ending in `\n`.
fn pem(der: &[u8]) -> String {
    let base64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_as_openssl_prints_them() {
        assert_eq!(nginx_serial("00ff01"), "FF01");
        assert_eq!(nginx_serial("0a1b"), "0A1B");
        assert_eq!(nginx_serial("00"), "00");
    }

    #[test]
    fn escaping_keeps_only_unreserved_characters() {
        let escaped = utf8_percent_encode("-----BEGIN CERTIFICATE-----\nMI+/=\n", URI_COMPONENT).to_string();
        assert_eq!(escaped, "-----BEGIN%20CERTIFICATE-----%0AMI%2B%2F%3D%0A");
    }
}
