//! Callers that hold connections: slow headers and idle keep-alive connections are closed
//! after the header timeout, and connections beyond `max_connections` get a 503.

use std::time::{Duration, Instant};

use edgemtls_host::Environment;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Reads until the server closes the connection; returns what it sent. Fails after 30 s.
async fn read_until_closed(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&received).into_owned()),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => anyhow::bail!("the connection was still open after 30 s"),
        }
    }
}

/// Sends a request on a new connection until one is answered 200 (at most 30 s, else fails
/// saying `waiting`); returns the answers refused before it.
async fn served_again(addr: std::net::SocketAddr, waiting: &str) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = Vec::new();
    loop {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\nx-mode: env\r\nx-var: HOME\r\nConnection: close\r\n\r\n").await?;
        let answer = read_until_closed(&mut stream).await?;
        if answer.starts_with("HTTP/1.1 200") {
            return Ok(refused);
        }
        anyhow::ensure!(Instant::now() < deadline, "still refused after {waiting}: {answer}");
        refused.push(answer);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(world: &World, limits: &str) -> anyhow::Result<std::path::PathBuf> {
    world.config_raw(&format!("[limits]\n{limits}\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"))
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let world = World::new()?;
    let host = world.serve(&config(&world, "header_timeout_ms = 300")?, Environment::Development).await?;

    // Slowloris: a request line and one header, then nothing.
    let mut slow = TcpStream::connect(host.addr).await?;
    slow.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\n").await?;
    // Idle: connected, silent.
    let mut idle = TcpStream::connect(host.addr).await?;
    // The start of the HTTP/2 preface, then nothing.
    let mut preface = TcpStream::connect(host.addr).await?;
    preface.write_all(b"PRI * HT").await?;
    // Keep-alive: one request answered, then silence.
    let mut kept = TcpStream::connect(host.addr).await?;
    kept.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\nx-mode: env\r\nx-var: HOME\r\n\r\n").await?;

    read_until_closed(&mut slow).await?;
    read_until_closed(&mut idle).await?;
    read_until_closed(&mut preface).await?;
    let answered = read_until_closed(&mut kept).await?;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // And the host still serves.
    assert_eq!(host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_the_rest_are_served() -> anyhow::Result<()> {
    let world = World::new()?;
    let host = world.serve(&config(&world, "max_connections = 3")?, Environment::Development).await?;

    // Three connections, each proven open by an answered request.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(host.addr).await?;
        stream.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\nx-mode: env\r\nx-var: HOME\r\n\r\n").await?;
        let mut buffer = [0u8; 12];
        stream.read_exact(&mut buffer).await?;
        assert_eq!(&buffer, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(host.addr).await?;
    let answer = read_until_closed(&mut fourth).await?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    // Once one closes, new connections are served again.
    drop(held.pop());
    served_again(host.addr, "30 s after a connection closed").await?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_after_the_timeout() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let body = format!(
        "[limits]\nheader_timeout_ms = 300\nmax_connections = 1\nstream_idle_timeout_ms = 120000\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    // Asks for 64 MiB and reads none of it, holding the only connection slot.
    let target = upstream_url(&upstream, "/big?bytes=67108864");
    let mut reader_that_never_reads = TcpStream::connect(host.addr).await?;
    reader_that_never_reads
        .write_all(format!("GET /probe HTTP/1.1\r\nHost: x\r\nx-target: {target}\r\nx-certificate: alpha\r\n\r\n").as_bytes())
        .await?;

    // The slot comes back once the stalled write times out.
    let refused = served_again(host.addr, "30 s while the stalled connection held the slot").await?;
    assert!(refused.iter().all(|answer| answer.starts_with("HTTP/1.1 503")), "{refused:?}");
    drop(reader_that_never_reads);
    Ok(())
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_timeout() -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Empty};
    let world = World::new()?;
    let host = world.serve(&config(&world, "header_timeout_ms = 300")?, Environment::Development).await?;

    let stream = TcpStream::connect(host.addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{}/probe", host.addr))
        .header("x-mode", "env")
        .header("x-var", "HOME")
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await?;

    // HTTP/2 pings keep the connection alive, so only the host's idle timer can close it.
    let closed = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection was still open after 30 s");
    assert_eq!(host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn an_http2_client_that_never_acknowledges_settings_is_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let world = World::new()?;
    let host = world.serve(&config(&world, "header_timeout_ms = 1000")?, Environment::Development).await?;

    // The preface and an empty SETTINGS frame, then silence: no SETTINGS ack, no HEADERS, no
    // answer to the host's pings.
    let mut stream = TcpStream::connect(host.addr).await?;
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await?;
    let opened = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => anyhow::ensure!(opened.elapsed() < Duration::from_secs(10), "still open after 10 s"),
            Err(_) => anyhow::bail!("the connection was still open after 10 s (header_timeout is 1 s)"),
        }
    }
    assert!(opened.elapsed() < Duration::from_secs(5), "closed only after {:?}", opened.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_download_longer_than_the_header_timeout_is_not_an_idle_connection() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let body = format!("[limits]\nheader_timeout_ms = 300\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n");
    let host = world.serve(&world.config(&body, upstream.addr())?, Environment::Development).await?;

    // 16 chunks of 64 KiB, 100 ms apart: the body streams for 1.6 s, five header timeouts.
    const BYTES: usize = 16 * 65536;
    let target = upstream_url(&upstream, &format!("/big?bytes={BYTES}&pause_ms=100"));
    let reply = host.get("/probe", &[("x-mode", "forward"), ("x-target", &target), ("x-certificate", "alpha")]).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), BYTES, "the download was cut");
    Ok(())
}
