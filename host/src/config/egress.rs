//! Which upstreams a route's handler may call: `allowed_outbound_hosts`, as in Spin.
//!
//! Entries are `scheme://host[:port]` (`https://billing.internal:8443`, `https://*.example.com`,
//! `http://localhost:8081`) or `host:port` for either scheme; `*` as the host matches every
//! host, `*` as the port every port, and the entry `"*"` alone allows every upstream (an
//! explicit, logged choice). A route without the key may call what its configuration names:
//! the URLs in its options and the `[[upstreams]]` hosts.

use crate::authority::Authority;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// `https`, `http`, or `None` for either.
    scheme: Option<String>,
    /// An exact host, `*.suffix`, or `*`.
    host: String,
    /// A port, or `None` for any.
    port: Option<u16>,
}

impl HostPattern {
    /// Parses an entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => match http_scheme(scheme) {
                Some(scheme) => (Some(scheme.to_string()), rest),
                None if scheme == "*" => (None, rest),
                None => return Err(format!("'{entry}': the scheme '{scheme}' is not http, https, ws or wss")),
            },
            None => (None, entry),
        };
        if rest.is_empty() || rest.contains('/') || rest.contains('?') {
            return Err(format!("'{entry}' is not scheme://host[:port]: no path or query"));
        }
        let (host, port) = split_host_port(rest);
        let port = match port {
            None => match scheme.as_deref() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ if host == "*" => None,
                _ => return Err(format!("'{entry}' needs a port, or a scheme (https:// means port 443)")),
            },
            Some("*") => None,
            Some(port) => Some(port.parse::<u16>().map_err(|_| format!("'{entry}': '{port}' is not a port"))?),
        };
        let host = host.to_ascii_lowercase();
        let wildcard_ok = match host.strip_prefix("*.") {
            _ if host == "*" => true,
            Some(domain) => !domain.contains('*'),
            None => !host.contains('*'),
        };
        if host.is_empty() || !wildcard_ok {
            return Err(format!("'{entry}': a wildcard is '*' or '*.domain'"));
        }
        Ok(Self { scheme, host, port })
    }

    /// The pattern that allows exactly `url`'s scheme, host and port, if it is an http(s) URL.
    pub fn for_url(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = http_scheme(uri.scheme_str()?)?;
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Self { scheme: Some(scheme.to_string()), host, port: Some(port) })
    }

    /// The pattern for an `[[upstreams]]` host (`host:port`), either scheme. The `"*"` entry
    /// sets trust for unlisted upstreams; it does not allow calling them.
    pub fn for_authority(authority: &str) -> Option<Self> {
        let (host, port) = split_host_port(authority);
        Some(Self { scheme: None, host: host.to_ascii_lowercase(), port: Some(port?.parse().ok()?) })
    }

    /// Whether a request to `scheme://host:port` matches.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(scheme));
        let port_ok = self.port.is_none_or(|p| p == port);
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.'),
            None => self.host == host,
        };
        scheme_ok && port_ok && host_ok
    }

    /// Whether this is the allow-everything entry.
    pub fn is_everything(&self) -> bool {
        self.scheme.is_none() && self.host == "*" && self.port.is_none()
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(&self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None if self.host == "*" && self.scheme.is_none() => Ok(()),
            None => f.write_str(":*"),
        }
    }
}

/// Where one route's handler may send requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    allowed: Vec<HostPattern>,
}

impl Egress {
    /// The route's `allowed_outbound_hosts`, or when it has none, the URLs among its resolved
    /// `options` and the `[[upstreams]]` hosts.
    pub fn for_route<'a>(
        declared: Option<&[HostPattern]>,
        options: impl IntoIterator<Item = &'a String>,
        upstreams: &[super::UpstreamTrust],
    ) -> Self {
        let allowed = match declared {
            Some(declared) => declared.to_vec(),
            None => options
                .into_iter()
                .filter_map(|value| HostPattern::for_url(value))
                .chain(upstreams.iter().flat_map(|u| u.hosts.iter()).filter_map(|h| HostPattern::for_authority(h)))
                .collect(),
        };
        Self { allowed }
    }

    /// Whether every upstream is allowed (`"*"`).
    pub fn allows_everything(&self) -> bool {
        self.allowed.iter().any(HostPattern::is_everything)
    }

    /// `Ok` when the route may call `uri`; otherwise what to add to allow it.
    pub fn check(&self, uri: &http::Uri) -> Result<(), String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(authority) = Authority::of(uri) else { return Err(format!("'{uri}' has no host")) };
        let (host, port) = (authority.host(), authority.port());
        if self.allowed.iter().any(|pattern| pattern.allows(&scheme, host, port)) {
            return Ok(());
        }
        let allowed = if self.allowed.is_empty() {
            "nothing".to_string()
        } else {
            self.allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        Err(format!(
            "this route may not call {scheme}://{host}:{port} (it may call {allowed}); add it to the route's allowed_outbound_hosts"
        ))
    }
}

/// `host[:port]` with IPv6 brackets kept on the host.
/// The HTTP scheme a URL's scheme is sent with: a WebSocket URL (`wss`, `ws`) is an upgrade
/// request to its HTTP twin; `None` for anything else.
fn http_scheme(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some("https"),
        "http" | "ws" => Some("http"),
        _ => None,
    }
}

fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if text.starts_with('[') {
        return match text.find(']') {
            Some(end) => (&text[..=end], text[end + 1..].strip_prefix(':')),
            None => (text, None),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (text, None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let exact = HostPattern::parse("https://billing.internal:8443").unwrap();
        assert!(exact.allows("https", "billing.internal", 8443));
        assert!(!exact.allows("http", "billing.internal", 8443));
        assert!(!exact.allows("https", "billing.internal", 443));
        let wildcard = HostPattern::parse("https://*.example.com").unwrap();
        assert!(wildcard.allows("https", "api.example.com", 443));
        assert!(!wildcard.allows("https", "example.com", 443));
        assert!(!wildcard.allows("https", "evilexample.com", 443));
        let bare = HostPattern::parse("localhost:8081").unwrap();
        assert!(bare.allows("http", "localhost", 8081) && bare.allows("https", "localhost", 8081));
        assert!(HostPattern::parse("*").unwrap().is_everything());
        assert!(HostPattern::parse("https://[::1]:8443").unwrap().allows("https", "[::1]", 8443));
        // A WebSocket URL is sent as an upgrade request to its HTTP twin.
        let socket = HostPattern::parse("wss://chat.internal").unwrap();
        assert!(socket.allows("https", "chat.internal", 443) && !socket.allows("http", "chat.internal", 443));
        let option = HostPattern::for_url("wss://localhost:9443/ws").unwrap();
        assert!(option.allows("https", "localhost", 9443));
        assert!(HostPattern::for_url("ws://localhost:9080").unwrap().allows("http", "localhost", 9080));
    }

    #[test]
    fn bad_entries_say_why() {
        assert!(HostPattern::parse("ftp://x").unwrap_err().contains("not http, https, ws or wss"));
        assert!(HostPattern::parse("https://x/path").unwrap_err().contains("no path"));
        assert!(HostPattern::parse("x.example").unwrap_err().contains("needs a port"));
        assert!(HostPattern::parse("https://a*b.example").unwrap_err().contains("wildcard"));
    }
}
