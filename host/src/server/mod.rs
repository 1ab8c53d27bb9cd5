//! The HTTP front: routing requests to handlers, reloading the config, the admin endpoints,
//! and turning failures into problem+json.
//!
//! [`App`] and the routes it serves are here; the rest is one file per stage of its life:
//! `prepare.rs` (every check a config passes before it serves, at start and at a reload),
//! `reload.rs` (swapping a new config in), `listen.rs` (listeners, connections, stopping),
//! `request.rs` (one request, from its path to its handler's answer).

mod admin;
mod connection;
mod listen;
mod open_files;
mod path;
mod prepare;
mod reload;
mod request;
mod router;
mod write_timeout;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use crate::Problem;
pub use listen::{ServerHandle, spawn};
pub use prepare::{Prepared, StartupProblem};
pub use reload::ReloadReport;
pub use router::{RouteMatch, Router};

use crate::Environment;
use crate::config::{CallerRule, Config};
use crate::deployment::Registration;
use crate::drain;
use crate::inbound::{Caller, InboundTls};
use crate::metrics::Metrics;
use crate::resolve::Resolver;
use crate::runtime::{Handler, Runtime};
use crate::store::StoreLocation;

/// How often a serving host polls a store on its own disk for changes.
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often a serving host polls a shared store; its `NOTIFY` wakes the host sooner, and
/// this poll catches what a notification missed (sent while the connection was down).
pub const SHARED_STORE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How often the TLS listener's certificate, key, CA and CRL files are checked for changes.
pub const TLS_FILES_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A route's handler and what it asks of callers.
struct ServedRoute {
    handler: Handler,
    callers: CallerRule,
}

/// What one version of the config produced: routes and the certificate names they use.
struct Routes {
    router: Router<ServedRoute>,
    certificates: BTreeSet<String>,
    /// Every header any `caller_headers` table names (lower-case): callers' copies are
    /// removed from every request, whatever its route.
    caller_header_names: Vec<String>,
    /// Held by these routes and every request running on them (see [`crate::drain`]).
    version: Arc<drain::Version>,
}

/// A previous version of the routes whose requests may still be running.
struct Draining {
    version: Weak<drain::Version>,
    certificates: BTreeSet<String>,
}

/// Everything needed to answer requests. The routes are swapped on reload; requests in
/// flight finish on the routes (and identities) they started with.
pub struct App {
    runtime: Arc<Runtime>,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    routes: ArcSwap<Routes>,
    /// The TLS listener's certificate and callers' trust, when `[tls]` is set.
    inbound: Option<Arc<InboundTls>>,
    draining: Mutex<Vec<Draining>>,
    /// This host's record in the store, from when it listens until it stops.
    registration: Mutex<Option<Arc<Registration>>>,
    store: StoreLocation,
    /// One reload at a time (SIGHUP, `--watch` and `POST /reload` may coincide).
    reloading: tokio::sync::Mutex<()>,
    environment: Environment,
    config_path: PathBuf,
    /// What the app started with of the settings a reload cannot change.
    start_only: StartOnly,
}

/// The settings that take effect only at start: the listeners are bound and the runtime is
/// sized once. A reload that sees them changed says so rather than ignoring them silently.
#[derive(Debug, Clone, Copy)]
struct StartOnly {
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    limits: crate::config::Limits,
}

impl StartOnly {
    fn of(config: &Config) -> Self {
        Self { listen: config.listen, admin_listen: config.admin_listen, limits: config.limits }
    }

    /// One sentence for each of these settings that `config` changes, for the reload's
    /// warnings (which the log shows at WARN and `edgemtls reload` prints).
    fn changes(&self, config: &Config) -> Vec<String> {
        let restart = "which needs a restart: until then";
        let mut changes = Vec::new();
        if config.listen != self.listen {
            changes.push(format!(
                "listen changed from {} to {}, {restart} the server keeps listening where it started",
                self.listen, config.listen
            ));
        }
        if config.admin_listen != self.admin_listen {
            let shown = |addr: Option<SocketAddr>| addr.map_or_else(|| "none".to_string(), |addr| addr.to_string());
            changes.push(format!(
                "admin_listen changed from {} to {}, {restart} /healthz, /metrics and /reload stay where they started",
                shown(self.admin_listen),
                shown(config.admin_listen)
            ));
        }
        let limits = self.limits.changed_keys(&config.limits);
        if !limits.is_empty() {
            changes.push(format!("[limits] {} changed, {restart} the server keeps the limits it started with", limits.join(", ")));
        }
        changes
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("environment", &self.environment).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl App {
    fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// The resolver (for tests and admin endpoints).
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The environment this app serves.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The config file this app was started with (and reloads).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The certificate names in use: the current config's, and those of previous configs
    /// whose requests are still running.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = self.routes().certificates.clone();
        let mut draining = lock(&self.draining);
        draining.retain(|d| d.version.strong_count() > 0);
        for previous in draining.iter() {
            names.extend(previous.certificates.iter().cloned());
        }
        names.into_iter().collect()
    }
}

/// A connection's peer and, on the TLS listener, its caller (verified after the handshake,
/// and again when the listener's trust changes or the certificate expires).
#[derive(Debug)]
pub struct Connected {
    /// The peer's address.
    pub peer: SocketAddr,
    /// `None` on a plain-HTTP listener.
    pub caller: Option<arc_swap::ArcSwap<Caller>>,
}
