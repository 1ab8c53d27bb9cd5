//! What callers can do to `serve`'s connections and log: an HTTP/2 rapid-reset flood is not a
//! flood of log lines, and callers beyond what the open-file limit allows get a 503.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::common::*;

const PROBE: &str = edgemtls_e2e::guests::MTLS_PROBE;

/// One HTTP/2 connection that opens 40 streams and resets each at once (CVE-2023-44487),
/// then waits for the host to close it (h2 sends GOAWAY after 20 such resets).
fn rapid_reset(port: u16) -> Result<()> {
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    for stream in (1u32..80).step_by(2) {
        // HEADERS (END_STREAM | END_HEADERS): `GET http /`, from HPACK's static table.
        frames.extend_from_slice(&[0, 0, 3, 0x1, 0x5]);
        frames.extend_from_slice(&stream.to_be_bytes());
        frames.extend_from_slice(&[0x82, 0x86, 0x84]);
        // RST_STREAM CANCEL.
        frames.extend_from_slice(&[0, 0, 4, 0x3, 0]);
        frames.extend_from_slice(&stream.to_be_bytes());
        frames.extend_from_slice(&8u32.to_be_bytes());
    }
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", port))?;
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    connection.write_all(&frames)?;
    let mut sink = Vec::new();
    // A reset by the host counts as closed too.
    let _ = connection.read_to_end(&mut sink);
    Ok(())
}

#[test]
fn an_http2_rapid_reset_flood_is_not_a_flood_of_log_lines() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let config = sandbox.write("edgemtls.toml", format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"))?;
    let (_serve, port, log) = serve_logged(&sandbox, &config, false)?;
    for _ in 0..300 {
        rapid_reset(port)?;
    }
    // Once the limiter's second has passed, the next one reports what was dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        rapid_reset(port)?;
        if std::fs::read_to_string(&log)?.contains("similar warnings from h2") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no count of the dropped h2 warnings: {} lines",
            std::fs::read_to_string(&log)?.matches("reached limit").count()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log)?;
    let logged = text.matches("reached limit").count();
    // 300 connections in a few seconds: ten lines a second, not one per connection.
    ensure!((1..=60).contains(&logged), "{logged} h2 warnings logged for about 300 reset floods");
    // And the host still serves.
    let (status, _) = http_get_with(port, "/probe", &[("x-mode", "env"), ("x-var", "HOME")])?;
    ensure!(status == 200, "{status}");
    Ok(())
}

#[test]
fn max_connections_is_capped_by_the_open_file_limit_and_callers_beyond_get_503() -> Result<()> {
    let Ok(true) = Command::new("prlimit").arg("--version").output().map(|o| o.status.success()) else {
        crate::cli::peers::missing_peer("prlimit is not installed");
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    // A max_connections the config sets (the default is capped with an INFO line, not a
    // warning), and idle connections kept for 30 s.
    let config = sandbox.write(
        "edgemtls.toml",
        format!("[limits]\nmax_connections = 1000\nheader_timeout_ms = 30000\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"),
    )?;
    let port = free_port()?;
    let log = sandbox.path("serve.log");
    let command = sandbox.command(["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")]);
    // The same invocation with a soft limit of 48 open files and a hard limit of 100.
    let mut limited = Command::new("prlimit");
    limited.arg("--nofile=48:100").arg("--").arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    limited.current_dir(sandbox.dir()).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
    let _serve = Running(limited.spawn()?);
    wait_for(port)?;

    // The soft limit is raised to the hard one, and (100 - 32 reserved) / 2 = 34 connections
    // fit beside an upstream connection each.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)?.contains("serving at most") {
        ensure!(Instant::now() < deadline, "no line about the open-file limit:\n{}", std::fs::read_to_string(&log)?);
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log)?;
    ensure!(text.contains("raised the open-file limit") && text.contains("now=100"), "{text}");
    ensure!(
        text.contains("WARN")
            && text.contains("max_connections = 1000 ")
            && text.contains("(limit 100)")
            && text.contains("serving at most 34 connections"),
        "{text}"
    );

    // 34 idle connections hold every slot; each caller after them is answered 503 at once
    // (without the cap the host ran out of files and left them unanswered in the backlog).
    // Which 34 hold a slot is not fixed: the probe connection `wait_for` made may still hold
    // one while the first callers arrive, and give it to a later caller when its task ends.
    // So every connection is read at once, each for up to 5 s: 34 stay open and silent (33
    // when the probe's slot was still taken as they all arrived), every other one gets the 503.
    let mut connections = Vec::new();
    for _ in 0..80 {
        connections.push(std::net::TcpStream::connect(("127.0.0.1", port))?);
    }
    let answers: Vec<String> = std::thread::scope(|scope| {
        let readers: Vec<_> = connections
            .iter_mut()
            .map(|connection| {
                scope.spawn(move || {
                    let _ = connection.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut answer = String::new();
                    let _ = connection.read_to_string(&mut answer);
                    answer
                })
            })
            .collect();
        readers.into_iter().map(|reader| reader.join().unwrap_or_default()).collect()
    });
    let shed = answers.iter().filter(|answer| answer.starts_with("HTTP/1.1 503")).count();
    let silent = answers.iter().filter(|answer| answer.is_empty()).count();
    ensure!(
        shed + silent == 80 && (33..=34).contains(&silent),
        "{shed} answered 503 and {silent} held a slot (expected 34, or 33 beside the probe's, and 503 for the rest): {answers:?}\n{}",
        std::fs::read_to_string(&log)?
    );
    Ok(())
}
