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
