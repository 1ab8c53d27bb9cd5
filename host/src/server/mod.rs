//! The HTTP front: routing requests to handlers, reloading the config, the admin endpoints,
//! and turning failures into problem+json.

mod admin;
mod connection;
mod open_files;
mod path;
mod router;
mod write_timeout;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use crate::Problem;
pub use router::{RouteMatch, Router};

use crate::Environment;
use crate::config::Egress;
use crate::config::{CallerRule, Config, certificate_references, option_problems};
use crate::deployment::{HostInfo, Registration};
use crate::drain;
use crate::inbound::{self, Caller, InboundTls};
use crate::metrics::Metrics;
use crate::resolve::{Resolver, Snapshot};
use crate::runtime::{Handler, RouteContext, Runtime, Scheme};
use crate::store::StoreLocation;
use crate::upstream::{OwnListener, TrustProfiles};

/// How often a serving host polls a store on its own disk for changes.
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often a serving host polls a shared store; its `NOTIFY` wakes the host sooner, and
/// this poll catches what a notification missed (sent while the connection was down).
pub const SHARED_STORE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How often the TLS listener's certificate, key, CA and CRL files are checked for changes.
pub const TLS_FILES_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A problem found while preparing to serve; `check` lists them all, `serve` refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupProblem(pub String);

impl std::fmt::Display for StartupProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// What [`App::reload`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// The config file.
    pub config: String,
    /// Things worth knowing that did not stop the reload.
    pub warnings: Vec<String>,
    /// The certificate names the new config uses.
    pub certificates: Vec<String>,
    /// Whether every request that started on the previous config had finished when the
    /// reload returned. When false, the deployment keeps reporting the previous config's
    /// certificates (so `cert disable` and `cert delete` still refuse them) until they have.
    pub drained: bool,
    /// Milliseconds from the start of the reload until it returned.
    pub took_ms: u64,
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

/// The result of [`App::prepare`]: the app when nothing is wrong, and warnings either way.
#[derive(Debug)]
pub struct Prepared {
    /// The app, or every problem that stops it from starting.
    pub app: Result<App, Vec<StartupProblem>>,
    /// Things worth knowing that do not stop it (expiry warnings, weakened verification).
    pub warnings: Vec<String>,
}

fn trust_problems(config: &Config, environment: Environment, problems: &mut Vec<StartupProblem>, warnings: &mut Vec<String>) {
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let hosts = upstream.hosts.join(", ");
        if upstream.is_weakened() {
            let what = if upstream.verify { "check_hostname = false" } else { "verify = false" };
            if environment == Environment::Production {
                problems.push(StartupProblem(format!("upstreams[{index}] ({hosts}): {what} is refused in production")));
            } else {
                warnings.push(format!("upstreams[{index}] ({hosts}): {what} weakens upstream verification"));
            }
        }
        if upstream.tls_versions == crate::config::TlsVersions::Tls12Only {
            warnings.push(format!(
                "upstreams[{index}] ({hosts}): tls_versions = [\"1.2\"] leaves TLS 1.3 out; a session resumed with these hosts \
                 exchanges no new keys (no forward secrecy), and the client certificate crosses the network unencrypted"
            ));
        }
        if upstream.revocation.checks() && upstream.revocation.soft_fail {
            warnings.push(format!(
                "upstreams[{index}] ({hosts}): revocation_soft_fail = true lets a connection through when its revocation status cannot be learned"
            ));
        }
    }
}

/// Builds one version of the routes from a config: loads every route's component and checks
/// every certificate name the config uses against the store as it was read for this version.
/// Collects every problem (so `check` lists them all) and warning on the way.
struct RouteBuilder<'a> {
    runtime: &'a Runtime,
    resolver: &'a Arc<Resolver>,
    metrics: &'a Arc<Metrics>,
    environment: Environment,
    problems: Vec<StartupProblem>,
    warnings: Vec<String>,
}

impl RouteBuilder<'_> {
    /// The routes, or every problem that stops them; the warnings either way.
    fn build(mut self, config: &Config, snapshot: &Snapshot) -> (Result<Routes, Vec<StartupProblem>>, Vec<String>) {
        let version = drain::Version::new();
        let vars = config.vars_for(self.environment);
        let mut names = BTreeSet::new();
        let mut router = Router::default();
        for route in &config.routes {
            let (handler, references) = self.route(config, &vars, route, &version);
            names.extend(references);
            if let Some(handler) = handler {
                router.add(&route.path, ServedRoute { handler, callers: route.callers.clone() });
            }
        }
        let certificates = self.check_certificates(names, snapshot);
        let mut caller_header_names: Vec<String> = config.tls.iter().flat_map(|tls| &tls.caller_headers).map(|h| h.name.clone()).collect();
        caller_header_names.extend(config.routes.iter().flat_map(|route| &route.callers.headers).map(|h| h.name.clone()));
        caller_header_names.sort();
        caller_header_names.dedup();
        let routes = Routes { router, certificates, caller_header_names, version };
        let result = if self.problems.is_empty() { Ok(routes) } else { Err(self.problems) };
        (result, self.warnings)
    }

    /// One route's handler (`None` when it has a problem, which is recorded) and the
    /// certificate names it uses, with where each came from: checked even when the handler
    /// cannot load, so that `check` reports both.
    fn route(
        &mut self,
        config: &Config,
        vars: &BTreeMap<String, String>,
        route: &crate::config::Route,
        version: &Arc<drain::Version>,
    ) -> (Option<Handler>, Vec<(String, String)>) {
        let environment = self.environment;
        let resolved = config
            .resolved_options(route, environment)
            .and_then(|options| config.resolved_certificates(route, environment).map(|declared| (options, declared)));
        let (options, declared) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => {
                self.problems.push(StartupProblem(error.to_string()));
                return (None, Vec::new());
            }
        };
        self.problems.extend(option_problems(route, &options).into_iter().map(StartupProblem));
        let references: Vec<(String, String)> = certificate_references(route, &options, &declared, vars)
            .into_iter()
            .map(|reference| (reference.name, reference.origin))
            .collect();
        let egress = Egress::for_route(route.allowed_outbound_hosts.as_deref(), options.values(), &config.upstreams);
        if egress.allows_everything() {
            self.warnings.push(format!("route '{}': allowed_outbound_hosts = [\"*\"] lets its handler call any upstream", route.path));
        }
        let pre = match self.runtime.load_source(&route.component) {
            Ok(pre) => pre,
            Err(error) => {
                self.problems.push(StartupProblem(format!("route '{}': {error}", route.path)));
                return (None, references);
            }
        };
        let context = Arc::new(RouteContext {
            resolver: self.resolver.clone(),
            metrics: self.metrics.clone(),
            route: route.path.clone(),
            handler: route.handler.clone(),
            environment,
            version: version.clone(),
            egress,
        });
        (Some(self.runtime.handler(pre, context, &options, vars, route.reuse)), references)
    }

    /// Resolves every certificate name in `snapshot`; returns the names deployments report.
    fn check_certificates(&mut self, names: BTreeSet<(String, String)>, snapshot: &Snapshot) -> BTreeSet<String> {
        let now = time::OffsetDateTime::now_utc();
        let mut certificates = BTreeSet::new();
        for (name, origin) in names {
            match snapshot.resolve_at(&name, now) {
                Ok(identity) => {
                    if let Some(warning) = snapshot.expiry_warning(&name, now) {
                        self.warnings.push(format!("{origin}: {warning}"));
                    }
                    // Deployments list the certificate's name, also when the config used its
                    // id, so that delete and disable protection see it.
                    certificates.insert(identity.name().map(str::to_string).unwrap_or(name));
                }
                Err(error) => {
                    self.problems.push(StartupProblem(format!("{origin}: {error}")));
                    certificates.insert(name);
                }
            }
        }
        certificates
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl App {
    /// Loads every component, resolves every certificate name the config refers to, and
    /// collects all problems instead of stopping at the first.
    pub fn prepare(config: &Config, environment: Environment, store: &StoreLocation) -> Prepared {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        trust_problems(config, environment, &mut problems, &mut warnings);
        if !problems.is_empty() {
            return Prepared { app: Err(problems), warnings };
        }
        let fail = |problem: String, warnings| Prepared { app: Err(vec![StartupProblem(problem)]), warnings };
        let trust = match TrustProfiles::new(&config.upstreams) {
            Ok(trust) => Arc::new(trust),
            Err(error) => return fail(error.to_string(), warnings),
        };
        let resolver = match Resolver::open(store, environment, trust) {
            Ok(resolver) => resolver,
            Err(error) => return fail(error.to_string(), warnings),
        };
        let inbound = match config.tls.as_ref().map(InboundTls::load).transpose() {
            Ok(inbound) => inbound.map(Arc::new),
            Err(error) => return fail(error.to_string(), warnings),
        };
        let runtime = match Runtime::new(config.limits) {
            Ok(runtime) => Arc::new(runtime),
            Err(error) => return fail(format!("cannot start the runtime: {error:#}"), warnings),
        };
        let metrics = Arc::new(Metrics::new());
        let snapshot = resolver.current();
        let builder = RouteBuilder { runtime: &runtime, resolver: &resolver, metrics: &metrics, environment, problems, warnings };
        let (routes, warnings) = builder.build(config, &snapshot);
        let routes = match routes {
            Ok(routes) => routes,
            Err(problems) => return Prepared { app: Err(problems), warnings },
        };
        let app = App {
            runtime,
            resolver,
            metrics,
            routes: ArcSwap::from_pointee(routes),
            inbound,
            draining: Mutex::new(Vec::new()),
            registration: Mutex::new(None),
            store: store.clone(),
            reloading: tokio::sync::Mutex::new(()),
            environment,
            config_path: config.path.clone(),
            start_only: StartOnly::of(config),
        };
        Prepared { app: Ok(app), warnings }
    }

    /// Applies a new version of the config: new routes, options, variables and upstream
    /// trust, checked against the store as it is now. Nothing changes unless all of it is
    /// valid. Returns once the new config serves and the requests that started on the
    /// previous one have finished (at most the request timeout later), so that a
    /// certificate the previous config used can be disabled safely right after. Limits and
    /// listen addresses need a restart: a change to them is a warning in the report.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<ReloadReport, Vec<StartupProblem>> {
        let started = Instant::now();
        let _one_at_a_time = self.reloading.lock().await;
        // Reading the store and compiling components block: keep them off the async workers.
        let app = self.clone();
        let (prepared, config) = tokio::task::spawn_blocking(move || (app.prepare_reload(&config), config))
            .await
            .map_err(|error| vec![StartupProblem(format!("the reload stopped unexpectedly: {error}"))])?;
        let (routes, snapshot, tls, mut warnings) = prepared?;
        warnings.extend(self.start_only.changes(&config));

        // Everything is valid: only now swap in the new trust, listener files and routes.
        self.resolver.install(snapshot);
        if let (Some(inbound), Some(tls)) = (&self.inbound, tls) {
            inbound.install(tls);
        }
        let certificates: Vec<String> = routes.certificates.iter().cloned().collect();
        let previous = self.routes.swap(Arc::new(routes));
        lock(&self.draining).push(Draining { version: Arc::downgrade(&previous.version), certificates: previous.certificates.clone() });
        self.metrics.record_reload();
        tracing::info!(config = %config.path.display(), "config reloaded; waiting for requests on the previous config");

        // Until the previous version's requests are done, the deployment reports the
        // certificates of both, so nothing they use can be disabled under them.
        self.publish_certificates_in_use();
        let mut finished = drain::retire(previous.version.clone());
        drop(previous);
        let limit = self.runtime.limits().request_timeout + Duration::from_secs(1);
        let drained = drain::finished_within(&mut finished, limit).await;
        if drained {
            self.publish_certificates_in_use();
        } else {
            let app = self.clone();
            tokio::spawn(async move {
                let _ = finished.await;
                app.publish_certificates_in_use();
            });
        }
        let report = ReloadReport {
            config: config.path.display().to_string(),
            warnings,
            certificates,
            drained,
            took_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(config = %report.config, drained, took_ms = report.took_ms, "config reloaded");
        Ok(report)
    }

    /// The blocking part of a reload: trust, the listener's files, a fresh read of the
    /// store, the routes.
    #[allow(clippy::type_complexity)]
    fn prepare_reload(
        &self,
        config: &Config,
    ) -> Result<(Routes, Arc<Snapshot>, Option<inbound::PreparedTls>, Vec<String>), Vec<StartupProblem>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        trust_problems(config, self.environment, &mut problems, &mut warnings);
        if !problems.is_empty() {
            return Err(problems);
        }
        let tls = match (&self.inbound, &config.tls) {
            (Some(_), Some(settings)) => Some(InboundTls::prepare(settings).map_err(|e| vec![StartupProblem(e.to_string())])?),
            (None, None) => None,
            _ => {
                return Err(vec![StartupProblem(
                    "[tls] was added or removed: switching the listener between HTTP and HTTPS needs a restart".into(),
                )]);
            }
        };
        let trust = TrustProfiles::new(&config.upstreams).map_err(|e| vec![StartupProblem(e.to_string())])?;
        let snapshot = self.resolver.load_with_trust(Arc::new(trust)).map_err(|e| vec![StartupProblem(e.to_string())])?;
        let builder = RouteBuilder {
            runtime: &self.runtime,
            resolver: &self.resolver,
            metrics: &self.metrics,
            environment: self.environment,
            problems,
            warnings,
        };
        let (routes, warnings) = builder.build(config, &snapshot);
        Ok((routes?, snapshot, tls, warnings))
    }

    /// Writes the certificate names in use to this deployment's record in the store.
    fn publish_certificates_in_use(&self) {
        let registration = lock(&self.registration).clone();
        if let Some(registration) = registration
            && let Err(error) = registration.set_certificates(self.certificate_names())
        {
            tracing::warn!(%error, "cannot update the deployment record; `cert delete` may see stale names");
        }
    }

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

    /// Registers this host as a deployment in the store (`listen` is what it reports).
    pub fn register(&self, listen: SocketAddr) {
        let host =
            HostInfo { listen, config_path: &self.config_path, environment: self.environment, certificates: self.certificate_names() };
        match Registration::register(&self.store, host) {
            Ok(registration) => *lock(&self.registration) = Some(registration),
            Err(error) => tracing::warn!(%error, "cannot register the deployment; `cert delete` will not see this host"),
        }
    }

    /// Serves on `listener` (and the admin listener, if configured) until `shutdown`
    /// resolves, then stops accepting, lets requests in flight finish (at most
    /// `drain_timeout`) and removes this host's deployment registration.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> std::io::Result<()> {
        self.start(listener.local_addr()?, admin)?;
        self.accept(listener, shutdown, drain_timeout).await
    }

    /// Binds the admin listener (`admin_listen` in the config, unless `addr` overrides it).
    pub async fn bind_admin(&self, addr: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
        let Some(addr) = addr.or(self.start_only.admin_listen) else { return Ok(None) };
        let listener = TcpListener::bind(addr).await.map_err(|error| {
            std::io::Error::new(error.kind(), crate::plain::cannot_listen(addr, "--admin-listen", "admin_listen", &error))
        })?;
        Ok(Some(listener))
    }

    /// Registers the deployment, starts the store watcher and the admin endpoints.
    fn start(self: &Arc<Self>, listen: SocketAddr, admin: Option<TcpListener>) -> std::io::Result<()> {
        self.register(listen);
        let runtime = Arc::downgrade(&self.runtime);
        tokio::spawn(async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            loop {
                every_second.tick().await;
                let Some(runtime) = runtime.upgrade() else { break };
                runtime.expire_idle_instances();
            }
        });
        self.resolver.watch(STORE_POLL_INTERVAL, SHARED_STORE_POLL_INTERVAL);
        if let Some(tls) = &self.inbound {
            // A renewed server certificate or a new CRL is picked up without a reload.
            crate::background::every("edgemtls-tls-files", TLS_FILES_POLL_INTERVAL, tls, InboundTls::reload_if_changed)?;
        }
        if let Some(admin) = admin {
            let addr = admin.local_addr()?;
            // The host's own guests may never call its admin endpoints.
            let forbidden = crate::upstream::forbid_own_listener(addr, OwnListener::Admin);
            tracing::info!(%addr, "admin endpoints: /healthz, /metrics, POST /reload");
            let app = self.clone();
            tokio::spawn(async move {
                let _forbidden = forbidden;
                admin::serve(app, admin).await;
            });
        }
        Ok(())
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        // A route calling this host's own listener would come back here, and with more than
        // one call per request multiply until the host is busy.
        let _forbidden = crate::upstream::forbid_own_listener(listener.local_addr()?, OwnListener::Routes);
        let stopping = connection::Stopping::new();
        let limits = self.runtime.limits();
        // Beyond the open-file limit, callers would wait unanswered in the backlog: shed them.
        let max_connections = open_files::connection_limit(limits.max_connections);
        let connections = Arc::new(tokio::sync::Semaphore::new(max_connections as usize));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Slow or idle clients do not hold a connection for ever: the headers of each request,
        // and the next request on a keep-alive connection, must come within the timeout
        // (HTTP/2's idle connections are closed by `connection::serve`).
        builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: never fatal; let some close.
                        crate::warn_limited!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tokio::spawn(connection::shed(stream));
                continue;
            };
            let served = self.clone().connection(stream, peer, builder.clone(), stopping.watcher());
            tokio::spawn(async move {
                let _permit = permit;
                served.await;
            });
        }
        drop(listener);
        tracing::info!(timeout_ms = drain_timeout.as_millis() as u64, "stopping: finishing requests in flight");
        let drained = tokio::time::timeout(drain_timeout, stopping.finished()).await.is_ok();
        if !drained {
            tracing::warn!("stopping with requests still in flight after the drain timeout");
        }
        // Removes the registration (unless a heartbeat holds it this instant; then it goes
        // when that ends).
        lock(&self.registration).take();
        Ok(())
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

impl App {
    /// Serves one accepted connection: the TLS handshake first, when `[tls]` is set.
    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
        stop: connection::StopWatcher,
    ) {
        let header_timeout = self.runtime.limits().header_timeout;
        let Some(tls) = self.inbound.clone() else {
            let connected = Arc::new(Connected { peer, caller: None });
            let handle = move |request| self.clone().handle(connected.clone(), request);
            return connection::serve_plain(stream, peer, builder, header_timeout, stop, handle).await;
        };
        let accepted = match tls.accept(stream, header_timeout).await {
            Ok(accepted) => accepted,
            Err(failure) => {
                self.metrics.record_handshake_failure(failure.as_str());
                tracing::debug!(%peer, reason = failure.as_str(), "TLS handshake failed");
                return;
            }
        };
        let builder = if accepted.http2 { builder.http2_only() } else { builder.http1_only() };
        let connected = Arc::new(Connected { peer, caller: Some(arc_swap::ArcSwap::from_pointee(accepted.caller)) });
        let handle = move |request| self.clone().handle(connected.clone(), request);
        let io = hyper_util::rt::TokioIo::new(accepted.stream);
        connection::serve(io, peer, builder, header_timeout, stop, handle).await;
    }
}

/// Binds `addr` and serves `app` in the background; the handle stops it when dropped.
pub async fn spawn(app: App, addr: SocketAddr) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Arc::new(app);
    let admin = app.bind_admin(None).await?;
    app.start(local, admin)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain_timeout = app.runtime.limits().request_timeout;
    let task = tokio::spawn(app.clone().accept(
        listener,
        async {
            let _ = stopped.await;
        },
        drain_timeout,
    ));
    Ok(ServerHandle { addr: local, app, stop: Some(stop), task })
}

/// A server started by [`spawn`]; stops when dropped.
pub struct ServerHandle {
    /// The bound address.
    pub addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The app being served (to reload its config).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops as SIGTERM does: no new connections, requests in flight finish, the deployment
    /// is unregistered. Returns when all of that is done.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("addr", &self.addr).finish()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
