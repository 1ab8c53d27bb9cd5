//! The `host:port` an upstream request goes to: the key of trust profiles, connection pools,
//! egress rules and every message about an upstream.

use std::fmt;
use std::net::IpAddr;

/// An upstream's `host:port`: the host in lower case, an IPv6 literal in its brackets (as
/// in a URL), the port always present (the scheme's default when the URL has none). Sockets
/// and TLS server names take [`Authority::bare_host`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    host: String,
    port: u16,
}

impl Authority {
    /// Where a request to `uri` goes; `None` when the URL has no host.
    pub fn of(uri: &http::Uri) -> Option<Self> {
        let host = uri.host().filter(|h| !h.is_empty())?;
        Some(Self { host: host.to_ascii_lowercase(), port: uri.port_u16().unwrap_or(default_port(uri.scheme_str())) })
    }

    /// Parses `host:port` (`host` alone means port 443); `None` when it is not an authority
    /// or carries user information.
    pub fn parse(text: &str) -> Option<Self> {
        let parsed: http::uri::Authority = text.trim().parse().ok()?;
        if parsed.as_str().contains('@') || parsed.host().is_empty() {
            return None;
        }
        Some(Self { host: parsed.host().to_ascii_lowercase(), port: parsed.port_u16().unwrap_or(443) })
    }

    /// The host as in a URL: an IPv6 literal keeps its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as a socket address or a TLS server name wants it: no brackets.
    pub fn bare_host(&self) -> &str {
        self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.host)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.bare_host().parse().ok()
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The port a URL of `scheme` means when it names none: 80 for http, else 443.
pub fn default_port(scheme: Option<&str>) -> u16 {
    if scheme.is_some_and(|s| s.eq_ignore_ascii_case("http")) { 80 } else { 443 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn ipv6_literals_keep_their_brackets_and_sockets_get_the_bare_address() {
        let uri: http::Uri = "https://[::1]:8443/path".parse().unwrap();
        let authority = Authority::of(&uri).unwrap();
        assert_eq!(authority.to_string(), "[::1]:8443");
        assert_eq!(authority.bare_host(), "::1");
        assert_eq!(authority.ip(), Some("::1".parse().unwrap()));
        assert_eq!(Authority::parse("[::1]:8443"), Some(authority));
        assert_eq!(Authority::parse("[::1]").unwrap().to_string(), "[::1]:443");
    }

    #[test]
    fn names_are_lower_case_and_ports_default_by_scheme() {
        let https: http::Uri = "https://Billing.Internal/x".parse().unwrap();
        let http: http::Uri = "http://billing.internal/x".parse().unwrap();
        assert_eq!(Authority::of(&https).unwrap().to_string(), "billing.internal:443");
        assert_eq!(Authority::of(&http).unwrap().to_string(), "billing.internal:80");
        assert_eq!(Authority::parse("BILLING.internal").unwrap().to_string(), "billing.internal:443");
        assert_eq!(Authority::of(&https).unwrap().ip(), None);
        assert_eq!(Authority::parse("user@billing.internal:443"), None);
        assert_eq!(Authority::parse("not a host"), None);
    }
}
