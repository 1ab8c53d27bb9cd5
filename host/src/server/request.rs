//! One request, from its path to its handler's answer ([`App::handle`]): the path resolved,
//! headers a caller may not send dropped, the route picked, the caller admitted, the handler
//! run, and every failure answered with a problem.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{App, Connected, Problem, path};
use crate::config::CallerRule;
use crate::inbound::{self, Caller};
use crate::runtime::Scheme;

impl App {
    /// Answers one request that arrived on `connection`.
    pub async fn handle(
        self: Arc<Self>,
        connection: Arc<Connected>,
        mut request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let started = Instant::now();
        let routes = self.routes();
        // Routes and guests see the path with its dot segments resolved.
        let normalized = match path::normalize(request.uri().path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(normalized)) => Some(normalized),
            Err(problem) => {
                self.metrics.record_request("(none)", 400, started.elapsed());
                return Problem::bad_path(problem.to_string()).into_response();
            }
        };
        if let Some(normalized) = normalized {
            let path_and_query = match request.uri().query() {
                Some(query) => format!("{normalized}?{query}"),
                None => normalized,
            };
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = path_and_query.parse().ok();
            match hyper::Uri::from_parts(parts) {
                Ok(uri) => *request.uri_mut() = uri,
                // Never route the unresolved path.
                Err(_) => {
                    self.metrics.record_request("(none)", 400, started.elapsed());
                    return Problem::bad_path("the path cannot be normalized").into_response();
                }
            }
        }
        // A WebSocket upgrade is kept aside (its headers are hop-by-hop) for a forward to take.
        if let Some(upgrade) = crate::runtime::WebSocketUpgrade::take(&mut request) {
            request.extensions_mut().insert(upgrade);
        }
        // Guests never see `Connection` itself to know what it named.
        crate::hop_by_hop::remove_connection_listed(request.headers_mut());
        crate::identity_headers::remove_caller_copies(request.headers_mut());
        crate::identity_headers::remove_named(request.headers_mut(), &routes.caller_header_names);
        let path = request.uri().path().to_string();
        let Some(found) = routes.router.route(&path) else {
            self.metrics.record_request("(none)", 404, started.elapsed());
            return Problem::no_route(&path).into_response();
        };
        let scheme = match &connection.caller {
            Some(current) => {
                let mut caller = current.load_full();
                if let Some(tls) = &self.inbound
                    && let Some(rechecked) = tls.recheck(&caller).await
                {
                    caller = Arc::new(rechecked);
                    current.store(caller.clone());
                }
                if let Err(problem) = self.admit(&connection, &caller, found.pattern, &found.target.callers) {
                    self.metrics.record_request(found.pattern, 401, started.elapsed());
                    return Problem::from(&problem).into_response();
                }
                caller.apply(request.headers_mut());
                inbound::caller_headers::apply(&found.target.callers.headers, Some(&caller), request.headers_mut());
                Scheme::Https
            }
            None => {
                inbound::caller_headers::apply(&found.target.callers.headers, None, request.headers_mut());
                Scheme::Http
            }
        };
        let response = match self.runtime.serve(&found.target.handler, &found.params, scheme, request).await {
            Ok(response) => response,
            Err(error) => {
                crate::warn_limited!(route = found.pattern, %error, "request failed");
                Problem::from(&error).into_response()
            }
        };
        self.metrics.record_request(found.pattern, response.status().as_u16(), started.elapsed());
        response
    }

    /// Admits a caller of the TLS listener to `route`, or counts and audits the refusal.
    fn admit(&self, connection: &Connected, caller: &Caller, route: &str, rule: &CallerRule) -> Result<(), inbound::CallerProblem> {
        let listener = self.inbound.as_ref().map(|tls| tls.rule()).unwrap_or_default();
        let admitted = inbound::admit(listener, rule, connection.peer.ip(), caller);
        let certificate = caller.certificate.as_ref();
        let subject = certificate.map_or("", |c| c.subject.as_str());
        let fingerprint = certificate.map_or("", |c| c.fingerprint_sha256.as_str());
        match &admitted {
            Ok(()) if certificate.is_some() => tracing::info!(
                target: "edgemtls::audit", route, peer = %connection.peer, subject, fingerprint, "caller verified"),
            Ok(()) => {}
            Err(problem) => {
                self.metrics.record_caller_refused(problem.reason());
                crate::warn_limited!(
                    target: "edgemtls::audit", route, peer = %connection.peer, subject, fingerprint,
                    reason = problem.reason(), "caller refused");
            }
        }
        admitted
    }
}
