//! One path for every request a guest sends upstream, through `wasi:http` (the outbound
//! hook) or through the host's forward: admitted or refused (the outbound cap, the route's
//! egress rules), sent through the identity it named, and audited exactly once, with a line
//! and a metric, even when its guest ends before the answer.

use std::future::Future;
use std::sync::Arc;

use wasmtime_wasi_http::{RequestOptions, WasiBody};

use super::RouteContext;
use crate::upstream::{ClientIdentity, FailureReason, UpstreamFailure};

/// How a request travels.
pub(super) enum Via {
    /// Through the identity's pool for its upstream, with the guest's timeouts if any.
    Pool(Option<RequestOptions>),
    /// Over a connection of its own that asks to switch protocols (a WebSocket).
    Upgrade,
}

/// Sends `request` presenting `identity`, or refuses it with `admission`'s failure. A refusal
/// is audited at once, before the returned future runs (a guest may never wait for it); a
/// request sent is audited when its answer comes, or when the future is dropped without one.
pub(super) fn dispatch(
    context: Arc<RouteContext>,
    identity: Arc<ClientIdentity>,
    admission: Result<(), UpstreamFailure>,
    request: http::Request<WasiBody>,
    via: Via,
) -> impl Future<Output = Result<http::Response<WasiBody>, UpstreamFailure>> + Send + 'static {
    let audit = OutboundAudit::new(context, identity, request.uri());
    let refused = admission.err().inspect(|failure| audit.refused(failure));
    async move {
        if let Some(failure) = refused {
            return Err(failure);
        }
        let sending = audit.sending();
        // Boxed: the send is most of this future, which wasmtime moves while it runs.
        let result = match via {
            Via::Pool(options) => Box::pin(audit.identity.send(request, options)).await,
            Via::Upgrade => Box::pin(audit.identity.send_upgrade(request)).await,
        };
        sending.finished(&result);
        result
    }
}

/// The audit line and the metric of one outbound request: every request the host sends or
/// refuses gets exactly one of each; `certificate` is absent when none was presented.
struct OutboundAudit {
    context: Arc<RouteContext>,
    identity: Arc<ClientIdentity>,
    upstream: String,
}

impl OutboundAudit {
    fn new(context: Arc<RouteContext>, identity: Arc<ClientIdentity>, uri: &http::Uri) -> Self {
        Self { context, identity, upstream: uri.authority().map(|a| a.to_string()).unwrap_or_default() }
    }

    /// The host refused to send the request (limit, egress).
    fn refused(&self, failure: &UpstreamFailure) {
        let (context, identity) = (&self.context, &self.identity);
        context.metrics.record_outbound(identity.name(), failure.reason().as_str(), std::time::Duration::ZERO);
        // Every request a guest could send is audited. Past the outbound limit a looping
        // guest can make refusals without end: those lines are rate-limited (with a count).
        static LIMIT_REFUSALS: crate::log_limit::Limiter = crate::log_limit::Limiter::new();
        if failure.reason() == FailureReason::OutboundLimit && !LIMIT_REFUSALS.permit() {
            return;
        }
        tracing::warn!(
            target: "edgemtls::audit", route = %context.route, handler = %context.handler,
            certificate = identity.name(), environment = %context.environment, upstream = %self.upstream,
            reason = failure.reason().as_str(), error = %failure, "outbound request refused");
    }

    /// The request is being sent: the returned guard writes its line when it has an answer,
    /// or when it is dropped without one (its guest ended: the caller went away or the
    /// deadline passed), so a request in flight is audited whatever ends it.
    fn sending(&self) -> Sending<'_> {
        Sending { audit: self, started: std::time::Instant::now(), done: false }
    }

    /// The request was sent: its status, or why it failed.
    fn finished(&self, result: &Result<http::Response<WasiBody>, UpstreamFailure>, elapsed: std::time::Duration) {
        let (context, identity) = (&self.context, &self.identity);
        let duration_ms = elapsed.as_millis() as u64;
        match result {
            Ok(response) => {
                context.metrics.record_outbound(identity.name(), &response.status().as_u16().to_string(), elapsed);
                tracing::info!(
                    target: "edgemtls::audit", route = %context.route, handler = %context.handler,
                    certificate = identity.name(), certificate_id = identity.certificate_id(),
                    environment = %context.environment, upstream = %self.upstream,
                    status = response.status().as_u16(), duration_ms, "outbound request");
            }
            Err(failure) => {
                context.metrics.record_outbound(identity.name(), failure.reason().as_str(), elapsed);
                tracing::warn!(
                    target: "edgemtls::audit", route = %context.route, handler = %context.handler,
                    certificate = identity.name(), certificate_id = identity.certificate_id(),
                    environment = %context.environment, upstream = %self.upstream,
                    reason = %failure.reason(), error = %failure, duration_ms, "outbound request failed");
            }
        }
    }
}

/// An outbound request on its way; see [`OutboundAudit::sending`].
struct Sending<'s> {
    audit: &'s OutboundAudit,
    started: std::time::Instant,
    done: bool,
}

impl Sending<'_> {
    /// Its answer arrived, or why none will.
    fn finished(mut self, result: &Result<http::Response<WasiBody>, UpstreamFailure>) {
        self.done = true;
        self.audit.finished(result, self.started.elapsed());
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (context, identity) = (&self.audit.context, &self.audit.identity);
        let elapsed = self.started.elapsed();
        context.metrics.record_outbound(identity.name(), ABANDONED, elapsed);
        tracing::warn!(
            target: "edgemtls::audit", route = %context.route, handler = %context.handler,
            certificate = identity.name(), certificate_id = identity.certificate_id(),
            environment = %context.environment, upstream = %self.audit.upstream,
            reason = ABANDONED, duration_ms = elapsed.as_millis() as u64,
            "outbound request abandoned before its answer: its handler ended (the caller went away, or the deadline passed)");
    }
}

/// The outcome of an outbound request whose handler ended while it was in flight.
const ABANDONED: &str = "abandoned";
