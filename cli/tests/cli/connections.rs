//! What callers can do to `serve`'s connections and log: an HTTP/2 rapid-reset flood is not a
//! flood of log lines.

use std::io::{Read, Write};
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
        ensure!(Instant::now() < deadline, "no count of the dropped h2 warnings: {} lines", std::fs::read_to_string(&log)?.matches("reached limit").count());
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
