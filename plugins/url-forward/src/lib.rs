//! `url-forward`: forwards the request to `baseUrl` + the request path.
//!
//! Options: `baseUrl` (required), `mtlsCertificate` (a certificate name; empty or absent:
//! none), `forwardSearch` (default `true`: append the query string). Method, headers (minus
//! hop-by-hop) and body are forwarded; bodies stream both ways. `forwardClientCert` (default
//! `false`): pass the caller's verified certificate on as RFC 9440 `Client-Cert` headers.

use edgemtls_guest::{IncomingRequest, Response, config, forward_by_route_options};

struct UrlForward;

fn misconfigured(detail: &str) -> Response {
    Response::problem(500, "handler-config", "url-forward is misconfigured", detail)
}

impl edgemtls_guest::Handler for UrlForward {
    fn handle(request: IncomingRequest) -> Response {
        let Some(base) = config("baseUrl").filter(|b| !b.is_empty()) else {
            return misconfigured("option baseUrl is required");
        };
        let forward_search = config("forwardSearch").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        let path_with_query = request.path_with_query();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        let mut url = format!("{}{path}", base.trim_end_matches('/'));
        if forward_search && !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        forward_by_route_options(request, &url).into()
    }
}

edgemtls_guest::handler!(UrlForward);
