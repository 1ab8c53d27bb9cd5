//! The one upstream every system under test talks to: requires client certificates,
//! answers `?bytes=N` with N bytes, and counts which certificate each request presented
//! against the `x-expect-cn` header. Stats: plain HTTP `GET /stats` on `--stats-listen`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use edgemtls_dev_upstream::{EchoOptions, EchoTuning, EchoUpstream};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    client_ca: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    stats_listen: SocketAddr,
    /// Close the connection after every response.
    #[arg(long)]
    close: bool,
    /// Refuse TLS session resumption.
    #[arg(long)]
    no_resumption: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (server_chain, server_key) = edgemtls_bench::load_identity(&args.cert, &args.key)?;
    let options =
        EchoOptions { client_ca: edgemtls_bench::load_certs(&args.client_ca)?, server_chain, server_key, require_client_cert: true };
    let tuning = EchoTuning {
        record_requests: false,
        x25519_only: true,
        resumption: !args.no_resumption,
        close_connections: args.close,
        tls12_only: false,
    };
    let upstream = Arc::new(EchoUpstream::start_tuned(args.listen, options, tuning).await?);
    let stats = tokio::net::TcpListener::bind(args.stats_listen).await?;
    println!("ready");
    loop {
        let (stream, _) = stats.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                let log = upstream.log().clone();
                async move {
                    let body = serde_json::json!({
                        "connections": log.connections(),
                        "handshakes": log.handshakes(),
                        "resumed_handshakes": log.resumed_handshakes(),
                        "tls12_handshakes": log.tls12_handshakes(),
                        "refused_handshakes": log.refused_handshakes(),
                        "served": log.served(),
                        "matched": log.matched(),
                        "mismatched": log.mismatched(),
                    });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body.to_string()))))
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
