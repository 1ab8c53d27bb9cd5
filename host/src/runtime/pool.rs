//! Warm instances of one route, reused one request at a time.
//!
//! An instance that answered a request cleanly goes back to its route's pool and serves the
//! next one: no instantiation, no new WASI or wasi:http context. An instance that trapped, ran
//! past its deadline or served `max_requests_per_instance` requests is dropped, which returns
//! its slot to the engine's pooling allocator.

use std::sync::Mutex;
use std::time::Instant;

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::HostState;
use crate::config::Reuse;

/// An instantiated component and the store it lives in.
pub(super) struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) proxy: Proxy,
    /// Requests this instance has started.
    pub(super) served: u32,
    /// How long its guest has run since it was last resumed.
    pub(super) slice: super::slice::Slice,
    /// Its share of `max_instances`, given back when the instance is dropped.
    pub(super) _slot: tokio::sync::OwnedSemaphorePermit,
}

struct Idle {
    instance: Instance,
    since: Instant,
}

/// The idle instances of one route.
pub(super) struct InstancePool {
    reuse: Reuse,
    idle: Mutex<Vec<Idle>>,
}

impl InstancePool {
    pub(super) fn new(reuse: Reuse) -> Self {
        Self { reuse, idle: Mutex::new(Vec::new()) }
    }

    /// The most recently used idle instance, if one is still fresh enough.
    pub(super) fn take(&self) -> Option<Instance> {
        if self.reuse.max_requests_per_instance <= 1 {
            return None;
        }
        let (taken, expired) = {
            let mut idle = self.lock();
            let expired = self.drain_expired(&mut idle);
            (idle.pop(), expired)
        };
        // Dropping a store returns its slot to the allocator: not under the lock.
        drop(expired);
        taken.map(|idle| idle.instance)
    }

    /// Removes the instances idle for longer than the timeout (the oldest are at the front).
    fn drain_expired(&self, idle: &mut Vec<Idle>) -> Vec<Idle> {
        let now = Instant::now();
        let fresh_from = idle.iter().position(|i| now.duration_since(i.since) < self.reuse.idle_timeout).unwrap_or(idle.len());
        idle.drain(..fresh_from).collect()
    }

    /// Keeps `instance` for a later request, unless it has served its share or the route
    /// already keeps enough idle instances.
    pub(super) fn give_back(&self, instance: Instance) {
        if instance.served >= self.reuse.max_requests_per_instance {
            return;
        }
        let surplus = {
            let mut idle = self.lock();
            if idle.len() < self.reuse.max_idle_instances as usize {
                idle.push(Idle { instance, since: Instant::now() });
                None
            } else {
                Some(instance)
            }
        };
        drop(surplus);
    }

    /// Drops the idle instances unused for longer than the idle timeout.
    pub(super) fn expire_idle(&self) {
        let expired = self.drain_expired(&mut self.lock());
        drop(expired);
    }

    /// Drops every idle instance, returning their slots to the allocator.
    pub(super) fn evict_all(&self) {
        let evicted: Vec<Idle> = std::mem::take(&mut *self.lock());
        drop(evicted);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
