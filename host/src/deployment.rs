//! This host's registration in the store: which config it serves and which certificate
//! names that config uses. `cert disable`, `update` and `delete` read these registrations to
//! refuse cutting off a live deployment; a registration whose heartbeat stops is ignored.
//!
//! The server owns its [`Registration`]: it registers when it starts listening, publishes the
//! names again after a reload, and the registration is removed when it stops (or drops).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;

use crate::Environment;
use crate::store::{Deployment, Store, StoreError, StoreLocation};

/// The variable that names this node in a shared store (default: the host name), so a
/// refusal such as "in use by … on node-b" says which machine to look at.
pub const NODE_NAME_ENV: &str = "EDGEMTLS_NODE_NAME";

/// How often a serving host refreshes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// One serving host's record in the store, kept fresh while it lives.
pub struct Registration {
    store: Mutex<Store>,
    deployment: Mutex<Deployment>,
    /// Whether the last heartbeat failed: an unreachable store is one warning, not one per beat.
    failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &lock(&self.deployment).id).finish_non_exhaustive()
    }
}

/// What a host says about itself when it registers.
#[derive(Debug, Clone)]
pub struct HostInfo<'a> {
    /// The address it serves on; the port tells apart several listeners of one process.
    pub listen: SocketAddr,
    /// The config file it serves.
    pub config_path: &'a Path,
    /// The environment it serves.
    pub environment: Environment,
    /// The certificate names its config uses.
    pub certificates: Vec<String>,
}

impl Registration {
    /// Registers this host in the store at `location` and keeps its heartbeat fresh on a
    /// thread of its own until the registration drops.
    pub fn register(location: &StoreLocation, host: HostInfo<'_>) -> Result<Arc<Self>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let deployment = Deployment {
            // Unique across nodes sharing a store, where pids and ports repeat.
            id: format!("dep_{}", crate::store::random_hex::<6>()?),
            hostname: node_name(),
            pid: std::process::id(),
            config_path: std::fs::canonicalize(host.config_path).unwrap_or_else(|_| host.config_path.to_path_buf()).display().to_string(),
            environment: host.environment,
            listen: host.listen.to_string(),
            certificates: host.certificates,
            started_at: now,
            heartbeat_at: now,
        };
        let mut store = Store::open_existing(location)?;
        store.register_deployment(&deployment)?;
        let registration = Arc::new(Self {
            store: Mutex::new(store),
            deployment: Mutex::new(deployment),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        registration.keep_alive();
        Ok(registration)
    }

    /// Replaces the certificate names this deployment reports (after a config reload, and
    /// again once the previous config's requests have finished).
    pub fn set_certificates(&self, certificates: Vec<String>) -> Result<(), StoreError> {
        let mut deployment = lock(&self.deployment);
        deployment.certificates = certificates;
        lock(&self.store).heartbeat(&deployment.id, &deployment.certificates)
    }

    fn heartbeat(&self) -> Result<(), StoreError> {
        let deployment = lock(&self.deployment).clone();
        lock(&self.store).heartbeat(&deployment.id, &deployment.certificates)
    }

    fn keep_alive(self: &Arc<Self>) {
        let spawned = crate::background::every("edgemtls-heartbeat", HEARTBEAT_EVERY, self, |registration| {
            let result = registration.heartbeat();
            let was_failing = registration.failing.swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
            match result {
                Err(error) if !was_failing => {
                    tracing::warn!(%error, "deployment heartbeat failed; retrying every beat (other nodes stop seeing this one after {} s)", crate::store::DEPLOYMENT_TTL.whole_seconds());
                }
                Ok(()) if was_failing => tracing::info!("deployment heartbeat works again"),
                _ => {}
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the deployment heartbeat; `cert delete` will stop seeing this host");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = lock(&self.deployment).id.clone();
        if let Err(error) = lock(&self.store).remove_deployment(&id) {
            tracing::warn!(%error, "cannot remove the deployment registration");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This node's name: `EDGEMTLS_NODE_NAME`, else the host name.
pub fn node_name() -> String {
    match std::env::var(NODE_NAME_ENV) {
        Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
        _ => gethostname::gethostname().to_string_lossy().into_owned(),
    }
}
