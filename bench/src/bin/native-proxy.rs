//! The practical limit: a minimal hyper + rustls reverse proxy with one pooled client
//! identity and no WebAssembly. `/const` answers locally (the native side of the
//! per-request overhead comparison); everything else is forwarded to `--upstream`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// e.g. https://localhost:8443
    #[arg(long)]
    upstream: String,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    ca: PathBuf,
    /// Spend this many microseconds of CPU on each forwarded request before sending it: a
    /// proxy as fast as this one in everything but that, to see what a slower user space
    /// costs the kernel (the peers it wakes) on the same machine.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
}

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (chain, key) = edgemtls_bench::load_identity(&args.cert, &args.key)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in edgemtls_bench::load_certs(&args.ca)? {
        roots.add(ca)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().wrap_connector(http);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let upstream: Arc<str> = args.upstream.trim_end_matches('/').into();
    let spin = std::time::Duration::from_micros(args.spin_us);

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    spin_for(spin);
                    Ok::<_, std::convert::Infallible>(forward(&client, &upstream, request).await)
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward<C>(client: &Client<C, Body>, upstream: &str, request: hyper::Request<Incoming>) -> hyper::Response<Body>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    if path == "/const" {
        return hyper::Response::new(Full::new(Bytes::from_static(b"ok\n")).map_err(|never| match never {}).boxed_unsync());
    }
    let (mut parts, body) = request.into_parts();
    parts.uri = match format!("{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return status(400),
    };
    parts.headers.remove(hyper::header::HOST);
    match client.request(hyper::Request::from_parts(parts, body.boxed_unsync())).await {
        Ok(response) => response.map(|b| b.boxed_unsync()),
        Err(_) => status(502),
    }
}

/// Busy for `duration` (of wall time, on a core this process has to itself while it runs).
fn spin_for(duration: std::time::Duration) {
    if duration.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

fn status(code: u16) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}
