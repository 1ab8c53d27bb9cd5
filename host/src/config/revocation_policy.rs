//! Revocation checking as the config sets it: which sources are asked, and how patiently.
//! Plain data that `revocation` (which does the asking) and `upstream` read, and how the keys
//! of `[[upstreams]]` entries and `[tls]` that set it are read.

use std::time::Duration;

use super::{ConfigError, Reader};

/// Which sources an upstream's server certificate (or a caller's) is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationMode {
    /// No check beyond the entry's `crl` files (the default).
    #[default]
    Off,
    /// The CRLs the certificate's distribution points name.
    Crl,
    /// OCSP: a stapled response, else the responder the certificate names.
    Ocsp,
    /// OCSP first; the CRLs when OCSP gives no answer.
    Both,
}

/// An `[[upstreams]]` entry's or `[tls]`'s revocation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    /// Which sources are asked.
    pub mode: RevocationMode,
    /// Let a connection through when no source answers (logged and counted). Default false.
    pub soft_fail: bool,
    /// How long one source gets to answer. Default 3 s.
    pub timeout: Duration,
    /// How long a fetched CRL is used before it is fetched again (sooner at its nextUpdate).
    /// Default one hour.
    pub crl_cache_ttl: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        Self { mode: RevocationMode::Off, soft_fail: false, timeout: Duration::from_secs(3), crl_cache_ttl: Duration::from_secs(3600) }
    }
}

impl RevocationPolicy {
    /// Whether connections are checked at all.
    pub fn checks(&self) -> bool {
        self.mode != RevocationMode::Off
    }
}

/// The revocation keys as written, in `[[upstreams]]` entries and `[tls]` alike.
pub(super) struct RevocationKeys<'a> {
    pub(super) mode: Option<&'a str>,
    pub(super) soft_fail: Option<bool>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) crl_cache_ttl_s: Option<u64>,
}

impl Reader<'_> {
    /// An `[[upstreams]]` entry's or `[tls]`'s `revocation`, `revocation_soft_fail`,
    /// `revocation_timeout_ms` and `crl_cache_ttl_s`, each within its range.
    pub(super) fn revocation_policy(
        &self,
        key: &dyn Fn(&str) -> String,
        upstream: RevocationKeys<'_>,
    ) -> Result<RevocationPolicy, ConfigError> {
        let mut policy = RevocationPolicy::default();
        if let Some(mode) = upstream.mode {
            policy.mode = match mode {
                "off" => RevocationMode::Off,
                "crl" => RevocationMode::Crl,
                "ocsp" => RevocationMode::Ocsp,
                "both" => RevocationMode::Both,
                other => return Err(self.invalid(key("revocation"), format!("'{other}' is not one of off, crl, ocsp, both"))),
            };
        }
        let set = upstream.soft_fail.is_some() || upstream.timeout_ms.is_some() || upstream.crl_cache_ttl_s.is_some();
        if set && policy.mode == RevocationMode::Off {
            return Err(self.invalid(
                key("revocation"),
                "revocation settings are given but revocation is off: set revocation = \"crl\", \"ocsp\" or \"both\"".into(),
            ));
        }
        policy.soft_fail = upstream.soft_fail.unwrap_or(false);
        if let Some(ms) = upstream.timeout_ms {
            if !(100..=60_000).contains(&ms) {
                return Err(self.invalid(key("revocation_timeout_ms"), format!("{ms} is out of range: use 100 to 60000")));
            }
            policy.timeout = Duration::from_millis(ms);
        }
        if let Some(seconds) = upstream.crl_cache_ttl_s {
            if !(1..=604_800).contains(&seconds) {
                return Err(self.invalid(key("crl_cache_ttl_s"), format!("{seconds} is out of range: use 1 to 604800 (a week)")));
            }
            policy.crl_cache_ttl = Duration::from_secs(seconds);
        }
        Ok(policy)
    }
}
