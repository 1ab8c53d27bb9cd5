//! The WebAssembly runtime: one engine, a `ProxyPre` per component prepared once, and per
//! route a pool of warm instances, each serving one request at a time with the request's own
//! deadline, memory cap and outbound request cap.
//!
//! Guests run on the async workers and yield to them at every epoch tick, so a guest that
//! computes costs its own request only; at the deadline the guest is interrupted (or, when
//! it waits on the host, dropped) and its instance reclaimed.

mod bindings;
mod compile_cache;
mod deadline;
mod guest_output;
mod outcome;
mod pool;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use compile_cache::COMPILE_CACHE_ENV;
pub use state::{HostState, RouteContext, WebSocketUpgrade};
/// The scheme a request arrived with (`https` on the TLS listener), as guests see it.
pub use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::config::{Limits, Reuse};
use pool::{Instance, InstancePool};

/// How often the epoch advances while guests run: a computing guest yields to the async
/// workers at each tick, so this is the slice other requests may wait behind one (measured:
/// 10 ms gave a normal request a 20 ms median beside four looping guests, 1 ms gives 2 ms).
/// Deadlines are instants, not tick counts.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long a request waits for an instance slot before it is answered 503.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// How often the epoch advances while no request runs.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// Why a handler produced no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The component could not be loaded.
    #[error("cannot load component '{path}': {reason}", path = path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Instantiation failed.
    #[error("cannot instantiate the handler: {0}")]
    Instantiate(String),
    /// The request cannot be handed to a guest (for example, it names no host).
    #[error("the request cannot be handled: {0}")]
    BadRequest(String),
    /// Every instance slot is in use: the host is at its concurrency limit.
    #[error("the host is running {0} handler instances, its limit; try again shortly")]
    Busy(u32),
    /// The handler ran past its deadline.
    #[error("the handler did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The handler hit its memory cap.
    #[error("the handler exceeded its memory limit of {0} bytes")]
    MemoryExceeded(usize),
    /// The handler trapped or panicked.
    #[error("the handler failed: {0}")]
    Trap(String),
    /// The handler returned without setting a response.
    #[error("the handler returned without a response")]
    NoResponse,
    /// The handler answered with a `wasi:http` error code.
    #[error("the handler reported an error: {}", error_code_name(.0))]
    Guest(ErrorCode),
}

/// An `error-code` as WIT spells it (`connection-refused`), with an internal error's message.
fn error_code_name(code: &ErrorCode) -> String {
    if let ErrorCode::InternalError(Some(message)) = code {
        return format!("internal-error: {message}");
    }
    error_code_wit_name(code).to_string()
}

/// The WIT name of an `error-code` case, payload left out. Exhaustive: a case a newer
/// wasi:http adds fails the build here rather than printing something made up.
fn error_code_wit_name(code: &ErrorCode) -> &'static str {
    use ErrorCode as E;
    match code {
        E::DnsTimeout => "dns-timeout",
        E::DnsError(_) => "dns-error",
        E::DestinationNotFound => "destination-not-found",
        E::DestinationUnavailable => "destination-unavailable",
        E::DestinationIpProhibited => "destination-ip-prohibited",
        E::DestinationIpUnroutable => "destination-ip-unroutable",
        E::ConnectionRefused => "connection-refused",
        E::ConnectionTerminated => "connection-terminated",
        E::ConnectionTimeout => "connection-timeout",
        E::ConnectionReadTimeout => "connection-read-timeout",
        E::ConnectionWriteTimeout => "connection-write-timeout",
        E::ConnectionLimitReached => "connection-limit-reached",
        E::TlsProtocolError => "tls-protocol-error",
        E::TlsCertificateError => "tls-certificate-error",
        E::TlsAlertReceived(_) => "tls-alert-received",
        E::HttpRequestDenied => "http-request-denied",
        E::HttpRequestLengthRequired => "http-request-length-required",
        E::HttpRequestBodySize(_) => "http-request-body-size",
        E::HttpRequestMethodInvalid => "http-request-method-invalid",
        E::HttpRequestUriInvalid => "http-request-uri-invalid",
        E::HttpRequestUriTooLong => "http-request-uri-too-long",
        E::HttpRequestHeaderSectionSize(_) => "http-request-header-section-size",
        E::HttpRequestHeaderSize(_) => "http-request-header-size",
        E::HttpRequestTrailerSectionSize(_) => "http-request-trailer-section-size",
        E::HttpRequestTrailerSize(_) => "http-request-trailer-size",
        E::HttpResponseIncomplete => "http-response-incomplete",
        E::HttpResponseHeaderSectionSize(_) => "http-response-header-section-size",
        E::HttpResponseHeaderSize(_) => "http-response-header-size",
        E::HttpResponseBodySize(_) => "http-response-body-size",
        E::HttpResponseTrailerSectionSize(_) => "http-response-trailer-section-size",
        E::HttpResponseTrailerSize(_) => "http-response-trailer-size",
        E::HttpResponseTransferCoding(_) => "http-response-transfer-coding",
        E::HttpResponseContentCoding(_) => "http-response-content-coding",
        E::HttpResponseTimeout => "http-response-timeout",
        E::HttpUpgradeFailed => "http-upgrade-failed",
        E::HttpProtocolError => "http-protocol-error",
        E::LoopDetected => "loop-detected",
        E::ConfigurationError => "configuration-error",
        E::InternalError(_) => "internal-error",
    }
}

#[cfg(test)]
mod error_code_tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_wit_spells_them() {
        assert_eq!(error_code_name(&ErrorCode::ConnectionRefused), "connection-refused");
        assert_eq!(error_code_name(&ErrorCode::HttpRequestUriTooLong), "http-request-uri-too-long");
        assert_eq!(error_code_name(&ErrorCode::HttpResponseBodySize(Some(3))), "http-response-body-size");
        assert_eq!(error_code_name(&ErrorCode::InternalError(Some("no memory".into()))), "internal-error: no memory");
        assert_eq!(error_code_name(&ErrorCode::InternalError(None)), "internal-error");
    }
}

/// The engine and linker shared by every handler.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// Compiled components by the SHA-256 of their bytes: a reload that keeps a `.wasm`
    /// file does not compile it again.
    compiled: Mutex<HashMap<[u8; 32], ProxyPre<HostState>>>,
    compilations: AtomicU64,
    /// Every route's pool, so that idle instances give their slots up to real demand.
    pools: Mutex<Vec<std::sync::Weak<InstancePool>>>,
    /// Requests running guests now: the epoch ticks fast only while there are some.
    running: Arc<AtomicU64>,
    /// One permit per instance that may exist (`max_instances`).
    slots: Arc<tokio::sync::Semaphore>,
    /// WebSocket tunnels the forward opened (`max_websockets`).
    tunnels: Arc<state::Tunnels>,
}

/// Counts a running request for as long as it lives.
struct Running(Arc<AtomicU64>);

impl Running {
    fn start(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many compiled components the cache keeps (a reload only recompiles beyond this).
const COMPILED_CACHE_ENTRIES: usize = 256;

/// The largest component file `load` reads.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A component ready to serve, with its route's warm instances.
#[derive(Clone)]
pub struct Handler {
    pre: ProxyPre<HostState>,
    pool: Arc<InstancePool>,
    /// Who is calling out, for resolution, metrics and the audit log.
    context: Arc<RouteContext>,
    /// The guest's `wasi:config/store` (the route's options, resolved).
    config: Arc<WasiConfigVariables>,
    /// The same options, kept to merge route parameters into.
    options: Arc<[(String, String)]>,
    /// The guest's `wasi:cli/environment` (the environment's variables).
    env: Arc<[(String, String)]>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption) and the linker.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        let mut pooling = PoolingAllocationConfig::new();
        // A Rust wasi:http component is about three core instances with a memory and a
        // table or two each: size every pool so that component instances run out first.
        let instances = limits.max_instances;
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes)
            // Keeping a little memory resident and resetting only dirty pages avoids the
            // decommit IPIs that dominate per-request cost on VMs (see wasmtime's
            // `PoolingAllocationConfig::linear_memory_keep_resident`).
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .decommit_batch_size(16)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let cache = compile_cache::open();
        let mut config = EngineConfig::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cache(cache.clone())
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).or_else(|error| {
            // Some sandboxes refuse the pooling allocator's large reservations.
            tracing::warn!(%error, "pooling allocator unavailable; using on-demand allocation");
            let mut config = EngineConfig::new();
            config.wasm_component_model(true).epoch_interruption(true).cache(cache);
            Engine::new(&config)
        })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |state: &mut HostState| WasiConfig::from(&*state.config))?;
        bindings::outgoing::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::next_request::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::forward::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::pass_through::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::js_requests::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;

        // The epoch ticks for as long as the engine lives, and every guest's store holds the
        // engine: so a guest still running at shutdown still meets its deadline. While no
        // request runs, it looks only every IDLE_TICK, to cost nothing on an idle host.
        let ticker_engine = engine.weak();
        let running = Arc::new(AtomicU64::new(0));
        let ticker_running = running.clone();
        std::thread::Builder::new().name("edgemtls-epoch".into()).spawn(move || {
            loop {
                let busy = ticker_running.load(Ordering::Relaxed) > 0;
                std::thread::sleep(if busy { EPOCH_TICK } else { IDLE_TICK });
                match ticker_engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self {
            engine,
            linker,
            limits,
            compiled: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
            pools: Mutex::new(Vec::new()),
            running,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_instances as usize)),
            tunnels: Arc::new(state::Tunnels::new(limits.max_websockets, limits.websocket_idle_timeout)),
        })
    }

    /// The limits applied to each request.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a route's component (built-in or file) and prepares it for instantiation.
    pub fn load_source(&self, source: &crate::config::ComponentSource) -> Result<ProxyPre<HostState>, HandlerError> {
        match source {
            crate::config::ComponentSource::Builtin(builtin) => {
                self.load_bytes(Path::new(&format!("<built-in {}>", builtin.name)), builtin.wasm)
            }
            crate::config::ComponentSource::File(path) => self.load(path),
        }
    }

    /// Compiles a component file and prepares it for instantiation. Only regular files of
    /// at most [`MAX_COMPONENT_BYTES`] are read (never a FIFO or a device).
    pub fn load(&self, path: &Path) -> Result<ProxyPre<HostState>, HandlerError> {
        let load_error = |reason: String| HandlerError::Load { path: path.to_path_buf(), reason };
        let bytes = crate::files::read_regular_file(path, MAX_COMPONENT_BYTES).map_err(|e| load_error(e.to_string()))?;
        self.load_bytes(path, &bytes)
    }

    /// Compiles component bytes, or takes them from the cache when the same bytes were
    /// compiled before; `path` names them in errors.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<ProxyPre<HostState>, HandlerError> {
        // SHA-256 output is always 32 bytes.
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        if let Some(pre) = self.cache().get(&digest) {
            return Ok(pre.clone());
        }
        let load_error = |reason: String| HandlerError::Load { path: path.to_path_buf(), reason };
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(&self.engine, bytes).map_err(|e| load_error(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| load_error(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| load_error(format!("not a wasi:http/proxy component: {e:#}")))?;
        let mut cache = self.cache();
        if cache.len() >= COMPILED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, pre.clone());
        Ok(pre)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ProxyPre<HostState>>> {
        match self.compiled.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drops idle instances past their route's idle timeout, in every route; the server
    /// calls it every second, so a route that goes quiet gives its memory back.
    pub fn expire_idle_instances(&self) {
        for pool in self.live_pools() {
            pool.expire_idle();
        }
    }

    /// The pools of the routes that still exist.
    fn live_pools(&self) -> Vec<Arc<InstancePool>> {
        let pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// How many components this runtime has compiled (cache hits do not count).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// A handler for `pre` with its options, environment variables and reuse settings.
    pub fn handler<'a>(
        &self,
        pre: ProxyPre<HostState>,
        context: Arc<RouteContext>,
        options: impl IntoIterator<Item = (&'a String, &'a String)>,
        env: impl IntoIterator<Item = (&'a String, &'a String)>,
        reuse: Reuse,
    ) -> Handler {
        let options: Arc<[(String, String)]> = options.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let pool = Arc::new(InstancePool::new(reuse));
        {
            let mut pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pools.retain(|pool| pool.strong_count() > 0);
            pools.push(Arc::downgrade(&pool));
        }
        Handler {
            pre,
            pool,
            context,
            config: Arc::new(options.iter().cloned().collect()),
            options,
            env: env.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// A new instance of `handler` in its own store: the guest yields to the executor at
    /// every epoch tick and is interrupted at its current request's deadline.
    async fn instantiate(&self, handler: &Handler) -> Result<Instance, HandlerError> {
        match self.instantiate_once(handler).await {
            // Idle instances are a cache: when every slot is taken, they make room first.
            Err(HandlerError::Busy(_)) => {
                // One of this route's own may have come back while we waited: use it, rather
                // than drop it to make room for another just like it.
                if let Some(instance) = handler.pool.take() {
                    return Ok(instance);
                }
                for pool in self.live_pools() {
                    pool.evict_all();
                }
                self.instantiate_once(handler).await
            }
            other => other,
        }
    }

    async fn instantiate_once(&self, handler: &Handler) -> Result<Instance, HandlerError> {
        // `max_instances` is counted here, so it holds with the on-demand allocator too (the
        // pooling allocator's own limit is sized above it).
        // A short wait smooths a burst, and the moment between a response's last byte and
        // its instance going back to the pool.
        let slot = match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(HandlerError::Busy(self.limits.max_instances)),
        };
        let budget = guest_output::OutputBudget::new();
        let route = &handler.context.route;
        let wasi = WasiCtx::builder()
            .envs(&handler.env)
            .stdout(guest_output::GuestOutput::new(route, "stdout", budget.clone()))
            .stderr(guest_output::GuestOutput::new(route, "stderr", budget.clone()))
            .build();
        let state = HostState::new(wasi, budget, handler.config.clone(), handler.context.clone(), &self.limits, self.tunnels.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|store| {
            // tokio's yield_now puts the guest behind every other ready task; a plain yield
            // would wake it into its worker's LIFO slot and let it run again first.
            Ok(if store.data().deadline.passed() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        // Instantiation runs the component's start functions: under a deadline too.
        store.data_mut().deadline = deadline::Deadline::new(std::time::Instant::now() + self.limits.request_timeout);
        store.set_epoch_deadline(1);
        match handler.pre.instantiate_async(&mut store).await {
            Ok(proxy) => {
                handler.context.metrics.record_instance(&handler.context.route);
                Ok(Instance { store, proxy, served: 0, _slot: slot })
            }
            Err(error) if error.is::<wasmtime::PoolConcurrencyLimitError>() => Err(HandlerError::Busy(self.limits.max_instances)),
            Err(error) => Err(classify_trap(&error, store.data().limits.refused(), self.limits.request_timeout, self.limits.memory_bytes)),
        }
    }

    /// Runs one request on a warm instance of `handler`, or a new one.
    ///
    /// `params` are the route parameters (`/users/:id`); the guest reads them from
    /// `wasi:config/store` as `params.NAME`. `scheme` is how the request arrived.
    pub async fn serve<B>(
        self: &Arc<Self>,
        handler: &Handler,
        params: &std::collections::BTreeMap<String, String>,
        scheme: Scheme,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, HandlerError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let (response_sender, response) = tokio::sync::oneshot::channel();
        let (outcome_sender, outcome) = tokio::sync::oneshot::channel();
        let turn = Turn {
            config: handler.request_config(params),
            deadline: deadline::Deadline::new(deadline.into_std()),
            outcome: outcome_sender,
            scheme,
        };
        let body_deadline = turn.deadline.clone();
        let running = Running::start(&self.running);
        let runtime = self.clone();
        let guest_handler = handler.clone();
        let guest: GuestRun = Box::pin(async move {
            let _running = running;
            let run = std::panic::AssertUnwindSafe(runtime.run_guest(&guest_handler, turn, request, response_sender));
            // A host bug that panics fails this request, not the caller's connection.
            futures_util::FutureExt::catch_unwind(run)
                .await
                .unwrap_or_else(|_| Err(HandlerError::Trap("the host failed while running the handler".into())))
        });
        let (response, still_running) = self.wait_for_response(deadline, response, guest).await?;
        let stream_idle = self.limits.stream_idle_timeout;
        Ok(response
            .map(|body| outcome::GuardedBody::wrap(body, outcome, body_deadline, stream_idle, handler.context.clone(), still_running)))
    }

    /// Drives `guest` on the caller's task until it sets its response head, or why it set
    /// none by `deadline`. Most guests (every forward, every answer made in one go) have
    /// returned by then; one still running (streaming its body) goes on as a task of its
    /// own, returned to be ended if its caller goes away. So a request costs no task and no
    /// cross-task wakeup unless its guest needs one.
    ///
    /// A caller that goes away before the head drops this future, and the guest with it:
    /// its instance and its slot are free at once, and a request it has in flight upstream
    /// is audited as abandoned (`state::Sending`).
    async fn wait_for_response(
        &self,
        deadline: tokio::time::Instant,
        mut response: tokio::sync::oneshot::Receiver<GuestResponse>,
        mut guest: GuestRun,
    ) -> Result<(hyper::Response<HyperOutgoingBody>, Option<GuestTask>), HandlerError> {
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        let woke = tokio::select! {
            biased;
            finished = &mut guest => Woke::Finished(finished),
            head = &mut response => Woke::Head(head),
            () = &mut timeout => Woke::Deadline,
        };
        match woke {
            Woke::Finished(finished) => match response.try_recv() {
                Ok(Ok(response)) => Ok((response, None)),
                Ok(Err(code)) => Err(HandlerError::Guest(code)),
                // The guest dropped its response outparam: its result says why.
                Err(_) => Err(finished.err().unwrap_or(HandlerError::NoResponse)),
            },
            Woke::Head(head) => {
                // A guest that was suspended in a host call (every forward is) while its time
                // slice ran out yields at its first epoch check after, usually just after
                // setting its head and just before returning. One more turn here lets it
                // return on this task: its outcome is known before the body is polled, so a
                // short body leaves with the head in one write, and it needs no task of its
                // own. One still running after that (streaming its body) goes on as a task;
                // how it ends reaches the body through its outcome.
                let turn = std::future::poll_fn(|cx| std::task::Poll::Ready(guest.as_mut().poll(cx))).await;
                let still_running = turn.is_pending().then(|| GuestTask::new(&tokio::spawn(guest)));
                match head {
                    Ok(Ok(response)) => Ok((response, still_running)),
                    Ok(Err(code)) => Err(HandlerError::Guest(code)),
                    Err(_closed) => Err(HandlerError::NoResponse),
                }
            }
            // Past the deadline the guest is ended (dropped with this future), not carried on.
            Woke::Deadline => Err(HandlerError::Timeout(self.limits.request_timeout)),
        }
    }

    /// Runs the guest's `handle` for one request, on a pooled or new instance, and puts
    /// the instance back when it finished cleanly.
    async fn run_guest<B>(
        &self,
        handler: &Handler,
        turn: Turn,
        mut request: hyper::Request<B>,
        response: tokio::sync::oneshot::Sender<GuestResponse>,
    ) -> Result<(), HandlerError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut instance = match handler.pool.take() {
            Some(instance) => instance,
            None => self.instantiate(handler).await?,
        };
        instance.served += 1;
        let deadline = turn.deadline.clone();
        // A copy of the caller's headers costs a few reference counts (names and values are
        // shared bytes); a forward then sends them on without converting each one twice.
        let caller_headers = request.headers().clone();
        // wasi-http's request conversion drops extensions, the caller's upgrade with them.
        let upgrade = request.extensions_mut().remove::<WebSocketUpgrade>();
        instance.store.data_mut().begin_request(turn.config, turn.deadline, turn.outcome, caller_headers, upgrade);
        instance.store.set_epoch_deadline(1);
        let mut http = instance.store.data_mut().http();
        let request = match http.new_incoming_request(turn.scheme, request) {
            Ok(request) => request,
            Err(error) => {
                // The guest never saw it: the instance is as good as before.
                drop(instance.store.data_mut().end_request());
                handler.pool.give_back(instance);
                return Err(HandlerError::BadRequest(error.to_string()));
            }
        };
        let outparam = http.new_response_outparam(response).map_err(|e| HandlerError::Instantiate(format!("{e:#}")))?;
        let call = instance.proxy.wasi_http_incoming_handler().call_handle(&mut instance.store, request, outparam);
        let returned = until_deadline(call, &deadline).await;
        self.finish(handler, instance, returned)
    }

    /// Decides what a guest's return (or its deadline) means for the request and for the
    /// instance: only an instance that returned cleanly and holds nothing serves again.
    fn finish(&self, handler: &Handler, mut instance: Instance, returned: Option<wasmtime::Result<()>>) -> Result<(), HandlerError> {
        let timeout = self.limits.request_timeout;
        match returned {
            // Returned, but still holding its response body or other HTTP resources: the
            // request is not finished, and the instance must not serve another.
            Some(Ok(())) => match instance.store.data_mut().leftovers() {
                state::Leftovers::Unfinished => {
                    crate::warn_limited!(route = %handler.context.route, "the handler returned without finishing its response body; the response is cut off");
                    Err(HandlerError::Trap("the handler returned without finishing its response body".into()))
                }
                leftovers => {
                    let outcome = instance.store.data_mut().end_request();
                    if leftovers == state::Leftovers::Clean {
                        handler.pool.give_back(instance);
                    } else {
                        // The answer is whole; only this instance must not serve again. It is
                        // dropped before the outcome is sent, so its slot is free by then.
                        drop(instance);
                    }
                    if let Some(outcome) = outcome {
                        let _ = outcome.send(outcome::Outcome::Succeeded);
                    }
                    Ok(())
                }
            },
            Some(Err(error)) => Err(classify_trap(&error, instance.store.data().limits.refused(), timeout, self.limits.memory_bytes)),
            None => Err(HandlerError::Timeout(timeout)),
        }
    }
}

/// What [`Runtime::wait_for_response`] woke up to first.
enum Woke {
    Finished(Result<(), HandlerError>),
    Head(Result<GuestResponse, tokio::sync::oneshot::error::RecvError>),
    Deadline,
}

/// A guest's run for one request, from instance to return.
type GuestRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send>>;

/// A guest still running after its response head went out (streaming its body), as a task
/// of its own. Dropped while its answer is unfinished (the caller went away), it ends the
/// guest, which frees its instance slot at once rather than at the deadline.
pub(super) struct GuestTask(Option<tokio::task::AbortHandle>);

impl GuestTask {
    fn new(task: &tokio::task::JoinHandle<Result<(), HandlerError>>) -> Self {
        Self(Some(task.abort_handle()))
    }

    /// The guest finished its answer: it may go on (work after its response is its own,
    /// until its deadline) whatever the caller does now.
    pub(super) fn release(mut self) {
        self.0 = None;
    }
}

impl Drop for GuestTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// What one request brings to the instance that serves it.
struct Turn {
    /// The guest's `wasi:config/store` for this request.
    config: Arc<WasiConfigVariables>,
    deadline: deadline::Deadline,
    /// Told how the request ended once its response body is done.
    outcome: tokio::sync::oneshot::Sender<outcome::Outcome>,
    scheme: Scheme,
}

/// What a guest sets its response outparam to.
type GuestResponse = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

impl Handler {
    /// The guest's `wasi:config/store` for one request: the route's options, plus its
    /// parameters as `params.NAME`. Only routes with parameters pay for a copy.
    fn request_config(&self, params: &std::collections::BTreeMap<String, String>) -> Arc<WasiConfigVariables> {
        if params.is_empty() {
            return self.config.clone();
        }
        let mut vars = WasiConfigVariables::new();
        for (key, value) in self.options.iter() {
            vars.insert(key.clone(), value.clone());
        }
        for (key, value) in params {
            vars.insert(format!("params.{key}"), value.clone());
        }
        Arc::new(vars)
    }
}

/// Drives `call` until it returns or `deadline` passes (`None`). A guest waiting on the host
/// is not interrupted by the epoch, so this is what ends it then; the deadline may move
/// while the response streams.
async fn until_deadline<T>(call: impl std::future::Future<Output = T>, deadline: &deadline::Deadline) -> Option<T> {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return Some(result),
            () = tokio::time::sleep_until(deadline.get().into()) => {
                if deadline.passed() {
                    return None;
                }
            }
        }
    }
}

fn classify_trap(error: &wasmtime::Error, memory_refused: bool, timeout: Duration, memory_limit: usize) -> HandlerError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return HandlerError::Timeout(timeout);
    }
    // The limiter refused a growth: whatever the guest did next (trap, abort on a failed
    // allocation), the memory cap is why.
    if memory_refused {
        return HandlerError::MemoryExceeded(memory_limit);
    }
    HandlerError::Trap(format!("{error:#}"))
}
