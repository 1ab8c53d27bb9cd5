//! `cert test`: a real mTLS request against `edgemtls dev-upstream`, a server that requires
//! client certificates from the dev CA.

use std::process::Stdio;

use anyhow::{Result, ensure};

use super::common::*;

/// `edgemtls dev-upstream` on `addr` with the server certificate `<server>.pem` from `pki`,
/// requiring client certificates from `pki`'s CA; stopped when dropped.
fn dev_upstream(sandbox: &Sandbox, pki: &std::path::Path, server: &str, addr: std::net::SocketAddr) -> Result<Running> {
    let upstream = sandbox
        .command([
            "dev-upstream",
            "--client-ca",
            &text(&pki.join("ca.pem")),
            "--cert",
            &text(&pki.join(format!("{server}.pem"))),
            "--key",
            &text(&pki.join(format!("{server}.key"))),
            "--listen",
            &addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let upstream = Running(upstream);
    wait_for_addr(addr)?;
    Ok(upstream)
}

#[test]
fn cert_test_reports_a_real_mtls_exchange_and_a_refusal() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let pki = sandbox.path("pki");
    let other = sandbox.path("other");
    let pki_s = text(&pki);
    sandbox.ok(["pki", "init", "--out", &pki_s])?;
    sandbox.ok(["pki", "issue", "--ca", &pki_s, "--cn", "good-client", "--out", &pki_s])?;
    sandbox.ok(["pki", "issue", "--ca", &pki_s, "--cn", "localhost", "--server", "--san", "localhost", "--out", &pki_s])?;
    // A client certificate from a CA the upstream does not trust.
    sandbox.ok(["pki", "init", "--out", &text(&other)])?;
    sandbox.ok(["pki", "issue", "--ca", &text(&other), "--cn", "stranger", "--out", &text(&other)])?;
    for (name, dir, cn) in [("good", &pki, "good-client"), ("stranger", &other, "stranger")] {
        let cert = text(&dir.join(format!("{cn}.pem")));
        let key = text(&dir.join(format!("{cn}.key")));
        sandbox.ok(["cert", "create", "--name", name, "--cert", &cert, "--key", &key, "--env", "development"])?;
    }

    let port = free_port()?;
    let _upstream = dev_upstream(&sandbox, &pki, "localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    let url = format!("https://localhost:{port}/check");
    let ca = text(&pki.join("ca.pem"));

    let out = sandbox.ok(["cert", "test", "good", &url, "--ca", &ca])?;
    ensure!(out.contains("status:         200"), "{out}");
    ensure!(out.contains("server subject: CN=localhost"), "{out}");
    ensure!(out.contains("handshake:"), "{out}");

    let json = sandbox.run(["cert", "test", "good", &url, "--ca", &ca, "--json"])?;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(report["status"] == 200 && report["certificate"] == "good", "{report}");
    // A server that follows the client's order (rustls, like OpenSSL) picks AES-128-GCM,
    // which edgemtls offers first.
    ensure!(report["tls_version"] == "TLS 1.3" && report["cipher_suite"] == "TLS13_AES_128_GCM_SHA256", "{report}");

    // The upstream refuses a certificate from another CA: the report says where it failed.
    let refused = sandbox.run(["cert", "test", "stranger", &url, "--ca", &ca])?;
    ensure!(!refused.status.success(), "a refused certificate must fail");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    ensure!(stdout.contains("error:") && !stdout.contains("status:"), "{stdout}");

    // Without trusting the dev CA, our side refuses the server.
    let untrusted = sandbox.run(["cert", "test", "good", &url])?;
    let stdout = String::from_utf8_lossy(&untrusted.stdout);
    ensure!(!untrusted.status.success() && stdout.contains("reason:         upstream-unknown-issuer"), "{stdout}");
    Ok(())
}

/// `--ca` trusts the CA for the URL's authority; an IPv6 literal must keep its brackets on
/// the way (`[::1]:port`), or the CA is registered for another key and ignored.
#[test]
fn cert_test_trusts_the_given_ca_for_an_ipv6_literal() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let pki = sandbox.path("pki");
    let pki_s = text(&pki);
    sandbox.ok(["pki", "init", "--out", &pki_s])?;
    sandbox.ok(["pki", "issue", "--ca", &pki_s, "--cn", "client", "--out", &pki_s])?;
    sandbox.ok(["pki", "issue", "--ca", &pki_s, "--cn", "loopback6", "--server", "--san", "::1", "--out", &pki_s])?;
    let (cert, key) = (text(&pki.join("client.pem")), text(&pki.join("client.key")));
    sandbox.ok(["cert", "create", "--name", "client", "--cert", &cert, "--key", &key, "--env", "development"])?;

    let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free_port()?));
    let _upstream = dev_upstream(&sandbox, &pki, "loopback6", addr)?;
    let url = format!("https://{addr}/check");

    let out = sandbox.run(["cert", "test", "client", &url, "--ca", &text(&pki.join("ca.pem")), "--json"])?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(out.status.success() && report["status"] == 200, "{report}");
    ensure!(report["url"].as_str().is_some_and(|u| u.contains("[::1]")), "{report}");
    Ok(())
}

/// An `openssl ocsp` responder for the CA in `ca_dir` on `port` whose index says `revoked`
/// (a serial as openssl prints it) is revoked. Returns once it listens.
fn ocsp_responder(sandbox: &Sandbox, ca_dir: &str, port: u16, revoked: &str) -> Result<Running> {
    use anyhow::Context as _;
    sandbox.write("index.txt", format!("R\t351231235959Z\t261101000000Z\t{revoked}\tunknown\t/CN=localhost\n"))?;
    let mut child = std::process::Command::new("openssl")
        .args(["ocsp", "-index", "index.txt", "-port", &port.to_string(), "-rsigner", &format!("{ca_dir}/ca.pem")])
        .args(["-rkey", &format!("{ca_dir}/ca.key"), "-CA", &format!("{ca_dir}/ca.pem"), "-ndays", "1"])
        .current_dir(sandbox.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // `openssl ocsp` serves one connection at a time and hangs on one that sends nothing,
    // so no connect probe: it says when it listens.
    let stderr = child.stderr.take().context("no stderr")?;
    let running = Running(child);
    let (ready, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("waiting for OCSP client connections") {
                let _ = ready.send(());
            }
        }
    });
    said.recv_timeout(std::time::Duration::from_secs(20)).context("openssl ocsp did not start")?;
    Ok(running)
}

/// `cert test --config` is the check to run before switching: for each upstream that
/// `serve`, with the same file, refuses (502), it must fail too, for the same reason: an
/// upstream whose certificate the OCSP responder says is revoked, one whose responder is
/// down (no soft-fail), one whose key matches no pin, one that speaks only TLS 1.2 where the
/// entry asks for 1.3. Before, it printed `status: 200` for the first two.
#[test]
fn cert_test_fails_for_every_upstream_that_serve_refuses() -> Result<()> {
    if !have_openssl("cert_test_fails_for_every_upstream_that_serve_refuses") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let pki = text(&sandbox.path("pki"));
    sandbox.ok(["pki", "init", "--out", &pki])?;
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "gateway", "--out", &pki])?;
    sandbox.ok(sandbox.create_args("gateway", &sandbox.path("pki/gateway.pem"), Some(&sandbox.path("pki/gateway.key")), &[]))?;
    let ocsp_port = free_port()?;
    let dead_port = free_port()?;
    // Server certificates for localhost naming a live responder and a dead one.
    for (dir, ocsp) in [("plain", None), ("revoked", Some(ocsp_port)), ("down", Some(dead_port))] {
        let out = format!("{pki}/{dir}");
        let mut args = vec!["pki", "issue", "--ca", &pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", &out];
        let url = ocsp.map(|port| format!("http://127.0.0.1:{port}"));
        if let Some(url) = &url {
            args.extend(["--ocsp-url", url]);
        }
        sandbox.ok(args)?;
    }
    let serial = {
        let printed = output({
            let mut command = std::process::Command::new("openssl");
            command.args(["x509", "-noout", "-serial", "-in", "pki/revoked/localhost.pem"]).current_dir(sandbox.dir());
            command
        })?;
        String::from_utf8_lossy(&printed.stdout).trim().trim_start_matches("serial=").to_string()
    };
    let _responder = ocsp_responder(&sandbox, "pki", ocsp_port, &serial)?;

    let mut upstreams = Vec::new();
    let mut ports = Vec::new();
    for dir in ["revoked", "down", "plain"] {
        let port = free_port()?;
        upstreams.push(dev_upstream(
            &sandbox,
            std::path::Path::new(&pki),
            &format!("{dir}/localhost"),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )?);
        ports.push(port);
    }
    // TLS 1.2 only, requiring a client certificate from the dev CA.
    let tls12_port = free_port()?;
    let tls12 = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-tls1_2", "-accept", &tls12_port.to_string(), "-cert", "pki/plain/localhost.pem"])
        .args(["-key", "pki/plain/localhost.key", "-CAfile", "pki/ca.pem", "-Verify", "1", "-www"])
        .current_dir(sandbox.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _tls12 = Running(tls12);
    wait_for(tls12_port)?;

    let wrong_pin = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cases = [
        ("revoked", ports[0], "revocation = \"ocsp\"", "upstream-certificate-revoked"),
        ("down", ports[1], "revocation = \"ocsp\"\nrevocation_timeout_ms = 500", "upstream-revocation-unknown"),
        ("pinned", ports[2], &format!("pin_spki_sha256 = [\"{wrong_pin}\"]") as &str, "upstream-pin-mismatch"),
        ("tls13", tls12_port, "tls_versions = [\"1.3\"]", "tls-alert"),
    ];
    let mut config = String::new();
    for (path, port, entry, _) in &cases {
        config.push_str(&format!(
            "[[routes]]\npath = \"/{path}\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"https://localhost:{port}\"\nmtlsCertificate = \"gateway\"\n\n\
             [[upstreams]]\nhosts = [\"localhost:{port}\"]\nca_bundle = \"pki/ca.pem\"\n{entry}\n\n"
        ));
    }
    let config = sandbox.write("edgemtls.toml", config)?;
    let (_serve, serve_port, _log) = serve_logged(&sandbox, &config, false)?;

    for (path, port, _, reason) in cases {
        let (status, body) = http_get(serve_port, &format!("/{path}"))?;
        ensure!(status == 502, "{path}: serve answered {status}: {body}");
        let tested = sandbox.run(["cert", "test", "gateway", &format!("https://localhost:{port}/"), "--config", &text(&config)])?;
        let report = String::from_utf8_lossy(&tested.stdout).into_owned();
        ensure!(!tested.status.success(), "{path}: cert test passed where serve refused: {report}");
        ensure!(!report.contains("status:"), "{path}: a request was sent: {report}");
        ensure!(report.contains(&format!("reason:         {reason}")), "{path}: {report}\nserve said: {body}");
    }
    Ok(())
}
