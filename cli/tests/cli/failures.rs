//! TLS failures, as an operator meets them: each against a real `openssl s_server`, read in
//! the problem a handler answers with, in `serve`'s audit line and in `cert test`. Each says
//! what failed and what to do, with a machine-readable reason, and no debug text.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use edgemtls_host::pki::pem::certificates as parse_pem_certificates;
use edgemtls_host::pki::{DevCa, IssueOptions, inspect_leaf};
use serde_json::Value;

use super::common::*;

/// One failure: the server that causes it, and what every surface must say.
struct Case {
    /// The route (`/<name>`) and the label in assertion messages.
    name: &'static str,
    /// The reason in the problem, the audit line and `cert test`.
    reason: &'static str,
    /// Words the message must contain.
    says: Vec<String>,
    /// The certificate the route presents (`""`: none).
    certificate: &'static str,
    /// Extra lines of the route's `[[upstreams]]` entry.
    trust: String,
    /// The server: its chain and key files, and the CA it requires client certificates from.
    server: (String, String, String),
}

/// Text a user reads must not be Rust debug output.
fn assert_plain(text: &str, what: &str) -> Result<()> {
    for debug in ["Some(", "{", "::", "DnsName(", "TLSv1_"] {
        ensure!(!text.contains(debug), "{what} contains '{debug}': {text}");
    }
    Ok(())
}

fn server_cert(
    ca: &DevCa,
    dir: &Path,
    stem: &str,
    sans: &[&str],
    valid: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) -> Result<(String, String)> {
    let options = IssueOptions {
        common_name: sans[0].into(),
        server: true,
        sans: sans.iter().map(|s| s.to_string()).collect(),
        days: 30,
        ..Default::default()
    };
    let (chain, key) = match valid {
        Some((from, until)) => ca.issue_with_validity(&options, from, until)?,
        None => ca.issue(&options)?,
    };
    let chain_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&chain_path, chain)?;
    std::fs::write(&key_path, key)?;
    set_mode(&key_path, 0o600)?;
    Ok((text(&chain_path), text(&key_path)))
}

fn leaf_of(chain_path: &str) -> Result<edgemtls_host::pki::CertificateMetadata> {
    let chain = parse_pem_certificates(&std::fs::read(chain_path)?)?;
    Ok(inspect_leaf(Path::new(chain_path), chain.first().context("empty chain")?)?)
}

/// `openssl s_server` on a free port requiring a client certificate from `client_ca`.
fn s_server(dir: &Path, (chain, key, client_ca): &(String, String, String)) -> Result<(Running, u16)> {
    let port = free_port()?;
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            chain,
            "-key",
            key,
            "-CAfile",
            client_ca,
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Running(child);
    wait_for(port)?;
    Ok((server, port))
}

/// The JSON audit line `serve` logged for `route`, waiting for it with a deadline.
fn audit_line(log: &Path, route: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["target"] == "edgemtls::audit" && line["fields"]["route"] == route);
        if let Some(line) = found {
            return Ok(line);
        }
        ensure!(Instant::now() < deadline, "no audit line for {route} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_tls_failure_says_what_failed_and_what_to_do() -> Result<()> {
    if !have_openssl("each_tls_failure_says_what_failed_and_what_to_do") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let dir = sandbox.dir();
    let trusted = DevCa::generate("Trusted CA", 30)?;
    let other = DevCa::generate("Other CA", 30)?;
    std::fs::write(dir.join("trusted-ca.pem"), trusted.cert_pem())?;
    std::fs::write(dir.join("other-ca.pem"), other.cert_pem())?;
    let trusted_ca = text(&dir.join("trusted-ca.pem"));
    let other_ca = text(&dir.join("other-ca.pem"));

    let (client_pem, client_key) = trusted.issue(&IssueOptions {
        common_name: "billing-client".into(),
        server: false,
        sans: vec![],
        days: 30,
        ..Default::default()
    })?;
    let client_cert = sandbox.write("billing.pem", client_pem)?;
    let client_key = sandbox.write("billing.key", client_key)?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "billing",
        "--cert",
        &text(&client_cert),
        "--key",
        &text(&client_key),
        "--env",
        "development",
    ])?;

    let now = time::OffsetDateTime::now_utc();
    let expired_at = time::OffsetDateTime::from_unix_timestamp(now.unix_timestamp() - 2 * 86_400)?;
    let (good_chain, good_key) = server_cert(&trusted, dir, "good", &["localhost"], None)?;
    let (stranger_chain, stranger_key) = server_cert(&other, dir, "stranger", &["localhost"], None)?;
    let (wrong_chain, wrong_key) = server_cert(&trusted, dir, "wrong-name", &["wrong.example"], None)?;
    let (expired_chain, expired_key) =
        server_cert(&trusted, dir, "expired", &["localhost"], Some((expired_at - time::Duration::days(30), expired_at)))?;
    let (revoked_chain, revoked_key) = server_cert(&trusted, dir, "revoked", &["localhost"], None)?;
    let revoked_serial = leaf_of(&revoked_chain)?.serial;
    std::fs::write(dir.join("trusted.crl"), trusted.revocation_list(&[&revoked_serial])?)?;
    let good_pin = leaf_of(&good_chain)?.spki_sha256;
    // A pin of another key, so the good server's key matches none.
    let wrong_pin = leaf_of(&stranger_chain)?.spki_sha256;

    let ca_bundle = format!("ca_bundle = \"{trusted_ca}\"");
    let cases = vec![
        Case {
            name: "unknown-issuer",
            reason: "upstream-unknown-issuer",
            says: vec!["does not trust".into(), "ca_bundle".into()],
            certificate: "billing",
            trust: ca_bundle.clone(),
            server: (stranger_chain, stranger_key, trusted_ca.clone()),
        },
        Case {
            name: "hostname-mismatch",
            reason: "upstream-hostname-mismatch",
            says: vec!["for wrong.example, not 'localhost'".into()],
            certificate: "billing",
            trust: ca_bundle.clone(),
            server: (wrong_chain, wrong_key, trusted_ca.clone()),
        },
        Case {
            name: "expired",
            reason: "upstream-certificate-expired",
            says: vec![format!("expired at {}", expired_at.format(&time::format_description::well_known::Rfc3339)?)],
            certificate: "billing",
            trust: ca_bundle.clone(),
            server: (expired_chain, expired_key, trusted_ca.clone()),
        },
        Case {
            name: "revoked",
            reason: "upstream-certificate-revoked",
            says: vec!["revoked".into(), "crl".into()],
            certificate: "billing",
            trust: format!("{ca_bundle}\ncrl = [\"trusted.crl\"]"),
            server: (revoked_chain, revoked_key, trusted_ca.clone()),
        },
        Case {
            name: "pin-mismatch",
            reason: "upstream-pin-mismatch",
            says: vec![good_pin.clone(), "pin_spki_sha256".into()],
            certificate: "billing",
            trust: format!("{ca_bundle}\npin_spki_sha256 = [\"{wrong_pin}\"]"),
            server: (good_chain.clone(), good_key.clone(), trusted_ca.clone()),
        },
        Case {
            name: "certificate-required",
            reason: "client-certificate-required",
            says: vec!["requires a client certificate".into(), "presented none".into()],
            certificate: "",
            trust: ca_bundle.clone(),
            server: (good_chain.clone(), good_key.clone(), trusted_ca.clone()),
        },
        Case {
            name: "certificate-refused",
            reason: "client-certificate-refused",
            says: vec!["refused client certificate 'billing'".into(), "unknown_ca".into()],
            certificate: "billing",
            trust: ca_bundle.clone(),
            // This server only accepts clients of the other CA.
            server: (good_chain, good_key, other_ca),
        },
    ];

    let mut servers = Vec::new();
    let mut config = String::new();
    for case in &cases {
        let (server, port) = s_server(dir, &case.server)?;
        servers.push((server, port));
        config.push_str(&format!(
            "[[routes]]\npath = \"/{name}\"\nhandler = \"hello-mtls\"\n[routes.options]\nurl = \"https://localhost:{port}/\"\nmtlsCertificate = \"{certificate}\"\n\n",
            name = case.name,
            certificate = case.certificate,
        ));
    }
    for (case, (_, port)) in cases.iter().zip(&servers) {
        config.push_str(&format!("[[upstreams]]\nhosts = [\"localhost:{port}\"]\n{}\n\n", case.trust));
    }
    let config_path = sandbox.write("edgemtls.toml", &config)?;

    let (_serve, port, log) = serve_logged(&sandbox, &config_path, true)?;

    for (case, (_, upstream_port)) in cases.iter().zip(&servers) {
        let name = case.name;
        // The problem the handler answers with.
        let (status, body) = http_get(port, &format!("/{name}"))?;
        ensure!(status == 502, "{name}: expected 502, got {status}: {body}");
        let problem: Value = serde_json::from_str(&body).with_context(|| format!("{name}: not JSON: {body}"))?;
        ensure!(problem["type"] == format!("urn:edgemtls:problem:{}", case.reason), "{name}: {problem}");
        ensure!(problem["reason"] == case.reason, "{name}: {problem}");
        ensure!(problem["title"] == "Upstream request failed", "{name}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        for words in &case.says {
            ensure!(detail.contains(words.as_str()), "{name}: the problem does not say '{words}': {detail}");
        }
        assert_plain(detail, &format!("{name}: problem detail"))?;

        // The audit line.
        let line = audit_line(&log, &format!("/{name}"))?;
        ensure!(line["fields"]["reason"] == case.reason, "{name}: audit line {line}");
        let error = line["fields"]["error"].as_str().unwrap_or_default();
        for words in &case.says {
            ensure!(error.contains(words.as_str()), "{name}: the audit line does not say '{words}': {line}");
        }
        assert_plain(error, &format!("{name}: audit error"))?;

        // `cert test` with the same trust, when the case presents a certificate.
        if !case.certificate.is_empty() {
            let url = format!("https://localhost:{upstream_port}/");
            let out = sandbox.run(["cert", "test", case.certificate, &url, "--config", &text(&config_path), "--json"])?;
            ensure!(!out.status.success(), "{name}: cert test succeeded");
            let report: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{name}: cert test --json printed {out:?}"))?;
            ensure!(report["reason"] == case.reason, "{name}: cert test {report}");
            let error = report["error"].as_str().unwrap_or_default();
            for words in &case.says {
                ensure!(error.contains(words.as_str()), "{name}: cert test does not say '{words}': {report}");
            }
            assert_plain(error, &format!("{name}: cert test error"))?;
            let plain = sandbox.run(["cert", "test", case.certificate, &url, "--config", &text(&config_path)])?;
            let printed = String::from_utf8_lossy(&plain.stdout);
            ensure!(printed.contains(&format!("reason:         {}", case.reason)), "{name}: {printed}");
        }
    }
    Ok(())
}
