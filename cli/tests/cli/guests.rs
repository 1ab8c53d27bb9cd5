//! Guests that never stop computing, against the real `serve`: other requests and the admin
//! listener are answered meanwhile, and SIGINT or SIGTERM stops the host within its drain
//! timeout whatever the guests are doing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::common::*;

const PROBE: &str = edgemtls_plugins::paths::MTLS_PROBE;

/// A spinning request, sent from its own thread (it gets no answer before the deadline);
/// the thread returns what came back.
fn spin(port: u16) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut response = Vec::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(stream, "GET /probe HTTP/1.1\r\nHost: 127.0.0.1\r\nx-mode: spin\r\nConnection: close\r\n\r\n");
            let _ = stream.read_to_end(&mut response);
        }
        String::from_utf8_lossy(&response).into_owned()
    })
}

fn stops_on(signal: &str) -> Result<()> {
    let sandbox = Sandbox::new()?;
    let admin = free_port()?;
    let config = sandbox.write(
        "edgemtls.toml",
        format!(
            "admin_listen = \"127.0.0.1:{admin}\"\n[limits]\nrequest_timeout_ms = 3000\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"
        ),
    )?;
    let port = free_port()?;
    let serve = sandbox
        .command(["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut serve = Running(serve);
    wait_for(port)?;
    wait_for(admin)?;

    // Two spinning guests, as many as a 2-core machine has async workers.
    let spinners = [spin(port), spin(port)];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(admin, "/metrics")?;
        if metrics.contains("edgemtls_instances_created_total{route=\"/probe\"} 2") {
            break;
        }
        ensure!(Instant::now() < deadline, "the two spinning guests never started:\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Everything else is still answered.
    let (status, _) = http_get(admin, "/healthz")?;
    ensure!(status == 200, "/healthz answered {status}");
    let (status, body) = http_get(port, "/nothing-here")?;
    ensure!(status == 404, "{status}: {body}");

    let sent = Instant::now();
    let killed = Command::new("kill").arg(format!("-{signal}")).arg(serve.0.id().to_string()).status()?;
    ensure!(killed.success(), "kill -{signal} failed");
    // The drain timeout is the request timeout plus a second; allow for a loaded machine.
    let deadline = sent + Duration::from_secs(30);
    while serve.0.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "serve still runs 30 s after {signal} with spinning guests");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The requests in flight were drained: each got its answer (the deadline's 504).
    for spinner in spinners {
        let response = spinner.join().map_err(|_| anyhow::anyhow!("spinner thread panicked"))?;
        ensure!(response.starts_with("HTTP/1.1 504"), "a spinning request got: {response:?}");
    }
    Ok(())
}

#[test]
fn sigint_stops_the_host_while_guests_spin() -> Result<()> {
    stops_on("INT")
}

#[test]
fn sigterm_stops_the_host_while_guests_spin() -> Result<()> {
    stops_on("TERM")
}
