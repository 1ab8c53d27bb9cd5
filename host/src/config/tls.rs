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
    fn parse(value: &str) -> Result<Self, String> {
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
}

impl super::Reader<'_> {
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
        };
        if listener.client_auth != ClientAuth::None && listener.client_ca.is_empty() {
            return Err(self.invalid(
                "tls.client_ca".into(),
                format!("client_auth = \"{}\" needs the CA bundle that issues callers' certificates", client_auth.as_str()),
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

    /// A route's rule for callers (its `client_auth` and `allowed_client_*` keys, taken from
    /// `raw`); `listener` is the `[tls]` table, if any.
    pub(super) fn caller_rule(
        &self,
        key: &dyn Fn(&str) -> String,
        raw: &mut super::RouteToml,
        listener: Option<&TlsListener>,
    ) -> Result<CallerRule, super::ConfigError> {
        let client_auth = raw
            .client_auth
            .as_deref()
            .map(|value| ClientAuth::parse(value).map_err(|reason| self.invalid(key("client_auth"), reason)))
            .transpose()?;
        let mut spki_sha256 = Vec::new();
        for (n, pin) in raw.allowed_client_spki_sha256.iter().enumerate() {
            spki_sha256.push(
                super::decode_spki_pin(pin)
                    .ok_or_else(|| self.invalid(key(&format!("allowed_client_spki_sha256[{n}]")), format!("'{pin}' is not a base64url SHA-256 (43 characters)")))?,
            );
        }
        let rule = CallerRule {
            client_auth,
            issuers: std::mem::take(&mut raw.allowed_client_issuers),
            subjects: std::mem::take(&mut raw.allowed_client_subjects),
            sans: std::mem::take(&mut raw.allowed_client_sans),
            spki_sha256,
        };
        let listener_auth = listener.map_or(ClientAuth::None, |l| l.client_auth);
        if let Some(route_auth) = rule.client_auth
            && route_auth < listener_auth
        {
            return Err(self.invalid(
                key("client_auth"),
                format!(
                    "\"{}\" is looser than the listener's client_auth = \"{}\"; a route may only be stricter",
                    route_auth.as_str(),
                    listener_auth.as_str()
                ),
            ));
        }
        let asks_for_certificates = rule.client_auth.is_some_and(|a| a != ClientAuth::None) || rule.has_allow_list();
        if asks_for_certificates && listener_auth == ClientAuth::None {
            return Err(self.invalid(
                key(if rule.client_auth.is_some() { "client_auth" } else { "allowed_client_*" }),
                "callers can only present certificates when [tls] sets client_auth = \"optional\" (or \"required\") and client_ca".into(),
            ));
        }
        Ok(rule)
    }
}
