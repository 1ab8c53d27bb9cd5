//! The `[tls]` table (serving `listen` over TLS, and how callers authenticate) and the
//! per-route rules for callers.

use std::path::PathBuf;

use serde::Deserialize;

/// Whether callers must present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ClientAuth {
    /// Not asked for.
    #[default]
    None,
    /// Asked for; a caller without one is served and its handler sees "not presented". A
    /// certificate that is presented must verify.
    Optional,
    /// A caller without a valid certificate is refused with 401.
    Required,
}

impl ClientAuth {
    pub(super) fn parse(value: &str) -> Result<Self, String> {
        match value {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!("'{other}' is not one of \"required\", \"optional\", \"none\"")),
        }
    }

    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// The `[tls]` table: `listen` serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Whether callers must present a certificate. Default `none`.
    pub client_auth: ClientAuth,
    /// CA bundles (PEM or DER) that issue callers' certificates.
    pub client_ca: Vec<PathBuf>,
    /// CRLs (PEM or DER) for callers' certificates; a revoked caller is refused.
    pub crl: Vec<PathBuf>,
    /// Callers from a loopback address need no certificate where one is required. Default false.
    pub client_auth_exempt_loopback: bool,
    /// Headers that carry the verified caller's facts to every route, under the names its
    /// consumers read (`caller_headers` and `caller_headers_preset`). Default: none.
    pub caller_headers: Vec<CallerHeader>,
    /// Asking the issuer of a caller's certificate (OCSP, the CRLs it names) whether it is
    /// revoked, as `[[upstreams]] revocation` does for servers. Default: off.
    pub revocation: super::RevocationPolicy,
}

impl TlsListener {
    /// Every file the listener reads: a change to any of them reloads it.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key].into_iter().chain(&self.client_ca).chain(&self.crl)
    }
}

/// What a route asks of its callers beyond the listener's `client_auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerRule {
    /// Stricter than the listener's (never looser). `None`: the listener's.
    pub client_auth: Option<ClientAuth>,
    /// Allowed issuer DNs (RFC 4514, `*` matches any run of characters). Empty: any.
    pub issuers: Vec<String>,
    /// Allowed subject DNs, as `issuers`.
    pub subjects: Vec<String>,
    /// Allowed subject alternative names (`DNS:*.ops.example.com`, `URI:spiffe://…/*`, or
    /// a value without its type). Empty: any.
    pub sans: Vec<String>,
    /// Allowed SHA-256 hashes of the caller's SubjectPublicKeyInfo. Empty: any.
    pub spki_sha256: Vec<[u8; 32]>,
    /// The headers this route's requests carry the caller's facts in: the listener's, then
    /// the route's own (which win for the same name).
    pub headers: Vec<CallerHeader>,
}

/// A fact about the verified caller that a header of `caller_headers` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerField {
    /// Subject DN as nginx's `$ssl_client_s_dn` writes it (RFC 2253: `CN=alice,O=Example`).
    SubjectDn,
    /// The subject's (last) common name, as nginx users derive `$ssl_client_s_dn_cn`.
    SubjectCn,
    /// Issuer DN, as `$ssl_client_i_dn`.
    IssuerDn,
    /// Serial number in upper-case hex, as `$ssl_client_serial` (and `openssl x509 -serial`).
    Serial,
    /// SHA-1 of the certificate, lower-case hex, as `$ssl_client_fingerprint`.
    FingerprintSha1,
    /// SHA-256 of the certificate, lower-case hex.
    FingerprintSha256,
    /// `SUCCESS` for a verified certificate, `NONE` without one, as `$ssl_client_verify`
    /// (callers whose certificate fails are refused before any handler).
    Verify,
    /// The certificate as URL-escaped PEM, as `$ssl_client_escaped_cert`.
    EscapedCert,
    /// The certificate as RFC 9440 writes it (`:base64(DER):`).
    Rfc9440,
    /// SHA-256 of the SubjectPublicKeyInfo, base64url without padding (as `pin_spki_sha256`).
    SpkiSha256,
}

impl CallerField {
    /// Every field, as written in the config.
    pub const ALL: [(&'static str, Self); 10] = [
        ("subject_dn", Self::SubjectDn),
        ("subject_cn", Self::SubjectCn),
        ("issuer_dn", Self::IssuerDn),
        ("serial", Self::Serial),
        ("fingerprint_sha1", Self::FingerprintSha1),
        ("fingerprint_sha256", Self::FingerprintSha256),
        ("verify", Self::Verify),
        ("escaped_cert", Self::EscapedCert),
        ("rfc9440", Self::Rfc9440),
        ("spki_sha256", Self::SpkiSha256),
    ];

    fn parse(value: &str) -> Option<Self> {
        Self::ALL.iter().find(|(name, _)| *name == value).map(|(_, field)| *field)
    }
}

/// One header of `caller_headers`: its name (lower-case) and the fact it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerHeader {
    /// The header name, lower-case.
    pub name: String,
    /// What it carries.
    pub field: CallerField,
}

/// `caller_headers_preset = "nginx"`: the headers nginx configs set from its `$ssl_client_*`
/// variables, under the names their consumers read (ContextForge's `X-SSL-Client-S-DN-CN`,
/// ARCP's `X-Client-Cert`).
const NGINX_PRESET: [(&str, CallerField); 8] = [
    ("x-ssl-client-s-dn", CallerField::SubjectDn),
    ("x-ssl-client-s-dn-cn", CallerField::SubjectCn),
    ("x-ssl-client-i-dn", CallerField::IssuerDn),
    ("x-ssl-client-verify", CallerField::Verify),
    ("x-client-cert-serial", CallerField::Serial),
    ("x-client-cert-fingerprint", CallerField::FingerprintSha1),
    ("x-client-cert", CallerField::EscapedCert),
    ("x-ssl-client-cert", CallerField::EscapedCert),
];

/// Headers a table may not name: the host sets or needs them for themselves.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "forwarded",
];

/// `later` over `earlier`: one header per (folded) name, the later table's field winning.
pub fn merge_caller_headers(earlier: &[CallerHeader], later: &[CallerHeader]) -> Vec<CallerHeader> {
    let mut merged: Vec<CallerHeader> =
        earlier.iter().filter(|e| !later.iter().any(|l| crate::identity_headers::same_name(&l.name, &e.name))).cloned().collect();
    merged.extend(later.iter().cloned());
    merged
}

impl CallerRule {
    /// Whether the route has an allow-list (which implies a certificate is required).
    pub fn has_allow_list(&self) -> bool {
        !(self.issuers.is_empty() && self.subjects.is_empty() && self.sans.is_empty() && self.spki_sha256.is_empty())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsToml {
    cert: String,
    key: String,
    client_auth: Option<String>,
    #[serde(default)]
    client_ca: Vec<String>,
    #[serde(default)]
    crl: Vec<String>,
    #[serde(default)]
    client_auth_exempt_loopback: bool,
    #[serde(default)]
    caller_headers: std::collections::BTreeMap<String, String>,
    caller_headers_preset: Option<String>,
    revocation: Option<String>,
    revocation_soft_fail: Option<bool>,
    revocation_timeout_ms: Option<u64>,
    crl_cache_ttl_s: Option<u64>,
}

impl super::Reader<'_> {
    /// A `caller_headers` table and `caller_headers_preset` of `table` (`tls` or
    /// `routes[N]`): the preset's headers, then the table's (which win for the same name).
    pub(super) fn caller_headers(
        &self,
        table: &str,
        preset: Option<&str>,
        raw: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<CallerHeader>, super::ConfigError> {
        let preset: Vec<CallerHeader> = match preset {
            None => Vec::new(),
            Some("nginx") => NGINX_PRESET.iter().map(|(name, field)| CallerHeader { name: (*name).into(), field: *field }).collect(),
            Some(other) => {
                return Err(self.invalid(
                    format!("{table}.caller_headers_preset"),
                    format!("'{other}' is not a preset; the one there is is \"nginx\""),
                ));
            }
        };
        let mut own: Vec<CallerHeader> = Vec::new();
        for (name, field) in raw {
            let key = format!("{table}.caller_headers.\"{name}\"");
            let Some(field) = CallerField::parse(field) else {
                let fields: Vec<&str> = CallerField::ALL.iter().map(|(name, _)| *name).collect();
                return Err(self.invalid(key, format!("'{field}' is not a caller field; use one of {}", fields.join(", "))));
            };
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(self.invalid(key, "is not a valid header name (letters, digits and - _ . ! # $ % & ' * + ^ ` | ~)".into()));
            }
            let lower = name.to_ascii_lowercase();
            if crate::identity_headers::is_identity_header(&lower) {
                return Err(self.invalid(key, "the host already sets this header for every caller; name another one".into()));
            }
            if RESERVED_HEADERS.iter().any(|reserved| crate::identity_headers::same_name(reserved, &lower)) {
                return Err(self.invalid(key, "this header belongs to the HTTP connection; name another one".into()));
            }
            if let Some(earlier) = own.iter().find(|h| crate::identity_headers::same_name(&h.name, &lower)) {
                return Err(
                    self.invalid(key, format!("names the same header as '{}' (case and _ for - do not make another header)", earlier.name))
                );
            }
            own.push(CallerHeader { name: lower, field });
        }
        Ok(merge_caller_headers(&preset, &own))
    }

    /// The `[tls]` table, its files checked to exist.
    pub(super) fn tls(&self, raw: TlsToml) -> Result<TlsListener, super::ConfigError> {
        let file = |key: &str, path: &str| self.existing_file(&format!("tls.{key}"), path);
        let client_auth = match raw.client_auth.as_deref() {
            None => ClientAuth::None,
            Some(value) => ClientAuth::parse(value).map_err(|reason| self.invalid("tls.client_auth".into(), reason))?,
        };
        let listener = TlsListener {
            cert: file("cert", &raw.cert)?,
            key: file("key", &raw.key)?,
            client_auth,
            client_ca: raw.client_ca.iter().map(|p| file("client_ca", p)).collect::<Result<_, _>>()?,
            crl: raw.crl.iter().map(|p| file("crl", p)).collect::<Result<_, _>>()?,
            client_auth_exempt_loopback: raw.client_auth_exempt_loopback,
            caller_headers: self.caller_headers("tls", raw.caller_headers_preset.as_deref(), &raw.caller_headers)?,
            revocation: self.revocation_policy(
                &|key| format!("tls.{key}"),
                super::revocation_policy::RevocationKeys {
                    mode: raw.revocation.as_deref(),
                    soft_fail: raw.revocation_soft_fail,
                    timeout_ms: raw.revocation_timeout_ms,
                    crl_cache_ttl_s: raw.crl_cache_ttl_s,
                },
            )?,
        };
        if listener.client_auth != ClientAuth::None && listener.client_ca.is_empty() {
            return Err(self.invalid(
                "tls.client_ca".into(),
                format!("client_auth = \"{}\" needs the CA bundle that issues callers' certificates", client_auth.as_str()),
            ));
        }
        if listener.client_auth == ClientAuth::None && listener.revocation.checks() {
            return Err(self.invalid(
                "tls.revocation".into(),
                "checks callers' certificates, but client_auth is \"none\": set \"optional\" or \"required\" (and client_ca)".into(),
            ));
        }
        if listener.client_auth == ClientAuth::None && !(listener.client_ca.is_empty() && listener.crl.is_empty()) {
            return Err(self.invalid(
                "tls.client_auth".into(),
                "client_ca or crl is set but client_auth is \"none\": set \"optional\" or \"required\"".into(),
            ));
        }
        Ok(listener)
    }
}
