//! The HTTP front: routing requests to handlers, reloading the config, the admin endpoints,
//! and turning failures into problem+json.

mod admin;
mod problem;
mod router;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use problem::problem_response;
pub use router::{RouteMatch, Router};

use crate::Environment;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::resolve::Resolver;
use crate::runtime::{HandlerError, RouteContext, Runtime};
use crate::store::Deployment;
use crate::upstream::TrustProfiles;

/// How often a serving host polls the store for changes.
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A problem found while preparing to serve; `check` lists them all, `serve` refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupProblem(pub String);

impl std::fmt::Display for StartupProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one version of the config produced: routes and the certificate names they use.
struct Routes {
    router: Router,
    certificates: BTreeSet<String>,
}

/// Everything needed to answer requests. The routes are swapped on reload; requests in
/// flight finish on the routes (and identities) they started with.
pub struct App {
    runtime: Runtime,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    routes: RwLock<Arc<Routes>>,
    environment: Environment,
    config_path: PathBuf,
    admin_listen: Option<SocketAddr>,
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
        if upstream.is_weakened() {
            let what = if upstream.verify { "check_hostname = false" } else { "verify = false" };
            let hosts = upstream.hosts.join(", ");
            if environment == Environment::Production {
                problems.push(StartupProblem(format!("upstreams[{index}] ({hosts}): {what} is refused in production")));
            } else {
                warnings.push(format!("upstreams[{index}] ({hosts}): {what} weakens upstream verification"));
            }
        }
    }
}

/// Loads every route's component and resolves every certificate name the config uses.
fn build_routes(
    runtime: &Runtime,
    resolver: &Arc<Resolver>,
    metrics: &Arc<Metrics>,
    config: &Config,
    environment: Environment,
    problems: &mut Vec<StartupProblem>,
    warnings: &mut Vec<String>,
) -> Option<Routes> {
    let vars = config.vars_for(environment);
    let mut names = BTreeSet::new();
    let mut router = Router::default();
    for route in &config.routes {
        let options = match config.resolved_options(route, environment) {
            Ok(options) => options,
            Err(error) => {
                problems.push(StartupProblem(error.to_string()));
                continue;
            }
        };
        if let Some(name) = options.get("mtlsCertificate").filter(|n| !n.is_empty()) {
            names.insert((name.clone(), format!("route '{}' option mtlsCertificate", route.path)));
        }
        match runtime.load_source(&route.component) {
            Ok(pre) => {
                let context = Arc::new(RouteContext {
                    resolver: resolver.clone(),
                    metrics: metrics.clone(),
                    route: route.path.clone(),
                    handler: route.handler.clone(),
                    environment,
                });
                router.add(&route.path, runtime.handler(pre, context, &options, &vars));
            }
            Err(error) => problems.push(StartupProblem(format!("route '{}': {error}", route.path))),
        }
    }
    // Variables whose name mentions a certificate are taken to hold certificate names.
    for (key, value) in &vars {
        if key.to_ascii_uppercase().contains("CERT") && !value.is_empty() {
            names.insert((value.clone(), format!("variable {key} of environment {environment}")));
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let mut certificates = BTreeSet::new();
    for (name, origin) in names {
        match resolver.resolve_at(&name, now) {
            Ok(_) => {
                if let Some(warning) = resolver.expiry_warning(&name, now) {
                    warnings.push(format!("{origin}: {warning}"));
                }
            }
            Err(error) => problems.push(StartupProblem(format!("{origin}: {error}"))),
        }
        certificates.insert(name);
    }
    problems.is_empty().then_some(Routes { router, certificates })
}

impl App {
    /// Loads every component, resolves every certificate name the config refers to, and
    /// collects all problems instead of stopping at the first.
    pub fn prepare(config: &Config, environment: Environment, store_dir: &Path) -> Prepared {
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
        let resolver = match Resolver::open(store_dir, environment, trust) {
            Ok(resolver) => resolver,
            Err(error) => return fail(error.to_string(), warnings),
        };
        let runtime = match Runtime::new(config.limits) {
            Ok(runtime) => runtime,
            Err(error) => return fail(format!("cannot start the runtime: {error:#}"), warnings),
        };
        let metrics = Arc::new(Metrics::new());
        let Some(routes) = build_routes(&runtime, &resolver, &metrics, config, environment, &mut problems, &mut warnings)
        else {
            return Prepared { app: Err(problems), warnings };
        };
        let app = App {
            runtime,
            resolver,
            metrics,
            routes: RwLock::new(Arc::new(routes)),
            environment,
            config_path: config.path.clone(),
            admin_listen: config.admin_listen,
        };
        Prepared { app: Ok(app), warnings }
    }

    /// Applies a new version of the config: new routes, options, variables and upstream
    /// trust. Nothing changes unless all of it is valid. Limits and listen addresses need a
    /// restart.
    pub fn reload(&self, config: &Config) -> Result<Vec<String>, Vec<StartupProblem>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        trust_problems(config, self.environment, &mut problems, &mut warnings);
        if !problems.is_empty() {
            return Err(problems);
        }
        let trust = TrustProfiles::new(&config.upstreams).map_err(|e| vec![StartupProblem(e.to_string())])?;
        let routes =
            build_routes(&self.runtime, &self.resolver, &self.metrics, config, self.environment, &mut problems, &mut warnings)
                .ok_or(problems)?;
        // Everything is valid: only now swap in the new trust and routes.
        self.resolver.set_trust(Arc::new(trust)).map_err(|e| vec![StartupProblem(e.to_string())])?;
        let certificates: Vec<String> = routes.certificates.iter().cloned().collect();
        match self.routes.write() {
            Ok(mut guard) => *guard = Arc::new(routes),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(routes),
        }
        if let Err(error) = self.resolver.update_deployment_certificates(certificates) {
            warnings.push(format!("cannot update the deployment record: {error}"));
        }
        self.metrics.record_reload();
        tracing::info!(config = %config.path.display(), "config reloaded");
        Ok(warnings)
    }

    fn routes(&self) -> Arc<Routes> {
        match self.routes.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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

    /// The certificate names the current config uses.
    pub fn certificate_names(&self) -> Vec<String> {
        self.routes().certificates.iter().cloned().collect()
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> hyper::Response<HyperOutgoingBody> {
        let started = Instant::now();
        let routes = self.routes();
        let path = request.uri().path().to_string();
        let Some(found) = routes.router.route(&path) else {
            let response =
                problem_response(hyper::StatusCode::NOT_FOUND, "no-route", "No route", &format!("no route matches '{path}'"));
            self.metrics.record_request("(none)", 404, started.elapsed());
            return response;
        };
        let response = match self.runtime.serve(found.handler, &found.params, request).await {
            Ok(response) => response,
            Err(error) => {
                let (status, kind) = match &error {
                    HandlerError::Timeout(_) => (hyper::StatusCode::GATEWAY_TIMEOUT, "handler-timeout"),
                    HandlerError::MemoryExceeded(_) => (hyper::StatusCode::INTERNAL_SERVER_ERROR, "handler-memory-limit"),
                    HandlerError::Instantiate(_) => (hyper::StatusCode::SERVICE_UNAVAILABLE, "handler-unavailable"),
                    HandlerError::Guest(_) => (hyper::StatusCode::BAD_GATEWAY, "handler-error"),
                    _ => (hyper::StatusCode::INTERNAL_SERVER_ERROR, "handler-failed"),
                };
                tracing::warn!(route = found.pattern, %error, "request failed");
                problem_response(status, kind, "Handler failed", &error.to_string())
            }
        };
        self.metrics.record_request(found.pattern, response.status().as_u16(), started.elapsed());
        response
    }

    /// Registers this host as a deployment in the store (`listen` is what it reports).
    pub fn register(&self, listen: SocketAddr) {
        let deployment = Deployment {
            // One process may serve several listeners (tests do): the port tells them apart.
            id: format!("dep_{}_{}", std::process::id(), listen.port()),
            hostname: std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into()),
            pid: std::process::id(),
            config_path: std::fs::canonicalize(&self.config_path).unwrap_or_else(|_| self.config_path.clone()).display().to_string(),
            environment: self.environment,
            listen: listen.to_string(),
            certificates: self.certificate_names(),
            started_at: time::OffsetDateTime::now_utc(),
            heartbeat_at: time::OffsetDateTime::now_utc(),
        };
        if let Err(error) = self.resolver.register_deployment(deployment) {
            tracing::warn!(%error, "cannot register the deployment; `cert delete` will not see this host");
        }
    }

    /// Serves on `listener` (and the admin listener, if configured) until `shutdown`
    /// resolves; reloads certificates while serving.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        self.start(listener.local_addr()?).await?;
        self.accept(listener, shutdown).await
    }

    /// Registers the deployment, starts the store watcher and the admin listener.
    async fn start(self: &Arc<Self>, listen: SocketAddr) -> std::io::Result<()> {
        self.register(listen);
        self.resolver.watch(STORE_POLL_INTERVAL);
        if let Some(addr) = self.admin_listen {
            let admin = TcpListener::bind(addr).await?;
            tracing::info!(addr = %admin.local_addr()?, "admin endpoints: /healthz, /metrics");
            tokio::spawn(admin::serve(self.clone(), admin));
        }
        Ok(())
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let app = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(%peer, error = %error, "connection closed with an error");
                }
            });
        }
    }
}

/// Binds `addr` and serves `app` in the background; the handle stops it when dropped.
pub async fn spawn(app: App, addr: SocketAddr) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Arc::new(app);
    app.start(local).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.clone().accept(listener, async {
        let _ = stopped.await;
    }));
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
