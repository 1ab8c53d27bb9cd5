//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never passed
//! on. The server drops those a caller's `Connection` header names; a forward made in the host
//! drops them all, both ways. The guest SDK keeps the same list (`edgemtls_guest::HOP_BY_HOP`)
//! for forwards made in the guest.

/// Always hop-by-hop, and those the host sets itself.
const ALWAYS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// Removes the headers a `Connection` header names: they are for this hop only.
pub(crate) fn remove_connection_listed(headers: &mut http::HeaderMap) {
    let listed: Vec<http::header::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| http::header::HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Removes every hop-by-hop header: those a `Connection` header names, then the fixed ones.
/// Runs on every forwarded request and response, most of which carry none: one pass over the
/// names there are finds the few to remove, rather than a lookup (a parse and a hash) for
/// each name in [`ALWAYS`].
pub(crate) fn remove_all(headers: &mut http::HeaderMap) {
    remove_connection_listed(headers);
    let is_hop_by_hop = |name: &http::header::HeaderName| ALWAYS.contains(&name.as_str());
    if headers.keys().any(is_hop_by_hop) {
        let found: Vec<http::header::HeaderName> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
        for name in found {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_header_goes_and_the_others_stay() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("connection", "x-trace, keep-alive"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("host", "edge"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-type", "text/plain"),
            ("x-tenant", "a"),
        ] {
            headers.append(http::header::HeaderName::from_static(name), http::HeaderValue::from_static(value));
        }
        remove_all(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-tenant"]);
    }
}
