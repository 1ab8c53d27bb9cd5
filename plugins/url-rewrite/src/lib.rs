//! `url-rewrite`: forwards the request to a URL built from `rewritePattern`.
//!
//! Placeholders: `${params.NAME}` (route parameters such as `/users/:id`), `${query}` (the
//! query string without `?`), `${search}` (with `?`, or empty), `${pathname}`, `${method}`,
//! `${headers.NAME}`, `${env.NAME}`. A trailing `?` left by an empty query is dropped.
//!
//! Values from the caller are escaped by where the placeholder stands, so they stay data:
//! - in the path, a header, the method, a route parameter or `${query}` is one path segment
//!   (`x-tenant: a?b/c` gives `a%3Fb%2Fc`); one that an upstream could read as `.` or `..`
//!   (`..`, `../admin`) refuses the request with 400, as upstreams such as nginx resolve even
//!   an escaped `%2E%2E`;
//! - in the query (after `?`), each of those and `${pathname}` is one query value
//!   (`a&admin=1` gives `a%26admin%3D1`);
//! - in the host, a header or route parameter must be one DNS label (`${params.tenant}.api`).
//!
//! `${pathname}` is the path (normalised by the host: no dot segments, no `//`) and stays a
//! path; `${query}` after `?` is the caller's whole query; `${search}` starts the query, or
//! joins it with `&` when the pattern already has one. Route parameters and the path and
//! query keep the caller's percent-escapes; a header's `%` is data and becomes `%25`.
//! `${env.NAME}` is the operator's own text and is placed as written, like the pattern.
//!
//! Options: `rewritePattern` (required), `mtlsCertificate`. Method, headers (minus
//! hop-by-hop) and body are forwarded; bodies stream both ways. `forwardClientCert` (default
//! `false`): pass the caller's verified certificate on as RFC 9440 `Client-Cert` headers.

mod template;

use edgemtls_guest::{IncomingRequest, Response, config, forward_by_route_options};
use template::{Refusal, Value};

struct UrlRewrite;

fn misconfigured(detail: &str) -> Response {
    Response::problem(500, "handler-config", "url-rewrite is misconfigured", detail)
}

/// The value of placeholder `key` for `request`, or why the pattern is wrong.
fn value_of(key: &str, request: &IncomingRequest) -> Result<Value, String> {
    if let Some(name) = key.strip_prefix("params.") {
        return config(&format!("params.{name}")).map(Value::Segment).ok_or_else(|| format!("route has no parameter '{name}'"));
    }
    if let Some(name) = key.strip_prefix("headers.") {
        return Ok(Value::Text(request.header(name).unwrap_or_default()));
    }
    if let Some(name) = key.strip_prefix("env.") {
        return Ok(Value::Operator(std::env::var(name).unwrap_or_default()));
    }
    Ok(match key {
        "query" => Value::Query(request.query()),
        "search" => Value::Search(request.query()),
        "pathname" => Value::Path(request.path()),
        "method" => Value::Text(request.method()),
        other => return Err(format!("unknown placeholder '${{{other}}}'")),
    })
}

impl edgemtls_guest::Handler for UrlRewrite {
    fn handle(request: IncomingRequest) -> Response {
        let Some(pattern) = config("rewritePattern").filter(|p| !p.is_empty()) else {
            return misconfigured("option rewritePattern is required");
        };
        let url = match template::expand(&pattern, |key| value_of(key, &request)) {
            Ok(url) => url,
            Err(Refusal::Pattern(reason)) => return misconfigured(&reason),
            Err(Refusal::Value(reason)) => return Response::problem(400, "bad-request", "Bad request", &reason),
        };
        forward_by_route_options(request, &url).into()
    }
}

edgemtls_guest::handler!(UrlRewrite);
