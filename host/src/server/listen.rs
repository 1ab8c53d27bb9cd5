//! The app's life on its listeners: registering the deployment, the background tasks a
//! serving host runs, accepting connections (within `max_connections`), serving each one
//! (TLS first with `[tls]`), and stopping: requests in flight finish, the registration goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use super::{
    App, Connected, SHARED_STORE_POLL_INTERVAL, STORE_POLL_INTERVAL, TLS_FILES_POLL_INTERVAL, admin, connection, lock, open_files,
};
use crate::deployment::{HostInfo, Registration};
use crate::inbound::InboundTls;
use crate::upstream::OwnListener;

impl App {
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
                connection::shed(stream);
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
