//! X.509 version 1 certificates, as ContextForge's Quick Start makes them (`openssl x509 -req`
//! without `-extfile`): every command that meets one names it and says how to make a version 3
//! one, where it used to print webpki's `UnsupportedCertVersion` or "not well-formed".

use std::path::Path;
use std::process::Stdio;

use anyhow::{Result, ensure};

use super::common::*;

/// An openssl CA and, signed by it without an extensions file, a version 1 client
/// certificate (`v1-client`) and a version 1 server certificate for localhost (`v1-server`).
fn openssl_quick_start(dir: &Path) -> Result<()> {
    openssl_ca(dir, "/CN=Quick Start CA")?;
    for (stem, cn) in [("v1-client", "gateway-client"), ("v1-server", "localhost")] {
        openssl(
            dir,
            [
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{stem}.key"),
                "-out",
                &format!("{stem}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        )?;
        openssl(
            dir,
            [
                "x509",
                "-req",
                "-in",
                &format!("{stem}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{stem}.pem"),
                "-days",
                "30",
            ],
        )?;
        set_mode(&dir.join(format!("{stem}.key")), 0o600)?;
        let printed = output({
            let mut command = std::process::Command::new("openssl");
            command.args(["x509", "-noout", "-text", "-in", &format!("{stem}.pem")]).current_dir(dir);
            command
        })?;
        ensure!(String::from_utf8_lossy(&printed.stdout).contains("Version: 1 (0x0)"), "openssl did not make a version 1 certificate");
    }
    Ok(())
}

/// The words every message about a version 1 certificate carries: what it is and the fix.
fn names_version_1_and_the_fix(text: &str) -> Result<()> {
    ensure!(text.contains("X.509 version 1 certificate"), "the version is not named: {text}");
    ensure!(text.contains("-extfile") && text.contains("edgemtls pki issue"), "no fix given: {text}");
    ensure!(!text.contains("UnsupportedCertVersion") && !text.contains("Other("), "Rust Debug text: {text}");
    Ok(())
}

#[test]
fn pki_verify_cert_create_and_cert_test_name_a_version_1_certificate_and_the_fix() -> Result<()> {
    if !have_openssl("pki_verify_cert_create_and_cert_test_name_a_version_1_certificate_and_the_fix") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let dir = sandbox.dir();
    openssl_quick_start(dir)?;

    // openssl accepts it; pki verify says why it does not, instead of "not well-formed".
    let mut verify = std::process::Command::new("openssl");
    verify.args(["verify", "-CAfile", "ca.pem", "v1-client.pem"]).current_dir(dir);
    ensure!(output(verify)?.status.success(), "openssl verify refuses the version 1 certificate");
    let verified = sandbox.run(["pki", "verify", "--ca", &text_of(dir, "ca.pem"), &text_of(dir, "v1-client.pem")])?;
    ensure!(!verified.status.success(), "{}", describe(&verified));
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    ensure!(said.contains("FAILED") && !said.contains("well-formed"), "{said}");
    names_version_1_and_the_fix(&said)?;
    ensure!(said.contains("extendedKeyUsage=clientAuth"), "{said}");

    // Stored (an OpenSSL upstream accepts it), with a warning that says which verifiers do not.
    let created = sandbox.run([
        "cert",
        "create",
        "--name",
        "quick_start",
        "--cert",
        &text_of(dir, "v1-client.pem"),
        "--key",
        &text_of(dir, "v1-client.key"),
        "--env",
        "development",
    ])?;
    ensure!(created.status.success(), "{}", describe(&created));
    let warned = String::from_utf8_lossy(&created.stderr).into_owned();
    ensure!(warned.contains("warning:") && warned.contains("v1-client.pem"), "{warned}");
    names_version_1_and_the_fix(&warned)?;

    // An upstream (openssl s_server) that serves the version 1 server certificate.
    let port = free_port()?;
    let server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &port.to_string(),
            "-cert",
            "v1-server.pem",
            "-key",
            "v1-server.key",
            "-CAfile",
            "ca.pem",
            "-Verify",
            "1",
            "-www",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _server = Running(server);
    wait_for(port)?;
    let tested = sandbox.run(["cert", "test", "quick_start", &format!("https://localhost:{port}/"), "--ca", &text_of(dir, "ca.pem")])?;
    ensure!(!tested.status.success(), "{}", describe(&tested));
    let report = String::from_utf8_lossy(&tested.stdout).into_owned();
    ensure!(report.contains("error:") && report.contains("upstream-certificate-invalid"), "{report}");
    names_version_1_and_the_fix(&report)?;
    ensure!(report.contains("extendedKeyUsage=serverAuth"), "{report}");
    Ok(())
}

#[test]
fn check_and_serve_refuse_a_version_1_server_certificate_and_say_how_to_make_a_version_3_one() -> Result<()> {
    if !have_openssl("check_and_serve_refuse_a_version_1_server_certificate_and_say_how_to_make_a_version_3_one") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let dir = sandbox.dir();
    openssl_quick_start(dir)?;
    let config = sandbox.write(
        "edgemtls.toml",
        format!(
            "[tls]\ncert = \"v1-server.pem\"\nkey = \"v1-server.key\"\nclient_ca = [\"ca.pem\"]\nclient_auth = \"required\"\n\n\
             [[routes]]\npath = \"/\"\nhandler = \"{}\"\n",
            edgemtls_e2e::guests::MTLS_PROBE
        ),
    )?;
    let port = free_port()?;
    for args in
        [vec!["check", "--config", &text(&config)], vec!["serve", "--config", &text(&config), "--listen", &format!("127.0.0.1:{port}")]]
    {
        let run = sandbox.run(&args)?;
        ensure!(!run.status.success(), "{args:?} accepted a version 1 server certificate: {}", describe(&run));
        // check reports on stdout, serve on stderr.
        let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        ensure!(said.contains("[tls] cert") && said.contains("v1-server.pem"), "{args:?}: {}", describe(&run));
        names_version_1_and_the_fix(&said)?;
        ensure!(said.contains("subjectAltName=DNS:"), "{args:?}: {said}");
    }
    Ok(())
}

fn text_of(dir: &Path, name: &str) -> String {
    text(&dir.join(name))
}
