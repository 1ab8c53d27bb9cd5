//! Applying a new version of the config to a running app ([`App::reload`]): checked as at
//! start (`prepare.rs`), then swapped in whole, while requests on the previous version finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prepare::{RouteBuilder, StartupProblem, upstream_trust};
use super::{App, Draining, Routes, lock};
use crate::config::Config;
use crate::drain;
use crate::inbound::{self, InboundTls};
use crate::resolve::Snapshot;

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

impl App {
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
        let mut warnings = Vec::new();
        let trust = upstream_trust(config, self.environment, &mut warnings)?;
        let tls = match (&self.inbound, &config.tls) {
            (Some(_), Some(settings)) => Some(InboundTls::prepare(settings).map_err(|e| vec![StartupProblem(e.to_string())])?),
            (None, None) => None,
            _ => {
                return Err(vec![StartupProblem(
                    "[tls] was added or removed: switching the listener between HTTP and HTTPS needs a restart".into(),
                )]);
            }
        };
        crate::pkcs11::configure(config.pkcs11.clone());
        let snapshot = self.resolver.load_with_trust(trust).map_err(|e| vec![StartupProblem(e.to_string())])?;
        let builder = RouteBuilder::new(&self.runtime, &self.resolver, &self.metrics, self.environment, warnings);
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
}
