//! The engine every handler runs on: the pooling allocator sized by `[limits]`, epoch
//! interruption with its ticker thread, the disk cache of compiled code, and the linker with
//! every interface a guest may import.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::Linker;
use wasmtime::{Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_config::WasiConfig;

use super::{HostState, Runtime, bindings, compile, state};
use crate::config::Limits;

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
        let cache = compile::disk::open();
        let mut config = EngineConfig::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cache(cache.clone())
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        with_perf_map(&mut config);
        let engine = Engine::new(&config).or_else(|error| {
            // Some sandboxes refuse the pooling allocator's large reservations.
            tracing::warn!(%error, "pooling allocator unavailable; using on-demand allocation");
            let mut config = EngineConfig::new();
            config.wasm_component_model(true).epoch_interruption(true).cache(cache);
            with_perf_map(&mut config);
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
        // engine: so a guest still running at shutdown still meets its deadline. Its pace
        // (idle, calm, slicing) is `slice.rs`'s.
        let ticker_engine = engine.weak();
        let running = Arc::new(AtomicU64::new(0));
        let ticker_running = running.clone();
        let ticks = super::slice::Ticks::default();
        let ticker_ticks = ticks.clone();
        std::thread::Builder::new().name("edgemtls-epoch".into()).spawn(move || {
            loop {
                std::thread::sleep(ticker_ticks.pace(ticker_running.load(Ordering::Relaxed) > 0));
                match ticker_engine.upgrade() {
                    Some(engine) => {
                        ticker_ticks.advance();
                        engine.increment_epoch();
                    }
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
            ticks,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_instances as usize)),
            tunnels: Arc::new(state::Tunnels::new(limits.max_websockets, limits.websocket_idle_timeout)),
        })
    }
}

/// With `EDGEMTLS_PERF_MAP=1`, compiled guest code is named in `/tmp/perf-PID.map`, so `perf`
/// attributes a guest's samples to its functions rather than to unknown addresses (for
/// profiling; `bench/profile.py`).
fn with_perf_map(config: &mut EngineConfig) {
    if std::env::var_os("EDGEMTLS_PERF_MAP").is_some_and(|value| value == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
}
