//! `[[upstreams]]`: the trust each upstream host gets (CA bundle, verification, CRLs, pins,
//! revocation, TLS versions), its keys as written, and how they are read and checked.

use std::path::PathBuf;

use serde::Deserialize;

use super::revocation_policy::RevocationKeys;
use super::{ConfigError, Reader, RevocationPolicy, decode_spki_pin};
use crate::authority::Authority;

/// Trust settings for upstream servers whose authority is in `hosts`.
#[derive(Debug, Clone)]
pub struct UpstreamTrust {
    /// `host:port` authorities, or `*` alone for every upstream no other entry lists.
    pub hosts: Vec<String>,
    /// Extra CA certificates (PEM) trusted for these hosts, besides the public web roots.
    pub ca_bundle: Option<PathBuf>,
    /// Verify the server's certificate chain. Default true; `false` is refused in production.
    pub verify: bool,
    /// Check that the certificate names the host. Default true; `false` is refused in production.
    pub check_hostname: bool,
    /// Certificate revocation lists (PEM or DER); a revoked server certificate is refused.
    pub crl: Vec<PathBuf>,
    /// Accepted SHA-256 pins (base64url, no padding) of the server's SubjectPublicKeyInfo;
    /// when set, a server whose key matches none is refused. Default: no pinning.
    pub pin_spki_sha256: Vec<[u8; 32]>,
    /// Asking the server certificate's issuer, on each new connection, whether it is revoked.
    pub revocation: RevocationPolicy,
    /// The TLS versions spoken with these hosts. Default: TLS 1.3, and 1.2 with a server
    /// that has no 1.3.
    pub tls_versions: TlsVersions,
}

/// The TLS versions an `[[upstreams]]` entry allows (`tls_versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.3, and TLS 1.2 with a server that has no 1.3.
    #[default]
    Both,
    /// TLS 1.2 only, as nginx before 1.23.4 speaks to upstreams unless told otherwise. A
    /// resumed TLS 1.2 session exchanges no new keys (it has no forward secrecy), and the
    /// client certificate crosses the network unencrypted.
    Tls12Only,
    /// TLS 1.3 only: a server that has only TLS 1.2 is refused.
    Tls13Only,
}

impl TlsVersions {
    /// What rustls is told.
    pub fn rustls(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            Self::Both => rustls::DEFAULT_VERSIONS,
            Self::Tls12Only => TLS12_ONLY,
            Self::Tls13Only => TLS13_ONLY,
        }
    }

    /// From the list as written (`["1.2", "1.3"]`), or why not.
    fn from_list(list: &[String]) -> Result<Self, String> {
        let (mut tls12, mut tls13) = (false, false);
        for version in list {
            match version.as_str() {
                "1.2" => tls12 = true,
                "1.3" => tls13 = true,
                other => {
                    return Err(format!("'{other}' is not a TLS version edgemtls speaks; write \"1.2\", \"1.3\" or both"));
                }
            }
        }
        match (tls12, tls13) {
            (true, true) => Ok(Self::Both),
            (true, false) => Ok(Self::Tls12Only),
            (false, true) => Ok(Self::Tls13Only),
            (false, false) => Err("must name at least one version: \"1.2\", \"1.3\" or both".into()),
        }
    }
}

impl UpstreamTrust {
    /// Whether this entry weakens verification (`verify = false` or `check_hostname = false`).
    pub fn is_weakened(&self) -> bool {
        !self.verify || !self.check_hostname
    }

    /// An entry for these hosts with every default (full verification, no extra trust).
    pub fn for_hosts(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            ca_bundle: None,
            verify: true,
            check_hostname: true,
            crl: Vec::new(),
            pin_spki_sha256: Vec::new(),
            revocation: RevocationPolicy::default(),
            tls_versions: TlsVersions::Both,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamToml {
    hosts: Vec<String>,
    ca_bundle: Option<String>,
    verify: Option<bool>,
    check_hostname: Option<bool>,
    #[serde(default)]
    crl: Vec<String>,
    #[serde(default)]
    pin_spki_sha256: Vec<String>,
    revocation: Option<String>,
    revocation_soft_fail: Option<bool>,
    revocation_timeout_ms: Option<u64>,
    crl_cache_ttl_s: Option<u64>,
    tls_versions: Option<Vec<String>>,
}

impl Reader<'_> {
    /// One `[[upstreams]]` entry; `earlier` are the entries before it.
    pub(super) fn upstream(&self, index: usize, upstream: UpstreamToml, earlier: &[UpstreamTrust]) -> Result<UpstreamTrust, ConfigError> {
        let invalid = |key: String, reason: String| self.invalid(key, reason);
        if upstream.hosts.is_empty() {
            return Err(invalid(format!("upstreams[{index}].hosts"), "must name at least one host:port".into()));
        }
        let key = |field: &str| format!("upstreams[{index}].{field}");
        let existing = |field: &str, path: String| self.existing_file(&key(field), &path);
        let revocation = self.revocation_policy(
            &key,
            RevocationKeys {
                mode: upstream.revocation.as_deref(),
                soft_fail: upstream.revocation_soft_fail,
                timeout_ms: upstream.revocation_timeout_ms,
                crl_cache_ttl_s: upstream.crl_cache_ttl_s,
            },
        )?;
        let tls_versions = match &upstream.tls_versions {
            Some(list) => TlsVersions::from_list(list).map_err(|reason| invalid(key("tls_versions"), reason))?,
            None => TlsVersions::Both,
        };
        let ca_bundle = upstream.ca_bundle.map(|p| existing("ca_bundle", p)).transpose()?;
        let crl = upstream.crl.into_iter().map(|p| existing("crl", p)).collect::<Result<Vec<_>, _>>()?;
        let mut pins = Vec::new();
        for pin in &upstream.pin_spki_sha256 {
            let bytes = decode_spki_pin(pin)
                .ok_or_else(|| invalid(key("pin_spki_sha256"), format!("'{pin}' is not a base64url SHA-256 (43 characters)")))?;
            pins.push(bytes);
        }
        let mut hosts = Vec::new();
        for (position, host) in upstream.hosts.iter().enumerate() {
            let host = upstream_host(host).map_err(|reason| invalid(format!("upstreams[{index}].hosts[{position}]"), reason))?;
            if host == DEFAULT_UPSTREAM && upstream.hosts.len() > 1 {
                return Err(invalid(
                    format!("upstreams[{index}].hosts"),
                    "\"*\" (every upstream not listed elsewhere) must be alone in its entry".into(),
                ));
            }
            if let Some(other) = earlier.iter().position(|u: &UpstreamTrust| u.hosts.contains(&host)) {
                return Err(invalid(
                    format!("upstreams[{index}].hosts[{position}]"),
                    format!("'{host}' is already in upstreams[{other}]; one entry per host"),
                ));
            }
            hosts.push(host);
        }
        Ok(UpstreamTrust {
            hosts,
            ca_bundle,
            verify: upstream.verify.unwrap_or(true),
            check_hostname: upstream.check_hostname.unwrap_or(true),
            crl,
            pin_spki_sha256: pins,
            revocation,
            tls_versions,
        })
    }
}

/// The `hosts` entry that gives trust to every upstream no other entry lists.
pub const DEFAULT_UPSTREAM: &str = "*";

/// Checks one `[[upstreams]] hosts` entry and returns it normalised (lower case). Entries
/// that could never match a request are refused with the fix, not silently ignored.
fn upstream_host(host: &str) -> Result<String, String> {
    let trimmed = host.trim();
    if trimmed == DEFAULT_UPSTREAM {
        return Ok(DEFAULT_UPSTREAM.to_string());
    }
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let authority = rest.split('/').next().unwrap_or_default();
        return Err(format!("'{host}' has a scheme ({scheme}://); write the host and port alone, like '{authority}'"));
    }
    if trimmed.contains('*') {
        return Err(format!(
            "'{host}': wildcards are not supported; list each host:port, or use \"*\" alone for every upstream not listed"
        ));
    }
    let authority = Authority::parse(trimmed).ok_or_else(|| format!("'{host}' is not a host:port like 'billing.internal:8443'"))?;
    let has_port = trimmed.parse::<http::uri::Authority>().is_ok_and(|a| a.port_u16().is_some());
    if !has_port {
        return Err(format!("'{host}' has no port; write '{host}:443' or the port the upstream listens on"));
    }
    Ok(authority.to_string())
}
