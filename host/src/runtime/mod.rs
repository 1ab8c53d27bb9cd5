//! The WebAssembly runtime: one engine, a `ProxyPre` per component prepared once, and per
//! route a pool of warm instances, each serving one request at a time with the request's own
//! deadline, memory cap and outbound request cap.
//!
//! Guests run on the async workers and yield to them at every epoch tick, so a guest that
//! computes costs its own request only; at the deadline the guest is interrupted (or, when
//! it waits on the host, dropped) and its instance reclaimed.
//!
//! The rooms: `engine` (the engine, its epoch and the linker), `compile` (components
//! compiled once, in memory and on disk), `serve` (one request on one instance), `pool`
//! (warm instances per route), `state` (what an instance owns, and its host calls), `error`
//! (why there was no response).

pub(crate) mod bindings;
mod compile;
mod deadline;
mod engine;
mod error;
mod guest_output;
mod outcome;
mod pool;
mod route;
mod serve;
mod slice;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use compile::MAX_COMPONENT_BYTES;
pub use compile::disk::COMPILE_CACHE_ENV;
pub use error::HandlerError;
pub use route::RouteContext;
pub use state::{HostState, WebSocketUpgrade};
/// The scheme a request arrived with (`https` on the TLS listener), as guests see it.
pub use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::config::{Limits, Reuse};
use pool::InstancePool;

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
    /// The epoch's ticks, which guests' time slices are measured in.
    ticks: slice::Ticks,
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
    /// The limits applied to each request.
    pub fn limits(&self) -> Limits {
        self.limits
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
}
