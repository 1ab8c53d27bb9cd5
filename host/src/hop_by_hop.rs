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
pub(crate) fn remove_all(headers: &mut http::HeaderMap) {
    remove_connection_listed(headers);
    for name in ALWAYS {
        headers.remove(*name);
    }
}
