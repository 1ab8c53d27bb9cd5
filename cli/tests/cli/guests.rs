//! Guests that never stop computing, against the real `serve`: other requests and the admin
//! listener are answered meanwhile, and SIGINT or SIGTERM stops the host within its drain
//! timeout whatever the guests are doing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::common::*;

const PROBE: &str = edgemtls_e2e::guests::MTLS_PROBE;

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

#[test]
fn what_a_guest_prints_is_logged_with_its_route_up_to_a_budget() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let config = sandbox
        .write("edgemtls.toml", format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 10\n"))?;
    let (_serve, port, log) = serve_logged(&sandbox, &config, true)?;

    // 10,000 lines of ~100 bytes: about 1 MB, sixteen times the budget; twice, on one
    // instance, to show the budget is per request.
    for _ in 0..2 {
        let (status, body) = http_get_with(port, "/probe", &[("x-mode", "print"), ("x-lines", "10000")])?;
        ensure!(status == 200 && body == "printed 10000 lines", "{status}: {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (lines, dropped) = loop {
        let text = std::fs::read_to_string(&log)?;
        let events: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let lines = events.iter().filter(|e| e["target"] == "edgemtls::guest" && e["fields"]["stream"] == "stdout").count();
        let dropped =
            events.iter().filter(|e| e["fields"]["message"].as_str().is_some_and(|m| m.contains("the rest of it is dropped"))).count();
        if dropped == 2 || Instant::now() > deadline {
            break (lines, dropped);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(dropped == 2, "each request says once that its output was cut ({dropped})");
    // 64 KiB of ~100-byte lines is about 650 per request.
    ensure!((1000..=1400).contains(&lines), "{lines} guest lines logged for two requests");
    let text = std::fs::read_to_string(&log)?;
    ensure!(text.contains("probe line 000000") && text.contains("\"route\":\"/probe\""), "the first line, with its route");
    Ok(())
}

#[test]
fn a_flood_of_failing_requests_is_not_a_flood_of_log_lines() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let config = sandbox.write("edgemtls.toml", format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"))?;
    let (_serve, port, log) = serve_logged(&sandbox, &config, false)?;
    for _ in 0..200 {
        let (status, _) = http_get_with(port, "/probe", &[("x-mode", "trap")])?;
        ensure!(status == 500);
    }
    // Once the limiter's second has passed, the next failure reports what was dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        http_get_with(port, "/probe", &[("x-mode", "trap")])?;
        if std::fs::read_to_string(&log)?.contains("similar warnings were not logged") {
            break;
        }
        ensure!(Instant::now() < deadline, "no summary of suppressed warnings");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged = std::fs::read_to_string(&log)?.matches("request failed").count();
    ensure!(logged < 150, "{logged} 'request failed' lines for about 200 failing requests");
    Ok(())
}

#[test]
fn running_out_of_file_descriptors_sheds_connections_and_keeps_serving() -> Result<()> {
    // More connections than the server may hold files: it serves what its open-file limit
    // allows, sheds the rest (or they wait in the listen backlog), and it must neither exit
    // nor stop serving.
    let Ok(true) = Command::new("prlimit").arg("--version").output().map(|o| o.status.success()) else {
        crate::cli::peers::missing_peer("prlimit is not installed");
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let config = sandbox.write("edgemtls.toml", format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"))?;
    let port = free_port()?;
    let command = sandbox.command(["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")]);
    // The same invocation, under a limit of 64 open files.
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut limited = Command::new("prlimit");
    limited.arg("--nofile=64").arg("--").arg(program).args(args);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    limited.current_dir(sandbox.dir()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut serve = Running(limited.spawn()?);
    wait_for(port)?;

    // Twice as many idle connections as the process may hold files.
    // (Once the backlog is full too, a connect waits on SYN retries: give up on the first.)
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let held: Vec<_> = (0..256).map_while(|_| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()).collect();
    ensure!(held.len() > 64, "only {} connections could be opened", held.len());
    ensure!(serve.0.try_wait()?.is_none(), "serve exited when it ran out of file descriptors");
    drop(held);
    // Once they are gone, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http_get_with(port, "/probe", &[("x-mode", "env"), ("x-var", "HOME")]) {
            break;
        }
        ensure!(serve.0.try_wait()?.is_none(), "serve exited");
        ensure!(Instant::now() < deadline, "not serving 30 s after the connections closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
