//! The per-request store data: WASI, wasi:http with our outbound hooks, and guest options.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

mod dispatch;
mod forward;
mod js_requests;
mod pass_through;
mod send;
mod websocket;

pub(crate) use websocket::Tunnels;
pub use websocket::WebSocketUpgrade;

use super::bindings::{next_request, outgoing, types};
use super::outcome::Outcome;
use super::route::RouteContext;
use crate::resolve::ResolveError;
use crate::upstream::{ClientIdentity, FailureReason, UpstreamFailure};

/// wasmtime's store limits, remembering whether they refused a memory growth: how a trap
/// is told to be the memory cap, without reading its message.
pub(super) struct MemoryLimit {
    inner: StoreLimits,
    refused: bool,
}

impl MemoryLimit {
    /// Whether a growth was refused since the instance began.
    pub(super) fn refused(&self) -> bool {
        self.refused
    }
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.refused = true;
        }
        allowed
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Resources (streams, requests, bodies…) one instance may hold at once.
const MAX_RESOURCES: usize = 10_000;

/// The most a header list a guest sends may hold, as wasi:http fields allow by default.
const FIELD_SIZE_LIMIT: usize = 128 * 1024;

/// Everything one instance owns; the per-request part is reset by [`HostState::begin_request`].
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    pub(super) config: Arc<WasiConfigVariables>,
    pub(super) limits: MemoryLimit,
    /// When the current request must end: the epoch callback interrupts the guest then.
    pub(super) deadline: super::deadline::Deadline,
    /// Where the current request's outcome is reported (see `outcome.rs`).
    outcome: Option<tokio::sync::oneshot::Sender<Outcome>>,
    /// What the guest may still print during this request.
    output: super::guest_output::OutputBudget,
    /// How long a body the host streams for the guest may make no progress.
    stream_idle: std::time::Duration,
    /// The current request's headers as the caller sent them (after the host's own
    /// removals and additions): a forward sends them on as they are, instead of reading
    /// them back through `wasi:http` fields as strings and parsing each name again.
    caller_headers: Option<http::HeaderMap>,
    /// The current request's WebSocket upgrade, for a forward to take.
    upgrade: Option<WebSocketUpgrade>,
    /// Where forwarded WebSockets are counted and run.
    tunnels: Arc<Tunnels>,
}

impl Drop for HostState {
    /// The store is going away with a request unfinished: say so before the request's
    /// resources (its response body among them) are dropped with the fields.
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            let _ = outcome.send(Outcome::Failed);
        }
    }
}

impl HostState {
    pub(super) fn new(
        wasi: WasiCtx,
        output: super::guest_output::OutputBudget,
        config: Arc<WasiConfigVariables>,
        context: Arc<RouteContext>,
        limits: &crate::config::Limits,
        tunnels: Arc<Tunnels>,
    ) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: {
                // A guest that creates resources without bound runs out here, not the host.
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            hooks: OutboundHooks {
                context,
                next_identity: None,
                presented: None,
                next_failure: None,
                failures: HashMap::new(),
                sent: 0,
                max_outbound: limits.max_outbound_requests,
            },
            config,
            limits: MemoryLimit {
                inner: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build(),
                refused: false,
            },
            deadline: super::deadline::Deadline::new(std::time::Instant::now()),
            outcome: None,
            output,
            stream_idle: limits.stream_idle_timeout,
            caller_headers: None,
            upgrade: None,
            tunnels,
        }
    }

    /// Starts a request on this instance: its options, its deadline, and a fresh outbound
    /// count and failure record.
    pub(super) fn begin_request(
        &mut self,
        config: Arc<WasiConfigVariables>,
        deadline: super::deadline::Deadline,
        outcome: tokio::sync::oneshot::Sender<Outcome>,
        caller_headers: http::HeaderMap,
        upgrade: Option<WebSocketUpgrade>,
    ) {
        self.caller_headers = Some(caller_headers);
        self.outcome = Some(outcome);
        self.upgrade = upgrade;
        self.output.reset();
        self.config = config;
        self.deadline = deadline;
        self.hooks.sent = 0;
        self.hooks.next_identity = None;
        self.hooks.presented = None;
        self.hooks.next_failure = None;
        self.hooks.failures.clear();
    }

    /// What the guest still holds of HTTP when its handler has returned, which decides
    /// whether its request is whole and whether its instance may serve another (see
    /// [`Leftovers`]). What is left of upstream answers it received (a taken response future,
    /// a response, a body) is carried like a global, up to [`MAX_RECEIVED_LEFT`]: a
    /// garbage-collected guest (JavaScript) drops those at its next collection, not when the
    /// request ends.
    pub(super) fn leftovers(&mut self) -> Leftovers {
        use wasmtime_wasi_http::p2::body::{HostIncomingBody, HostOutgoingBody};
        use wasmtime_wasi_http::p2::types::{HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse, HostResponseOutparam};
        let mut received = 0;
        let mut outbound = false;
        let mut facing_caller = false;
        for entry in self.table.iter_mut() {
            let entry: &dyn std::any::Any = entry;
            if entry.is::<HostIncomingResponse>() || entry.is::<HostIncomingBody>() {
                received += 1;
            } else if let Some(future) = entry.downcast_ref::<HostFutureIncomingResponse>() {
                received += 1;
                outbound |= matches!(future, HostFutureIncomingResponse::Pending(_));
            } else if entry.is::<HostOutgoingRequest>() {
                outbound = true;
            } else if entry.is::<HostOutgoingBody>() || entry.is::<HostOutgoingResponse>() || entry.is::<HostResponseOutparam>() {
                // An outgoing body may be the response's or an upstream request's: either
                // way the instance is mid-exchange, and a response body left open is cut off.
                facing_caller = true;
            }
        }
        if facing_caller {
            Leftovers::Unfinished
        } else if outbound || received > MAX_RECEIVED_LEFT {
            Leftovers::Discard
        } else {
            Leftovers::Clean
        }
    }
    /// The handler returned: takes where to report that, to report it once the instance
    /// is back in its pool.
    pub(super) fn end_request(&mut self) -> Option<tokio::sync::oneshot::Sender<Outcome>> {
        self.caller_headers = None;
        // A guest that answered without forwarding leaves the caller's upgrade undone.
        self.upgrade = None;
        self.outcome.take()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Sends the guest's outbound requests through the identity they named.
struct OutboundHooks {
    context: Arc<RouteContext>,
    /// Set by `edgemtls:mtls/outgoing.handle` right before it delegates to the standard
    /// `handle`, which calls `send_request` synchronously: so exactly that request takes it.
    next_identity: Option<Arc<ClientIdentity>>,
    /// Set by `edgemtls:mtls/next-request.present` for the next plain `wasi:http` request of
    /// this invocation (JavaScript's `fetch` cannot carry a name); taken by that request,
    /// dropped by `clear` and at the start of every request.
    presented: Option<Arc<ClientIdentity>>,
    /// Where `send_request` records why the request it just started failed, if it does;
    /// `handle` files it under the response future it returns.
    next_failure: Option<FailureSlot>,
    /// Why requests sent through `edgemtls:mtls/outgoing.handle` failed, by the rep of their
    /// response future (`edgemtls:mtls/outgoing.failure`). At most one per request sent.
    failures: HashMap<u32, FailureSlot>,
    sent: u32,
    max_outbound: u32,
}

type FailureSlot = Arc<OnceLock<UpstreamFailure>>;

impl OutboundHooks {
    /// Counts one outbound request of this invocation and says whether the host may send it:
    /// within the route's outbound cap, and to an upstream its egress rules allow.
    fn admit(&mut self, uri: &http::Uri) -> Result<(), UpstreamFailure> {
        self.sent += 1;
        if self.sent > self.max_outbound {
            let max = self.max_outbound;
            return Err(UpstreamFailure::new(
                FailureReason::OutboundLimit,
                format!("this handler may send at most {max} outbound requests per invocation (limits.max_outbound_requests)"),
            ));
        }
        self.context.egress.check(uri).map_err(|message| UpstreamFailure::new(FailureReason::EgressDenied, message))
    }
}

/// How many received upstream resources (responses, bodies, taken response futures) an
/// instance may still hold when a request ends and yet serve another; past it, it is
/// discarded, so a guest that never lets go of them cannot grow without bound. A JavaScript
/// handler leaves about three per upstream request until its next garbage collection.
const MAX_RECEIVED_LEFT: usize = 256;

/// What a guest holds of HTTP when its handler has returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leftovers {
    /// Nothing that matters: the instance may serve another request.
    Clean,
    /// The response is whole, but the instance keeps work that must not reach another
    /// request (an outbound request unsent or in flight) or too many received resources:
    /// it is dropped, the request is not failed.
    Discard,
    /// An unfinished response body, a response or an outparam: the response is cut off.
    Unfinished,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        // A request through plain wasi:http (no name) presents no certificate.
        let identity = self.next_identity.take().or_else(|| self.presented.take()).unwrap_or_else(|| self.context.resolver.anonymous());
        let slot = FailureSlot::default();
        self.next_failure = Some(slot.clone());
        let admission = self.admit(request.uri());
        let sent = dispatch::dispatch(self.context.clone(), identity, admission, request, dispatch::Via::Pool(options));
        Box::new(async move {
            let response = sent.await.map_err(|failure| failed(&slot, failure))?;
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Keeps `failure` for `edgemtls:mtls/outgoing.failure` and returns the code wasi:http reports.
fn failed(slot: &FailureSlot, failure: UpstreamFailure) -> wasmtime_wasi_http::Error {
    let code = failure.error_code().into();
    let _ = slot.set(failure);
    code
}

/// What the host says of a failed request, as the guest reads it (`outgoing.upstream-failure`).
fn said(failure: &UpstreamFailure) -> outgoing::UpstreamFailure {
    outgoing::UpstreamFailure { reason: failure.reason().as_str().to_string(), message: failure.message().to_string() }
}

/// Why a name cannot be used, as the guest's typed error (`types.certificate-error`, which
/// `outgoing` and `next-request` share).
fn certificate_error(error: ResolveError) -> types::CertificateError {
    use types::CertificateError as E;
    match error {
        ResolveError::NotFound { name } => E::NotFound(name),
        ResolveError::Disabled { name } => E::Disabled(name),
        ResolveError::NotInEnvironment { name, .. } => E::NotInEnvironment(name),
        ResolveError::Expired { name, .. } => E::Expired(name),
        ResolveError::NotYetValid { name, .. } => E::NotYetValid(name),
        // The WIT variant is fixed (a new case would break compiled guests): a record that
        // cannot be served is "no usable certificate by this name"; the host log says why.
        ResolveError::Damaged { name } | ResolveError::BadChain { name, .. } => E::NotFound(name),
    }
}

impl HostState {
    /// Resolves a certificate name a guest gave (empty: none, like plain wasi:http). A name
    /// that cannot be used is audited and counted here, as a refused outbound request.
    fn resolve_named(&self, certificate: &str) -> Result<Arc<ClientIdentity>, ResolveError> {
        let context = &self.hooks.context;
        let resolved = if certificate.is_empty() { Ok(context.resolver.anonymous()) } else { context.resolver.resolve(certificate) };
        if let Err(error) = &resolved {
            // A guest chooses the name: a name the store does not know shares one label, so
            // made-up names cannot grow the metrics without bound.
            let label = match error {
                ResolveError::NotFound { .. } => "(unknown)",
                _ => certificate,
            };
            context.metrics.record_outbound(Some(label), error.reason(), std::time::Duration::ZERO);
            // A guest can ask for names in a loop (`next-request.present` sends nothing, so no
            // outbound cap stops it): every refusal is counted, its lines are rate-limited.
            crate::warn_limited!(
                target: "edgemtls::audit", route = %context.route, handler = %context.handler,
                certificate = %certificate, environment = %context.environment,
                reason = error.reason(), %error, "outbound request refused");
        }
        resolved
    }
}

impl next_request::Host for HostState {
    fn present(&mut self, certificate: String) -> wasmtime::Result<Result<(), types::CertificateError>> {
        // A refused name also withdraws one given earlier: the next request presents nothing.
        self.hooks.presented = None;
        Ok(match self.resolve_named(&certificate) {
            Ok(identity) => {
                self.hooks.presented = Some(identity);
                Ok(())
            }
            Err(error) => Err(certificate_error(error)),
        })
    }

    fn clear(&mut self) -> wasmtime::Result<()> {
        self.hooks.presented = None;
        Ok(())
    }
}

impl outgoing::Host for HostState {
    fn handle(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
        certificate: String,
    ) -> wasmtime::Result<Result<Resource<HostFutureIncomingResponse>, outgoing::Error>> {
        let options_rep = options.as_ref().map(|o| o.rep());
        let identity = match self.resolve_named(&certificate) {
            Ok(identity) => identity,
            Err(error) => {
                // The host owns both resources now; drop them or they live as long as the store.
                self.table.delete(request)?;
                if let Some(options) = options {
                    self.table.delete(options)?;
                }
                return Ok(Err(outgoing::Error::Certificate(certificate_error(error))));
            }
        };
        self.hooks.next_identity = Some(identity);
        let result = outgoing_handler::Host::handle(&mut self.http(), request, options);
        // `handle` may fail before it reaches `send_request`; never let the identity leak
        // into a later request.
        self.hooks.next_identity = None;
        let failure = self.hooks.next_failure.take();
        if let (Ok(future), Some(slot)) = (&result, failure) {
            self.hooks.failures.insert(future.rep(), slot);
        }
        if let Some(rep) = options_rep {
            let _ = self.table.delete(Resource::<RequestOptions>::new_own(rep));
        }
        match result {
            Ok(future) => Ok(Ok(future)),
            Err(error) => match error.downcast() {
                Ok(code) => Ok(Err(outgoing::Error::Http(code))),
                Err(trap) => Err(trap),
            },
        }
    }

    async fn send(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, Vec<u8>)>,
        body: outgoing::RequestBody,
        certificate: String,
    ) -> wasmtime::Result<Result<outgoing::Answer, outgoing::SendError>> {
        self.send_whole(method, url, headers, body, certificate).await
    }

    fn failure(&mut self, response: Resource<HostFutureIncomingResponse>) -> wasmtime::Result<Option<outgoing::UpstreamFailure>> {
        let failure = self.hooks.failures.get(&response.rep()).and_then(|slot| slot.get());
        Ok(failure.map(said))
    }
}
