//! `edgemtls serve` as an operator runs it: the built-in hello-mtls handler against
//! `edgemtls dev-upstream`, a config reload on SIGHUP, and `cert delete` refused while the
//! running deployment references the certificate.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::common::*;

/// A plain HTTP/1.1 GET; returns the body.
fn get(port: u16, path: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (_, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(body.to_string())
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status()?;
    ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

fn write_config(path: &std::path::Path, certificate: &str, upstream_port: u16) -> Result<()> {
    std::fs::write(
        path,
        format!(
            r#"[environments.development.vars]
BACKEND_MTLS_CERT = "{certificate}"

[[routes]]
path = "/hello"
handler = "hello-mtls"
[routes.options]
url = "https://localhost:{upstream_port}/"

[[upstreams]]
hosts = ["localhost:{upstream_port}"]
ca_bundle = "pki/ca.pem"
"#
        ),
    )?;
    Ok(())
}

#[test]
fn serve_reloads_on_sighup_and_protects_referenced_certificates() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let pki = text(&sandbox.path("pki"));
    sandbox.ok(["pki", "init", "--out", &pki])?;
    for cn in ["old-client", "new-client"] {
        sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", cn, "--out", &pki])?;
    }
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", &pki])?;
    for (name, cn) in [("old_cert", "old-client"), ("new_cert", "new-client")] {
        let cert = format!("{pki}/{cn}.pem");
        let key = format!("{pki}/{cn}.key");
        sandbox.ok(["cert", "create", "--name", name, "--cert", &cert, "--key", &key, "--env", "development"])?;
    }

    let upstream_port = free_port()?;
    let upstream = sandbox
        .command(["dev-upstream", "--client-ca", &format!("{pki}/ca.pem"), "--cert", &format!("{pki}/localhost.pem"),
            "--key", &format!("{pki}/localhost.key"), "--listen", &format!("127.0.0.1:{upstream_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _upstream = Running(upstream);
    wait_for(upstream_port)?;

    let config = sandbox.path("edgemtls.toml");
    write_config(&config, "old_cert", upstream_port)?;
    let port = free_port()?;
    let serve = sandbox
        .command(["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let serve = Running(serve);
    wait_for(port)?;
    let body = get(port, "/hello")?;
    ensure!(body.contains("\"client_cn\":\"old-client\""), "{body}");

    // The running deployment references old_cert: delete is refused, naming it.
    sandbox.ok(["cert", "disable", "old_cert"])?;
    sandbox.fails(["cert", "delete", "old_cert", "--yes"], "is in use by deployment")?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
    let old = list.iter().find(|c| c["name"] == "old_cert").context("old_cert listed")?;
    ensure!(old["used_by"].as_array().is_some_and(|u| u.len() == 1), "{old}");
    sandbox.ok(["cert", "enable", "old_cert"])?;

    // Point the variable at the new certificate and reload with SIGHUP.
    write_config(&config, "new_cert", upstream_port)?;
    signal(&serve.0, "HUP")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(port, "/hello")?;
        if body.contains("\"client_cn\":\"new-client\"") {
            break;
        }
        ensure!(Instant::now() < deadline, "still {body} after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The old certificate is no longer referenced: disable and delete it.
    sandbox.ok(["cert", "disable", "old_cert"])?;
    sandbox.ok(["cert", "delete", "old_cert", "--yes"])?;
    ensure!(get(port, "/hello")?.contains("new-client"));

    // A graceful stop removes the deployment.
    signal(&serve.0, "INT")?;
    let mut serve = serve;
    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.0.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "serve did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
    ensure!(list.iter().all(|c| c["used_by"].as_array().is_some_and(|u| u.is_empty())), "{list:?}");
    Ok(())
}
