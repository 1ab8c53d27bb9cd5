//! An HTTPS load generator that presents a client certificate, for the inbound mTLS
//! scenarios: wrk cannot present one. It runs on one thread, like `wrk -t1`, so the load it
//! takes from the shared cores is the same for every system it measures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(clap::Args)]
pub struct Options {
    /// e.g. https://localhost:8443/const (the host name is checked against the server's certificate)
    #[arg(long)]
    url: String,
    /// Where to connect; the URL's host is still the name checked.
    #[arg(long)]
    connect: std::net::SocketAddr,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// A new TCP connection and a full TLS handshake for every request.
    #[arg(long)]
    handshake_per_request: bool,
    #[arg(long)]
    expect_bytes: usize,
}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(load(options))
}

async fn load(options: Options) -> anyhow::Result<()> {
    let uri: hyper::Uri = options.url.parse().context("--url")?;
    let host = uri.host().context("--url has no host")?.to_owned();
    let server_name = ServerName::try_from(host.clone())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in edgemtls_bench::load_certs(&options.ca)? {
        roots.add(cert)?;
    }
    let (chain, key) = edgemtls_bench::load_identity(&options.cert, &options.key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    // Every handshake a full one: the scenario measures the server's cost of verifying a caller.
    config.resumption = rustls::client::Resumption::disabled();
    let caller = Arc::new(Caller {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
        address: options.connect,
        path: uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into()),
        host,
        expect_bytes: options.expect_bytes,
    });

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..options.connections {
        let caller = caller.clone();
        let per_request = options.handshake_per_request;
        callers.spawn(async move { caller.run(deadline, per_request).await });
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while let Some(tally) = callers.join_next().await {
        let tally = tally?;
        latencies.extend(tally.latencies);
        failures.extend(tally.failures);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile =
        |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).map_or(0, |d| d.as_micros());
    failures.truncate(5);
    println!(
        "{}",
        serde_json::json!({
            "requests": latencies.len(),
            "rps": latencies.len() as f64 / elapsed,
            "p50_us": percentile(0.50),
            "p99_us": percentile(0.99),
            "failures": failures,
        })
    );
    Ok(())
}

struct Caller {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    address: std::net::SocketAddr,
    path: String,
    host: String,
    expect_bytes: usize,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Caller {
    async fn run(&self, deadline: Instant, per_request: bool) -> Tally {
        let mut tally = Tally::default();
        let mut sender: Option<Sender> = None;
        while Instant::now() < deadline {
            let started = Instant::now();
            let outcome = async {
                // A server may close a keep-alive connection between requests (nginx after
                // `keepalive_requests`): that is HTTP, not a failure; connect again.
                let reusable = match sender.as_mut() {
                    Some(open) if !per_request => open.ready().await.is_ok(),
                    _ => false,
                };
                if !reusable {
                    sender = Some(self.connect().await?);
                }
                let Some(sender) = sender.as_mut() else { anyhow::bail!("no connection") };
                self.request(sender, per_request).await
            }
            .await;
            match outcome {
                Ok(()) => tally.latencies.push(started.elapsed()),
                Err(error) => {
                    tally.failures.push(format!("{error:#}"));
                    sender = None;
                    if tally.failures.len() > 100 {
                        break;
                    }
                }
            }
        }
        tally
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = TcpStream::connect(self.address).await?;
        tcp.set_nodelay(true)?;
        let tls = self.connector.connect(self.server_name.clone(), tcp).await.context("TLS handshake")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn request(&self, sender: &mut Sender, close: bool) -> anyhow::Result<()> {
        let mut request = hyper::Request::get(self.path.as_str()).header("host", self.host.as_str());
        if close {
            request = request.header("connection", "close");
        }
        sender.ready().await?;
        let response = sender.send_request(request.body(Empty::new())?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status == 200, "answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        anyhow::ensure!(body.len() == self.expect_bytes, "answered {} bytes, not {}", body.len(), self.expect_bytes);
        Ok(())
    }
}
