//! Whether a caller may reach a route: the listener's `client_auth`, the route's stricter
//! rule and allow-lists, and the loopback exemption.

use std::net::IpAddr;

use super::caller::{Caller, CallerProblem, PresentedCertificate};
use crate::config::{CallerRule, ClientAuth};

/// The listener's side of the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenerRule {
    /// `[tls] client_auth`.
    pub client_auth: ClientAuth,
    /// `[tls] client_auth_exempt_loopback`.
    pub exempt_loopback: bool,
}

/// Admits `caller`, connected from `peer`, to a route with `rule`, or says why not.
///
/// A presented certificate must verify, whatever the mode: a handler never sees facts from
/// a certificate that did not. Where one is required, a loopback caller without one is
/// admitted only when the listener exempts loopback and the route has no allow-list (an
/// allow-list names certificates, so it always needs one).
pub fn admit(listener: ListenerRule, rule: &CallerRule, peer: IpAddr, caller: &Caller) -> Result<(), CallerProblem> {
    match &caller.certificate {
        Some(certificate) => {
            certificate.verdict.clone()?;
            allowed(rule, certificate)
        }
        None => {
            let required = rule.has_allow_list() || listener.client_auth.max(rule.client_auth.unwrap_or_default()) == ClientAuth::Required;
            let exempt = listener.exempt_loopback && peer.is_loopback() && !rule.has_allow_list();
            if required && !exempt { Err(CallerProblem::Required) } else { Ok(()) }
        }
    }
}

/// Every allow-list the route sets must include the certificate.
fn allowed(rule: &CallerRule, certificate: &PresentedCertificate) -> Result<(), CallerProblem> {
    let refuse = |why: String| Err(CallerProblem::NotAllowed(why));
    if !rule.issuers.is_empty() && !rule.issuers.iter().any(|p| dn_matches(p, &certificate.issuer)) {
        return refuse(format!("its issuer '{}' is not in allowed_client_issuers", certificate.issuer));
    }
    if !rule.subjects.is_empty() && !rule.subjects.iter().any(|p| dn_matches(p, &certificate.subject)) {
        return refuse(format!("its subject '{}' is not in allowed_client_subjects", certificate.subject));
    }
    if !rule.sans.is_empty() && !certificate.sans.iter().any(|san| rule.sans.iter().any(|p| san_matches(p, san))) {
        let names = if certificate.sans.is_empty() { "none".to_string() } else { certificate.sans.join(", ") };
        return refuse(format!("none of its names ({names}) is in allowed_client_sans"));
    }
    if !rule.spki_sha256.is_empty() && !rule.spki_sha256.contains(&certificate.spki_sha256) {
        return refuse("its public key is not in allowed_client_spki_sha256".into());
    }
    Ok(())
}

/// DNs compare without the spaces people write around `=` and after `,`, ignoring case,
/// in either RDN order (RFC 4514 writes the last RDN first; `openssl x509 -subject` prints
/// them in certificate order).
fn dn_matches(pattern: &str, dn: &str) -> bool {
    let rdns = |text: &str| -> Vec<String> {
        split_rdns(text)
            .into_iter()
            .map(|part| match part.split_once('=') {
                Some((kind, value)) => format!("{}={}", kind.trim(), value.trim()),
                None => part.trim().to_string(),
            })
            .map(|part| part.to_ascii_lowercase())
            .collect()
    };
    let pattern = rdns(pattern).join(",");
    let mut dn = rdns(dn);
    if wildcard_matches(&pattern, &dn.join(",")) {
        return true;
    }
    dn.reverse();
    wildcard_matches(&pattern, &dn.join(","))
}

/// The RDNs of a DN string, split at commas that are not escaped.
fn split_rdns(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `DNS:*.example.com` matches that SAN; a pattern without a type matches any SAN's value.
fn san_matches(pattern: &str, san: &str) -> bool {
    let has_type = ["DNS:", "URI:", "IP:", "email:"].iter().any(|t| pattern.len() > t.len() && pattern[..t.len()].eq_ignore_ascii_case(t));
    if has_type {
        wildcard_matches(&pattern.to_ascii_lowercase(), &san.to_ascii_lowercase())
    } else {
        let value = san.split_once(':').map_or(san, |(_, value)| value);
        wildcard_matches(&pattern.to_ascii_lowercase(), &value.to_ascii_lowercase())
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard_matches("*.ops.example.com", "a.b.ops.example.com"));
        assert!(!wildcard_matches("*.ops.example.com", "ops.example.com.evil"));
        assert!(wildcard_matches("spiffe://example.org/*", "spiffe://example.org/ns/a"));
        assert!(wildcard_matches("exact", "exact"));
        assert!(!wildcard_matches("exact", "exactly"));
        assert!(wildcard_matches("a*b*c", "aXXbYYc"));
        assert!(!wildcard_matches("a*b*c", "aXXcYYb"));
        assert!(!wildcard_matches("ab*ba", "aba"));
    }

    #[test]
    fn dns_compare_without_spaces_or_case() {
        assert!(dn_matches("CN = Ops CA, O = Example", "cn=Ops CA,o=Example"));
        assert!(dn_matches("CN=deploy-*,O=Example", "CN=deploy-bot,O=Example"));
        assert!(!dn_matches("CN=deploy-*,O=Example", "CN=deploy-bot,O=Other"));
        assert!(dn_matches("CN = deploy-bot, O = Example", "O=Example,CN=deploy-bot"), "certificate order matches RFC 4514 order");
        assert!(dn_matches("O=A\\, Inc.,CN=x", "O=A\\, Inc.,CN=x"), "escaped commas stay in their RDN");
    }

    #[test]
    fn sans_match_with_or_without_their_type() {
        assert!(san_matches("DNS:*.ops.example.com", "DNS:a.ops.example.com"));
        assert!(!san_matches("URI:*.ops.example.com", "DNS:a.ops.example.com"));
        assert!(san_matches("spiffe://example.org/*", "URI:spiffe://example.org/agent"));
    }
}
