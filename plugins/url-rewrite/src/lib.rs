//! `url-rewrite`: forwards the request to a URL built from `rewritePattern`.
//!
//! Placeholders: `${params.NAME}` (route parameters such as `/users/:id`), `${query}` (the
//! query string without `?`), `${search}` (with `?`, or empty), `${pathname}`, `${method}`,
//! `${headers.NAME}`, `${env.NAME}`. A trailing `?` left by an empty query is dropped.
//! Options: `rewritePattern` (required), `mtlsCertificate`. Method, headers (minus
//! hop-by-hop) and body are forwarded; bodies stream both ways. `forwardClientCert` (default
//! `false`): pass the caller's verified certificate on as RFC 9440 `Client-Cert` headers.

use edgemtls_guest::{IncomingRequest, Response, config, forward_by_route_options};

struct UrlRewrite;

fn misconfigured(detail: &str) -> Response {
    Response::problem(500, "handler-config", "url-rewrite is misconfigured", detail)
}

/// Expands the placeholders of `pattern` for `request`.
fn rewrite(pattern: &str, request: &IncomingRequest) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed placeholder in '{pattern}'"))?;
        let key = after[..end].trim();
        let value = if let Some(name) = key.strip_prefix("params.") {
            config(&format!("params.{name}")).ok_or_else(|| format!("route has no parameter '{name}'"))?
        } else if let Some(name) = key.strip_prefix("headers.") {
            request.header(name).unwrap_or_default()
        } else if let Some(name) = key.strip_prefix("env.") {
            std::env::var(name).unwrap_or_default()
        } else {
            match key {
                "query" => request.query(),
                "search" => {
                    let query = request.query();
                    if query.is_empty() { String::new() } else { format!("?{query}") }
                }
                "pathname" => request.path(),
                "method" => request.method(),
                other => return Err(format!("unknown placeholder '${{{other}}}'")),
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.ends_with('?') {
        out.pop();
    }
    Ok(out)
}

impl edgemtls_guest::Handler for UrlRewrite {
    fn handle(request: IncomingRequest) -> Response {
        let Some(pattern) = config("rewritePattern").filter(|p| !p.is_empty()) else {
            return misconfigured("option rewritePattern is required");
        };
        let url = match rewrite(&pattern, &request) {
            Ok(url) => url,
            Err(reason) => return misconfigured(&reason),
        };
        forward_by_route_options(request, &url).into()
    }
}

edgemtls_guest::handler!(UrlRewrite);
