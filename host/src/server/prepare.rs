//! Everything a config must pass before it serves, at start ([`App::prepare`]) and at a
//! reload alike: the upstreams' settings and trust ([`upstream_trust`]), then, against the
//! store as read with that trust, every route's component, options and certificate names
//! ([`RouteBuilder`]). Every problem is collected, so `check` lists them all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{App, Routes, ServedRoute, StartOnly};
use crate::Environment;
use crate::config::{Config, Egress, certificate_references, option_problems};
use crate::drain;
use crate::inbound::InboundTls;
use crate::metrics::Metrics;
use crate::resolve::{Resolver, Snapshot};
use crate::runtime::{Handler, RouteContext, Runtime};
use crate::store::StoreLocation;
use crate::upstream::TrustProfiles;

/// A problem found while preparing to serve; `check` lists them all, `serve` refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupProblem(pub String);

impl std::fmt::Display for StartupProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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

/// The first step a start and a reload share: the upstreams' settings (weakened verification
/// is refused in production, other risks are warnings), then their trust profiles (CA
/// bundles, CRLs and pins, read from their files).
pub(super) fn upstream_trust(
    config: &Config,
    environment: Environment,
    warnings: &mut Vec<String>,
) -> Result<Arc<TrustProfiles>, Vec<StartupProblem>> {
    let mut problems = Vec::new();
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
    if !problems.is_empty() {
        return Err(problems);
    }
    TrustProfiles::new(&config.upstreams).map(Arc::new).map_err(|error| vec![StartupProblem(error.to_string())])
}

/// Builds one version of the routes from a config: loads every route's component and checks
/// every certificate name the config uses against the store as it was read for this version.
/// Collects every problem (so `check` lists them all) and warning on the way.
pub(super) struct RouteBuilder<'a> {
    runtime: &'a Runtime,
    resolver: &'a Arc<Resolver>,
    metrics: &'a Arc<Metrics>,
    environment: Environment,
    problems: Vec<StartupProblem>,
    warnings: Vec<String>,
}

impl<'a> RouteBuilder<'a> {
    /// A builder with the app's runtime, resolver and metrics, and the warnings so far.
    pub(super) fn new(
        runtime: &'a Runtime,
        resolver: &'a Arc<Resolver>,
        metrics: &'a Arc<Metrics>,
        environment: Environment,
        warnings: Vec<String>,
    ) -> Self {
        Self { runtime, resolver, metrics, environment, problems: Vec::new(), warnings }
    }

    /// The routes, or every problem that stops them; the warnings either way.
    pub(super) fn build(mut self, config: &Config, snapshot: &Snapshot) -> (Result<Routes, Vec<StartupProblem>>, Vec<String>) {
        let version = drain::Version::new();
        let vars = config.vars_for(self.environment);
        let mut names = BTreeSet::new();
        let mut router = super::Router::default();
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

impl App {
    /// Loads every component, resolves every certificate name the config refers to, and
    /// collects all problems instead of stopping at the first.
    pub fn prepare(config: &Config, environment: Environment, store: &StoreLocation) -> Prepared {
        let mut warnings = Vec::new();
        let trust = match upstream_trust(config, environment, &mut warnings) {
            Ok(trust) => trust,
            Err(problems) => return Prepared { app: Err(problems), warnings },
        };
        let fail = |problem: String, warnings| Prepared { app: Err(vec![StartupProblem(problem)]), warnings };
        // Token keys in the snapshot sign through this module, with this PIN variable.
        crate::pkcs11::configure(config.pkcs11.clone());
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
        let (routes, warnings) = RouteBuilder::new(&runtime, &resolver, &metrics, environment, warnings).build(config, &snapshot);
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
}
