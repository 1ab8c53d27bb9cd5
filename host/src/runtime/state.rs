//! The per-request store data: WASI, wasi:http with our outbound hooks, and guest options.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::outgoing;
use crate::resolve::{ResolveError, Resolver};
use crate::upstream::ClientIdentity;

/// Everything one handler invocation owns.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    pub(super) config: Arc<WasiConfigVariables>,
    pub(super) limits: StoreLimits,
}

impl HostState {
    pub(super) fn new(
        wasi: WasiCtx,
        config: Arc<WasiConfigVariables>,
        resolver: Arc<Resolver>,
        memory_bytes: usize,
        max_outbound: u32,
    ) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks { resolver, next_identity: None, sent: 0, max_outbound },
            config,
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).trap_on_grow_failure(true).build(),
        }
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
    resolver: Arc<Resolver>,
    /// Set by `edgemtls:mtls/outgoing.handle` right before it delegates to the standard
    /// `handle`, which calls `send_request` synchronously: so exactly that request takes it.
    next_identity: Option<Arc<ClientIdentity>>,
    sent: u32,
    max_outbound: u32,
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
        let identity = self.next_identity.take().unwrap_or_else(|| self.resolver.anonymous());
        self.sent += 1;
        if self.sent > self.max_outbound {
            let max = self.max_outbound;
            tracing::warn!(max, "handler exceeded its outbound request limit");
            return Box::new(async move {
                Err(wasmtime_wasi_http::Error::InternalError(Some(format!(
                    "outbound request limit of {max} per invocation reached"
                ))))
            });
        }
        Box::new(async move {
            let started = std::time::Instant::now();
            let uri = request.uri().clone();
            let result = identity.send(request, options).await;
            if let Some(name) = identity.name() {
                match &result {
                    Ok(response) => tracing::info!(
                        target: "edgemtls::audit", certificate = name, certificate_id = identity.certificate_id(),
                        upstream = %uri.authority().map(|a| a.as_str()).unwrap_or(""), status = response.status().as_u16(),
                        duration_ms = started.elapsed().as_millis() as u64, "outbound request"),
                    Err(error) => tracing::warn!(
                        target: "edgemtls::audit", certificate = name, certificate_id = identity.certificate_id(),
                        upstream = %uri.authority().map(|a| a.as_str()).unwrap_or(""), %error,
                        duration_ms = started.elapsed().as_millis() as u64, "outbound request failed"),
                }
            }
            let response = result?;
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

fn certificate_error(error: ResolveError) -> outgoing::CertificateError {
    use outgoing::CertificateError as E;
    match error {
        ResolveError::NotFound { name } => E::NotFound(name),
        ResolveError::Disabled { name } => E::Disabled(name),
        ResolveError::NotInEnvironment { name, .. } => E::NotInEnvironment(name),
        ResolveError::Expired { name, .. } => E::Expired(name),
        ResolveError::NotYetValid { name, .. } => E::NotYetValid(name),
        // ResolveError is non_exhaustive; a new reason is still "cannot use this name".
        #[allow(unreachable_patterns)]
        _ => E::NotFound(String::new()),
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
        let identity = match self.hooks.resolver.resolve(&certificate) {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(target: "edgemtls::audit", certificate = %certificate, %error, "outbound request refused");
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
}
