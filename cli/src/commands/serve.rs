//! `edgemtls serve`, `edgemtls check` and `edgemtls dev-upstream`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgemtls_host::Environment;
use edgemtls_host::config::{Config, ConfigError};
use edgemtls_host::server::App;
use edgemtls_host::store::StoreLocation;

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
/// Certificate changes in the store apply within a second. The config file is reloaded by
/// `edgemtls reload` (which waits for the result), on SIGHUP, and on every change with
/// --watch; a config with problems is refused and the previous one keeps serving. SIGTERM
/// and SIGINT stop accepting, let requests in flight finish and unregister the deployment.
#[derive(Args)]
pub struct ServeCommand {
    #[command(flatten)]
    target: Target,
    /// Listen address (overrides `listen` in the config).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin listen address for /healthz, /metrics and POST /reload (overrides
    /// `admin_listen` in the config).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Reload the config whenever the file changes.
    #[arg(long)]
    watch: bool,
    /// Threads that serve requests. Default: TOKIO_WORKER_THREADS if set, else one per CPU
    /// the process may use. Fewer cost less CPU per request where the host shares its cores
    /// with other work (the threads hand each other less), as nginx's worker_processes; more
    /// serve more at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// Validates a config: loads every component and resolves every certificate name it uses.
#[derive(Args)]
pub struct CheckCommand {
    #[command(flatten)]
    target: Target,
}

/// Reloads the config of a running `edgemtls serve` and waits for the result.
///
/// Asks the host's admin endpoint (`admin_listen` in the config, or --admin) to reload the
/// config file it was started with. Returns when the new config serves and the requests
/// that started on the previous one have finished, so a certificate the previous config used
/// can be disabled right after. Exit 0 when reloaded, 1 when refused (every problem is
/// printed; the previous config keeps serving) or when the host cannot be reached.
#[derive(Args)]
pub struct ReloadCommand {
    /// The config file of the host to reload (its `admin_listen` says where the host is).
    #[arg(long, value_name = "FILE", default_value = "edgemtls.toml")]
    config: PathBuf,
    /// The host's admin address (overrides `admin_listen` in the config).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

/// The config, the app (or every problem), and the warnings.
type PreparedApp = (Config, Result<App, Vec<String>>, Vec<String>);

/// Loads the config a command names; a missing file gets the two ways forward.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|error| match &error {
        ConfigError::Read { error: io, .. } if io.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("{error}; name the config file with --config FILE, or make a project that has one with: edgemtls new NAME")
        }
        _ => error.into(),
    })
}

fn prepare(target: &Target, store: &StoreLocation) -> anyhow::Result<PreparedApp> {
    let config = load_config(&target.config)?;
    let prepared = App::prepare(&config, target.env, store);
    let app = prepared.app.map_err(|problems| problems.into_iter().map(|p| p.0).collect());
    Ok((config, app, prepared.warnings))
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stop with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

impl ServeCommand {
    pub fn execute(self, store: &StoreLocation) -> anyhow::Result<ExitCode> {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.enable_all();
        // A task woken by another on the same worker (a forward handing its request to the
        // upstream connection's task, that task handing the answer back) runs next by
        // default, so every request is written out alone, and the peers (caller and
        // upstream) are woken once per request. Woken tasks taking their turn instead, the
        // requests ready together are written together, and each wake-up serves several: on
        // a 2-core VM a native proxy 20 µs slower than hyper's best went from 1.0 to 0.16
        // wake-ups a request, and from 42 to 34 µs of CPU (bench/README.md).
        #[cfg(tokio_unstable)]
        runtime.disable_lifo_slot();
        if let Some(workers) = self.workers {
            runtime.worker_threads(workers.into());
        }
        let runtime = runtime.build().context("starting the async runtime")?;
        let workers = runtime.metrics().num_workers();
        let result = runtime.block_on(async move {
            let (config, app, warnings) = prepare(&self.target, store)?;
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            let app = match app {
                Ok(app) => app,
                Err(problems) => {
                    for problem in &problems {
                        eprintln!("error: {problem}");
                    }
                    anyhow::bail!("refusing to start: {} in '{}'", plural(problems.len(), "problem", "problems"), config.path.display());
                }
            };
            let addr = self.listen.unwrap_or(config.listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| anyhow::anyhow!(edgemtls_host::plain::cannot_listen(addr, "--listen", "listen", &error)))?;
            let admin = app.bind_admin(self.admin_listen).await?;
            let local = listener.local_addr()?;
            let routes = plural(config.routes.len(), "route", "routes");
            tracing::info!(addr = %local, environment = %self.target.env, routes = config.routes.len(), workers, "serving");
            let (scheme, callers) = match &config.tls {
                Some(tls) => ("https", format!(", client certificates {}", tls.client_auth.as_str())),
                None => ("http", String::new()),
            };
            say!("edgemtls serving on {scheme}://{local} (environment {}, {routes}{callers})", self.target.env);
            let app = std::sync::Arc::new(app);
            tokio::spawn(reload_on_signal_or_change(app.clone(), self.target.config.clone(), self.watch));
            // Requests get their own deadline; a second more lets their answers go out.
            let drain_timeout = config.limits.request_timeout + std::time::Duration::from_secs(1);
            app.serve(listener, admin, stop_signal(), drain_timeout).await?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        });
        // Guests still running past the drain timeout meet their deadline on their own; do
        // not wait for them here.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        result
    }
}

/// Reloads the config on SIGHUP, and when `watch` is set, whenever the file changes.
async fn reload_on_signal_or_change(app: std::sync::Arc<App>, path: PathBuf, watch: bool) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last_seen = modified(&path);
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; config reload only with --watch or edgemtls reload");
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
            Ok(config) => match app.reload(config).await {
                Ok(report) => {
                    for warning in report.warnings {
                        tracing::warn!("{warning}");
                    }
                    tracing::info!(%reason, took_ms = report.took_ms, "config reload done");
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

impl ReloadCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let admin = match self.admin {
            Some(admin) => admin,
            None => {
                let config = load_config(&self.config)?;
                config.admin_listen.with_context(|| {
                    format!(
                        "'{}' has no admin_listen, so there is no host to ask; add admin_listen = \"127.0.0.1:9090\" to it \
                         (and restart the host), or name the address with --admin",
                        self.config.display()
                    )
                })?
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
        let (status, body) = runtime.block_on(post_reload(admin)).with_context(|| {
            format!(
                "cannot reach the admin endpoint at {admin}; is `edgemtls serve --config {}` running?",
                edgemtls_host::shell::quote(&self.config.display().to_string())
            )
        })?;
        let reply: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the host at {admin} answered HTTP {status} with something other than a reload report"))?;
        let strings = |key: &str| -> Vec<String> {
            reply[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
        };
        if status == 200 {
            for warning in strings("warnings") {
                say!("warning: {warning}");
            }
            let names = strings("certificates");
            say!(
                "reloaded '{}' in {} ms; certificates in use: {}",
                reply["config"].as_str().unwrap_or_default(),
                reply["took_ms"].as_u64().unwrap_or_default(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
            if reply["drained"] == false {
                say!(
                    "note: requests that started on the previous config were still running; the host keeps \
                     reporting its certificates as in use until they finish"
                );
            }
            Ok(ExitCode::SUCCESS)
        } else {
            let problems = strings("problems");
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            anyhow::bail!("reload refused ({}); the previous config keeps serving", plural(problems.len(), "problem", "problems"))
        }
    }
}

/// `POST /reload` to the admin listener at `admin`; the status and the body.
async fn post_reload(admin: SocketAddr) -> anyhow::Result<(u16, bytes::Bytes)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/reload").header(hyper::header::HOST, admin.to_string()).body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

impl CheckCommand {
    pub fn execute(self, store: &StoreLocation) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(async move {
            let (config, app, warnings) = prepare(&self.target, store)?;
            for warning in &warnings {
                say!("warning: {warning}");
            }
            match app {
                Ok(_) => {
                    say!(
                        "ok: '{}' is ready for environment {} ({})",
                        config.path.display(),
                        self.target.env,
                        plural(config.routes.len(), "route", "routes")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for problem in &problems {
                        say!("error: {problem}");
                    }
                    say!(
                        "{} in '{}' for environment {}",
                        plural(problems.len(), "problem", "problems"),
                        config.path.display(),
                        self.target.env
                    );
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

fn read_pem_certs(path: &Path) -> anyhow::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
    let certs = edgemtls_host::pki::pem::certificates(&bytes).with_context(|| format!("parsing '{}'", path.display()))?;
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
        let options = edgemtls_dev_upstream::EchoOptions {
            client_ca: read_pem_certs(&self.client_ca)?,
            server_chain: identity.chain,
            server_key: identity.key,
            require_client_cert: true,
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let upstream = edgemtls_dev_upstream::EchoUpstream::start(self.listen, options).await?;
            say!("dev upstream on https://{} (client certificates required)", upstream.addr());
            let _ = tokio::signal::ctrl_c().await;
            Ok(ExitCode::SUCCESS)
        })
    }
}
