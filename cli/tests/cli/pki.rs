//! `pki init` and `pki issue`: a development CA whose client certificates `cert create` accepts.

use anyhow::{Context, Result, ensure};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::common::*;

fn first_cert_der(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)?;
    Ok(pem::parse_many(&text)?.into_iter().next().context("no PEM section")?.into_contents())
}

#[test]
fn init_and_issue_client_and_server_certificates() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca_dir = sandbox.path("ca");
    let out_dir = sandbox.path("issued");

    let out = sandbox.ok(["pki", "init", "--out", &text(&ca_dir)])?;
    ensure!(out.contains("created CA"), "{out}");
    ensure!(ca_dir.join("ca.pem").exists());
    #[cfg(unix)]
    ensure!(mode(&ca_dir.join("ca.key"))? == 0o600, "ca.key is not 0600");
    // A second init refuses to overwrite the CA.
    let ca_key = std::fs::read(ca_dir.join("ca.key"))?;
    sandbox.fails(["pki", "init", "--out", &text(&ca_dir)], "already holds a CA")?;
    ensure!(std::fs::read(ca_dir.join("ca.key"))? == ca_key, "the CA key changed");

    // Client certificate.
    let out = sandbox.ok(["pki", "issue", "--ca", &text(&ca_dir), "--cn", "billing client", "--out", &text(&out_dir)])?;
    ensure!(out.contains("issued client certificate"), "{out}");
    let client_cert = out_dir.join("billing-client.pem");
    let client_key = out_dir.join("billing-client.key");
    ensure!(client_cert.exists() && client_key.exists(), "{out}");
    #[cfg(unix)]
    ensure!(mode(&client_key)? == 0o600, "client key is not 0600");
    {
        let der = first_cert_der(&client_cert)?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let eku = cert.extended_key_usage()?.context("no EKU")?.value;
        ensure!(eku.client_auth && !eku.server_auth);
    }

    // Server certificate with a SAN.
    let out = sandbox.ok([
        "pki",
        "issue",
        "--ca",
        &text(&ca_dir),
        "--cn",
        "api.local",
        "--out",
        &text(&out_dir),
        "--server",
        "--san",
        "localhost",
    ])?;
    ensure!(out.contains("issued server certificate"), "{out}");
    let server_cert = out_dir.join("api.local.pem");
    let server_key = out_dir.join("api.local.key");
    ensure!(server_cert.exists() && server_key.exists(), "{out}");
    #[cfg(unix)]
    ensure!(mode(&server_key)? == 0o600, "server key is not 0600");
    {
        let der = first_cert_der(&server_cert)?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let eku = cert.extended_key_usage()?.context("no EKU")?.value;
        ensure!(eku.server_auth && !eku.client_auth);
        let sans = cert.subject_alternative_name()?.context("no SAN")?.value;
        ensure!(sans.general_names.iter().any(|n| matches!(n, GeneralName::DNSName("localhost"))), "SANs: {:?}", sans.general_names);
    }

    // The client certificate is accepted by cert create, with its CA in the chain.
    let out = sandbox.ok(sandbox.create_args("billing", &client_cert, Some(&client_key), &[]))?;
    ensure!(out.contains("created certificate 'billing'"), "{out}");
    let shown = sandbox.show_json("billing")?;
    ensure!(shown["chain_length"] == 2, "{shown:#}");
    ensure!(shown["subject"].as_str().is_some_and(|s| s.contains("CN=billing client")), "{shown:#}");
    ensure!(shown["issuer"].as_str().is_some_and(|s| s.contains("CN=edgemtls development CA")), "{shown:#}");
    ensure!(shown["spki_sha256"] == pin(&spki_of_cert(&first_cert_der(&client_cert)?)?).as_str(), "{shown:#}");
    // No permission warning for the 0600 key.
    let output = sandbox.run(sandbox.create_args("billing2", &client_cert, Some(&client_key), &[]))?;
    ensure!(output.status.success() && !String::from_utf8_lossy(&output.stderr).contains("warning"));

    // The server certificate is not a client certificate.
    sandbox.refused(sandbox.create_args("api", &server_cert, Some(&server_key), &[]), "without clientAuth (serverAuth)")?;
    Ok(())
}

#[test]
fn issue_from_a_missing_ca_names_the_directory() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let missing = sandbox.path("no-ca");
    let stderr =
        sandbox.fails(["pki", "issue", "--ca", &text(&missing), "--cn", "x", "--out", &text(&sandbox.path("o"))], "loading the CA")?;
    ensure!(stderr.contains("no-ca"), "{stderr}");
    Ok(())
}

#[test]
fn a_ca_with_other_file_names_is_named_with_ca_cert_and_ca_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let made = sandbox.path("made");
    sandbox.ok(["pki", "init", "--out", &text(&made)])?;
    // ACPaaS names its CA files ca-cert.pem and ca-key.pem.
    let acpaas = sandbox.path("acpaas");
    std::fs::create_dir_all(&acpaas)?;
    std::fs::copy(made.join("ca.pem"), acpaas.join("ca-cert.pem"))?;
    std::fs::copy(made.join("ca.key"), acpaas.join("ca-key.pem"))?;
    let out = text(&sandbox.path("out"));

    let stderr = sandbox.fails(["pki", "issue", "--ca", &text(&acpaas), "--cn", "svc", "--out", &out], "has no ca.pem and ca.key")?;
    ensure!(stderr.contains("--ca-cert FILE --ca-key FILE"), "{stderr}");

    let issued = sandbox.ok([
        "pki",
        "issue",
        "--ca-cert",
        &text(&acpaas.join("ca-cert.pem")),
        "--ca-key",
        &text(&acpaas.join("ca-key.pem")),
        "--cn",
        "svc",
        "--out",
        &out,
    ])?;
    ensure!(issued.contains("issued client certificate 'svc'"), "{issued}");
    let shown = {
        sandbox.ok(sandbox.create_args("svc", &sandbox.path("out/svc.pem"), Some(&sandbox.path("out/svc.key")), &[]))?;
        sandbox.show_json("svc")?
    };
    ensure!(shown["issuer"].as_str().is_some_and(|s| s.contains("CN=edgemtls development CA")), "{shown:#}");
    // One of the two alone is refused by the argument parser, naming the other.
    sandbox.fails(["pki", "issue", "--ca-cert", &text(&acpaas.join("ca-cert.pem")), "--cn", "x", "--out", &out], "--ca-key")?;
    Ok(())
}

#[test]
fn issue_refuses_to_overwrite_without_force() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca_dir = sandbox.path("ca");
    let out_dir = sandbox.path("issued");
    sandbox.ok(["pki", "init", "--out", &text(&ca_dir)])?;
    let issue = ["pki", "issue", "--ca", &text(&ca_dir), "--cn", "svc", "--out", &text(&out_dir)].map(String::from);
    sandbox.ok(issue.clone())?;
    let key = std::fs::read(out_dir.join("svc.key"))?;
    sandbox.fails(issue.clone(), "already exists; pass --force")?;
    ensure!(std::fs::read(out_dir.join("svc.key"))? == key, "the key was overwritten");
    let mut forced = issue.to_vec();
    forced.push("--force".into());
    sandbox.ok(forced)?;
    ensure!(std::fs::read(out_dir.join("svc.key"))? != key, "--force did not replace the key");
    Ok(())
}

#[test]
fn a_validity_beyond_what_certificates_can_say_is_refused_in_plain_words() -> anyhow::Result<()> {
    let sandbox = Sandbox::new()?;
    let out = text(&sandbox.path("ca"));
    let stderr = sandbox.fails(["pki", "init", "--out", &out, "--days", "3000000"], "3000000")?;
    anyhow::ensure!(stderr.contains("1..=36500") && !stderr.contains("panicked"), "{stderr}");
    anyhow::ensure!(!sandbox.path("ca").join("ca.pem").exists(), "nothing may be written");
    Ok(())
}

#[test]
fn a_ca_key_that_is_not_the_certificates_and_a_san_that_is_not_a_host_are_refused() -> anyhow::Result<()> {
    let sandbox = Sandbox::new()?;
    let (a, b) = (text(&sandbox.path("a")), text(&sandbox.path("b")));
    sandbox.ok(["pki", "init", "--out", &a])?;
    sandbox.ok(["pki", "init", "--out", &b])?;
    std::fs::copy(sandbox.path("b").join("ca.key"), sandbox.path("a").join("ca.key"))?;
    let out = text(&sandbox.path("out"));
    sandbox.fails(["pki", "issue", "--ca", &a, "--cn", "x", "--out", &out], "does not belong to the certificate in")?;
    sandbox.fails(
        ["pki", "issue", "--ca", &b, "--cn", "x", "--server", "--san", "not a host!", "--out", &out],
        "'not a host!' is neither a DNS name nor an IP address",
    )?;
    anyhow::ensure!(!sandbox.path("out").join("x.pem").exists(), "nothing may be written");
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_fifo_named_as_a_key_is_refused_not_waited_on() -> anyhow::Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Fifo CA")?;
    let (cert, _key) = ca.client("fifo")?.write_pem_split(&sandbox, "fifo")?;
    let fifo = sandbox.path("key.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    // Without the check this would wait for a writer for ever (the test would time out).
    sandbox.fails(sandbox.create_args("fifo", &cert, Some(&fifo), &[]), "not a regular file")?;
    Ok(())
}
