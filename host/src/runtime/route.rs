//! What a route's requests share: how certificate names resolve, where metrics go, what the
//! audit log says about them, and where their handler may send requests.

use std::sync::Arc;

use crate::Environment;
use crate::metrics::Metrics;
use crate::resolve::Resolver;

/// What a request's outbound calls need to know about where they come from; one per route,
/// shared by its requests.
#[derive(Debug)]
pub struct RouteContext {
    /// Resolves certificate names.
    pub resolver: Arc<Resolver>,
    /// Where outbound requests are counted.
    pub metrics: Arc<Metrics>,
    /// The route's path pattern (audit log, metrics).
    pub route: String,
    /// The handler as configured (audit log).
    pub handler: String,
    /// The environment the host runs in (audit log).
    pub environment: Environment,
    /// The config version this route belongs to; held by every request running on it, so a
    /// reload knows when they have all finished.
    pub version: Arc<crate::drain::Version>,
    /// Where the route's handler may send requests.
    pub egress: crate::config::Egress,
}
