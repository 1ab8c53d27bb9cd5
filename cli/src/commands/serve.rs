//! `edgemtls serve`, `edgemtls check` and `edgemtls dev-upstream`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgemtls_host::Environment;
use edgemtls_host::config::Config;
use edgemtls_host::server::App;

/// Where to read the config and which environment to run in.
#[derive(Args)]
pub struct Target {
    /// The config file.
    #[arg(long, value_name = "FILE", default_value = "edgemtls.toml")]
    config: PathBuf,
    /// The environment to resolve certificate names in.
    #[arg(long, env = "EDGEMTLS_ENV", default_value = "development")]
    env: Environment,
}

/// Serves the routes of a config file.
///
/// Certificate changes in the store apply within a second. The config file is reloaded on
/// SIGHUP, and on every change with --watch; a config with problems is refused and the
/// previous one keeps serving.
#[derive(Args)]
pub struct ServeCommand {
    #[command(flatten)]
    target: Target,
    /// Listen address (overrides `listen` in the config).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Reload the config whenever the file changes.
    #[arg(long)]
    watch: bool,
}

/// Validates a config: loads every component and resolves every certificate name it uses.
#[derive(Args)]
pub struct CheckCommand {
    #[command(flatten)]
    target: Target,
}

/// The config, the app (or every problem), and the warnings.
type PreparedApp = (Config, Result<App, Vec<String>>, Vec<String>);

fn prepare(target: &Target, store_dir: &Path) -> anyhow::Result<PreparedApp> {
    let config = Config::load(&target.config)?;
    let prepared = App::prepare(&config, target.env, store_dir);
    let app = prepared.app.map_err(|problems| problems.into_iter().map(|p| p.0).collect());
    Ok((config, app, prepared.warnings))
}

impl ServeCommand {
    pub fn execute(self, store_dir: &Path) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(async move {
            let (config, app, warnings) = prepare(&self.target, store_dir)?;
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            let app = match app {
                Ok(app) => app,
                Err(problems) => {
                    for problem in &problems {
                        eprintln!("error: {problem}");
                    }
                    anyhow::bail!("refusing to start: {} problem(s) in '{}'", problems.len(), config.path.display());
                }
            };
            let addr = self.listen.unwrap_or(config.listen);
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, environment = %self.target.env, routes = config.routes.len(), "serving");
            println!("edgemtls serving on http://{local} (environment {}, {} routes)", self.target.env, config.routes.len());
            let app = std::sync::Arc::new(app);
            tokio::spawn(reload_on_signal_or_change(app.clone(), self.target.config.clone(), self.watch));
            app.serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Reloads the config on SIGHUP, and when `watch` is set, whenever the file changes.
async fn reload_on_signal_or_change(app: std::sync::Arc<App>, path: PathBuf, watch: bool) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last_seen = modified(&path);
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; config reload only with --watch");
            None
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        let reason = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick(), if watch => {
                let now = modified(&path);
                if now == last_seen { continue; }
                last_seen = now;
                "file change"
            }
        };
        match Config::load(&path) {
            Ok(config) => match app.reload(&config) {
                Ok(warnings) => {
                    for warning in warnings {
                        tracing::warn!("{warning}");
                    }
                    tracing::info!(%reason, "config reloaded");
                }
                Err(problems) => {
                    for problem in &problems {
                        tracing::error!(%reason, "config reload refused: {problem}");
                    }
                }
            },
            Err(error) => tracing::error!(%reason, "config reload refused: {error}"),
        }
    }
}

impl CheckCommand {
    pub fn execute(self, store_dir: &Path) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(async move {
            let (config, app, warnings) = prepare(&self.target, store_dir)?;
            for warning in &warnings {
                println!("warning: {warning}");
            }
            match app {
                Ok(_) => {
                    println!(
                        "ok: '{}' is ready for environment {} ({} routes)",
                        config.path.display(),
                        self.target.env,
                        config.routes.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for problem in &problems {
                        println!("error: {problem}");
                    }
                    println!("{} problem(s) in '{}' for environment {}", problems.len(), config.path.display(), self.target.env);
                    Ok(ExitCode::FAILURE)
                }
            }
        })
    }
}

/// Runs a local HTTPS upstream that requires client certificates and answers with the
/// common name of the certificate each connection presented.
#[derive(Args)]
pub struct DevUpstreamCommand {
    /// CA certificate(s) that client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    client_ca: PathBuf,
    /// The server certificate chain (PEM), e.g. from `pki issue --server`.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The server key (PEM).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
}

fn read_pem_certs(path: &Path) -> anyhow::Result<Vec<edgemtls_host::echo::CertificateDer<'static>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
    let certs = edgemtls_host::echo::parse_pem_certificates(&bytes).with_context(|| format!("parsing '{}'", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "'{}' contains no certificate", path.display());
    Ok(certs)
}

impl DevUpstreamCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let identity = edgemtls_host::pki::load_identity(edgemtls_host::pki::ImportRequest {
            cert_path: &self.cert,
            key_path: Some(&self.key),
            password: None,
        })?;
        let options = edgemtls_host::echo::EchoOptions {
            client_ca: read_pem_certs(&self.client_ca)?,
            server_chain: identity.chain,
            server_key: identity.key,
            require_client_cert: true,
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let upstream = edgemtls_host::echo::EchoUpstream::start(self.listen, options).await?;
            println!("dev upstream on https://{} (client certificates required)", upstream.addr());
            let _ = tokio::signal::ctrl_c().await;
            Ok(ExitCode::SUCCESS)
        })
    }
}
