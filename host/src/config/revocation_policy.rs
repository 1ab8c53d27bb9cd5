//! Revocation checking as the config sets it: which sources are asked, and how patiently.
//! Plain data that `revocation` (which does the asking) and `upstream` read.

use std::time::Duration;

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
