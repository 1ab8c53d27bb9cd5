//! The HTTP front: routing requests to handlers and turning failures into problem+json.

mod problem;
mod router;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use problem::problem_response;
pub use router::{Router, RouteMatch};

use crate::Environment;
use crate::config::Config;
use crate::resolve::Resolver;
use crate::runtime::{HandlerError, Runtime};
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

/// Everything needed to answer requests: runtime, resolver and routes.
pub struct App {
    runtime: Runtime,
    resolver: Arc<Resolver>,
    router: Router,
    environment: Environment,
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
    /// Things worth knowing that do not stop it (expiry warnings).
    pub warnings: Vec<String>,
}

impl App {
    /// Loads every component, resolves every certificate name the config refers to, and
    /// collects all problems instead of stopping at the first.
    pub fn prepare(config: &Config, environment: Environment, store_dir: &Path) -> Prepared {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let trust = match TrustProfiles::new(&config.upstreams) {
            Ok(trust) => Arc::new(trust),
            Err(error) => return Prepared { app: Err(vec![StartupProblem(error.to_string())]), warnings },
        };
        let resolver = match Resolver::open(store_dir, environment, trust) {
            Ok(resolver) => resolver,
            Err(error) => return Prepared { app: Err(vec![StartupProblem(error.to_string())]), warnings },
        };
        let runtime = match Runtime::new(config.limits) {
            Ok(runtime) => runtime,
            Err(error) => return Prepared { app: Err(vec![StartupProblem(format!("cannot start the runtime: {error:#}"))]), warnings },
        };

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
            match runtime.load(&route.component) {
                Ok(pre) => {
                    let handler = runtime.handler(pre, &options, &vars);
                    router.add(&route.path, handler);
                }
                Err(error) => problems.push(StartupProblem(format!("route '{}': {error}", route.path))),
            }
        }
        // Variables whose name mentions a certificate are taken to hold certificate names.
        for (key, value) in &vars {
            let upper = key.to_ascii_uppercase();
            if upper.contains("CERT") && !value.is_empty() {
                names.insert((value.clone(), format!("variable {key} of environment {environment}")));
            }
        }
        let now = time::OffsetDateTime::now_utc();
        for (name, origin) in names {
            match resolver.resolve_at(&name, now) {
                Ok(_) => {
                    if let Some(warning) = resolver.expiry_warning(&name, now) {
                        warnings.push(format!("{origin}: {warning}"));
                    }
                }
                Err(error) => problems.push(StartupProblem(format!("{origin}: {error}"))),
            }
        }

        if !problems.is_empty() {
            return Prepared { app: Err(problems), warnings };
        }
        Prepared { app: Ok(App { runtime, resolver, router, environment }), warnings }
    }

    /// The resolver (for tests and admin endpoints).
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> hyper::Response<HyperOutgoingBody> {
        let path = request.uri().path().to_string();
        let Some(found) = self.router.route(&path) else {
            return problem_response(hyper::StatusCode::NOT_FOUND, "no-route", "No route", &format!("no route matches '{path}'"));
        };
        match self.runtime.serve(found.handler, self.resolver.clone(), request).await {
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
        }
    }

    /// Serves on `listener` until `shutdown` resolves; reloads certificates while serving.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let app = Arc::new(self);
        app.resolver.watch(STORE_POLL_INTERVAL);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
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

/// Binds `addr` and serves `app` in the background; returns the bound address and a handle
/// that stops the server when dropped.
pub async fn spawn(app: App, addr: SocketAddr) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app.serve(listener, async { let _ = stopped.await; }).await;
    });
    Ok((local, ServerHandle { _stop: stop, task }))
}

/// Stops a server started by [`spawn`] when dropped.
pub struct ServerHandle {
    _stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHandle")
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
