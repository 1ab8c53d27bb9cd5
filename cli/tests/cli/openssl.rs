//! Files made by the `openssl` command: RSA 2048 keys (PKCS#8 and PKCS#1), EC keys in SEC1
//! form, PKCS#12 from `openssl pkcs12 -export`, PKCS#7 from `openssl crl2pkcs7`, and a
//! 1024-bit RSA certificate that must be refused. Each test skips when openssl is missing.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use super::common::*;

/// An openssl CA (RSA 2048) and a client leaf (RSA 2048, clientAuth) it signed, in `dir`:
/// returns `(ca.pem, leaf.pem, leaf.key)`.
fn openssl_ca_and_leaf(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    openssl_ca(dir, "/O=Acme Test/CN=OpenSSL Test CA")?;
    openssl(
        dir,
        [
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/O=Acme Test/CN=openssl client",
        ],
    )?;
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )?;
    openssl(
        dir,
        [
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "leaf.ext",
        ],
    )?;
    set_mode(&dir.join("leaf.key"), 0o600)?;
    Ok((dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key")))
}

fn leaf_pin(leaf_pem: &Path) -> Result<String> {
    let text = std::fs::read_to_string(leaf_pem)?;
    let der = pem::parse(&text)?.into_contents();
    Ok(pin(&spki_of_cert(&der)?))
}

fn assert_rsa_2048(sandbox: &Sandbox, name: &str, leaf_pem: &Path, chain_length: u64) -> Result<()> {
    let shown = sandbox.show_json(name)?;
    ensure!(shown["key_type"] == "RSA" && shown["key_bits"] == 2048, "{shown:#}");
    ensure!(shown["chain_length"] == chain_length, "{shown:#}");
    ensure!(shown["spki_sha256"] == leaf_pin(leaf_pem)?.as_str(), "{shown:#}");
    Ok(())
}

#[test]
fn openssl_req_rsa_2048_self_signed_with_pkcs8_key() -> Result<()> {
    if !have_openssl("openssl_req_rsa_2048_self_signed_with_pkcs8_key") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    openssl(
        sandbox.dir(),
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa.key",
            "-out",
            "rsa.pem",
            "-subj",
            "/CN=openssl self signed",
            "-days",
            "30",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ],
    )?;
    let key = sandbox.path("rsa.key");
    ensure!(std::fs::read_to_string(&key)?.contains("BEGIN PRIVATE KEY"), "openssl did not write PKCS#8");
    set_mode(&key, 0o600)?;
    sandbox.ok(sandbox.create_args("rsa_self_signed", &sandbox.path("rsa.pem"), Some(&key), &[]))?;
    assert_rsa_2048(&sandbox, "rsa_self_signed", &sandbox.path("rsa.pem"), 1)
}

#[test]
fn openssl_genrsa_pkcs1_key_in_pem_and_der() -> Result<()> {
    if !have_openssl("openssl_genrsa_pkcs1_key_in_pem_and_der") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    openssl(sandbox.dir(), ["genrsa", "-traditional", "-out", "pkcs1.key", "2048"])?;
    let key = sandbox.path("pkcs1.key");
    let key_text = std::fs::read_to_string(&key)?;
    ensure!(key_text.contains("BEGIN RSA PRIVATE KEY"), "openssl did not write PKCS#1:\n{key_text}");
    set_mode(&key, 0o600)?;
    openssl(
        sandbox.dir(),
        [
            "req",
            "-new",
            "-x509",
            "-key",
            "pkcs1.key",
            "-out",
            "pkcs1.pem",
            "-subj",
            "/CN=pkcs1 client",
            "-days",
            "30",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ],
    )?;
    let cert = sandbox.path("pkcs1.pem");
    sandbox.ok(sandbox.create_args("pkcs1_pem", &cert, Some(&key), &[]))?;
    assert_rsa_2048(&sandbox, "pkcs1_pem", &cert, 1)?;

    // The same PKCS#1 key as DER.
    let der_key = sandbox.write("pkcs1.der", pem::parse(&key_text)?.into_contents())?;
    sandbox.ok(sandbox.create_args("pkcs1_der", &cert, Some(&der_key), &[]))?;
    assert_rsa_2048(&sandbox, "pkcs1_der", &cert, 1)?;

    // And bundled with the certificate.
    let bundle = sandbox.write("pkcs1-bundle.pem", format!("{}{key_text}", std::fs::read_to_string(&cert)?))?;
    sandbox.ok(sandbox.create_args("pkcs1_bundle", &bundle, None, &[]))?;
    assert_rsa_2048(&sandbox, "pkcs1_bundle", &cert, 1)
}

#[test]
fn openssl_ecparam_sec1_key_with_ec_parameters_section() -> Result<()> {
    if !have_openssl("openssl_ecparam_sec1_key_with_ec_parameters_section") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    // Without -noout, the file starts with an EC PARAMETERS section.
    openssl(sandbox.dir(), ["ecparam", "-name", "prime256v1", "-genkey", "-out", "ec.key"])?;
    let key = sandbox.path("ec.key");
    let key_text = std::fs::read_to_string(&key)?;
    ensure!(key_text.contains("BEGIN EC PARAMETERS") && key_text.contains("BEGIN EC PRIVATE KEY"), "{key_text}");
    set_mode(&key, 0o600)?;
    openssl(
        sandbox.dir(),
        [
            "req",
            "-new",
            "-x509",
            "-key",
            "ec.key",
            "-out",
            "ec.pem",
            "-subj",
            "/CN=ec client",
            "-days",
            "30",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ],
    )?;
    sandbox.ok(sandbox.create_args("sec1_openssl", &sandbox.path("ec.pem"), Some(&key), &[]))?;
    let shown = sandbox.show_json("sec1_openssl")?;
    ensure!(shown["key_type"] == "ECDSA P-256", "{shown:#}");
    ensure!(shown["spki_sha256"] == leaf_pin(&sandbox.path("ec.pem"))?.as_str(), "{shown:#}");
    Ok(())
}

#[test]
fn openssl_pkcs12_export() -> Result<()> {
    if !have_openssl("openssl_pkcs12_export") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (ca, leaf, key) = openssl_ca_and_leaf(sandbox.dir())?;
    openssl(
        sandbox.dir(),
        [
            "pkcs12",
            "-export",
            "-in",
            &text(&leaf),
            "-inkey",
            &text(&key),
            "-certfile",
            &text(&ca),
            "-out",
            "client.p12",
            "-passout",
            "pass:openssl secret",
        ],
    )?;
    let p12 = sandbox.path("client.p12");
    set_mode(&p12, 0o600)?;

    let mut command = sandbox.command(sandbox.create_args("from_openssl_p12", &p12, None, &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "openssl secret");
    expect_success(command)?;
    assert_rsa_2048(&sandbox, "from_openssl_p12", &leaf, 2)?;
    let shown = sandbox.show_json("from_openssl_p12")?;
    ensure!(shown["issuer"].as_str().is_some_and(|s| s.contains("CN=OpenSSL Test CA")), "{shown:#}");

    // A wrong password is refused and changes nothing.
    let mut command = sandbox.command(sandbox.create_args("wrong", &p12, None, &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "not the secret");
    sandbox.refused_command(command, "wrong password")?;

    // The legacy encryption (RC2/3DES, what older tools write), when this openssl still has it.
    let legacy = sandbox.path("legacy.p12");
    let legacy_made = openssl(
        sandbox.dir(),
        [
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            &text(&leaf),
            "-inkey",
            &text(&key),
            "-certfile",
            &text(&ca),
            "-out",
            "legacy.p12",
            "-passout",
            "pass:legacy",
        ],
    );
    match legacy_made {
        Ok(()) => {
            let mut command = sandbox.command(sandbox.create_args("legacy_p12", &legacy, None, &["--password-env", PASSWORD_VAR]));
            command.env(PASSWORD_VAR, "legacy");
            expect_success(command)?;
            assert_rsa_2048(&sandbox, "legacy_p12", &leaf, 2)?;
        }
        Err(e) => eprintln!("skipping the -legacy PKCS#12 part: {e}"),
    }
    Ok(())
}

#[test]
fn openssl_crl2pkcs7_chain_in_pem_and_der() -> Result<()> {
    if !have_openssl("openssl_crl2pkcs7_chain_in_pem_and_der") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (ca, leaf, key) = openssl_ca_and_leaf(sandbox.dir())?;
    openssl(sandbox.dir(), ["crl2pkcs7", "-nocrl", "-certfile", &text(&ca), "-certfile", &text(&leaf), "-out", "chain.p7b"])?;
    openssl(
        sandbox.dir(),
        ["crl2pkcs7", "-nocrl", "-certfile", &text(&ca), "-certfile", &text(&leaf), "-outform", "DER", "-out", "chain-der.p7b"],
    )?;
    let pem_p7b = sandbox.path("chain.p7b");
    ensure!(std::fs::read_to_string(&pem_p7b)?.contains("BEGIN PKCS7"));
    sandbox.ok(sandbox.create_args("p7b_pem", &pem_p7b, Some(&key), &[]))?;
    assert_rsa_2048(&sandbox, "p7b_pem", &leaf, 2)?;

    let der_p7b = sandbox.path("chain-der.p7b");
    ensure!(std::fs::read(&der_p7b)?.first() == Some(&0x30), "not DER");
    sandbox.ok(sandbox.create_args("p7b_der", &der_p7b, Some(&key), &[]))?;
    assert_rsa_2048(&sandbox, "p7b_der", &leaf, 2)?;

    // The leaf comes first in the stored chain even though the CA is first in the file.
    let shown = sandbox.show_json("p7b_der")?;
    ensure!(shown["subject"].as_str().is_some_and(|s| s.contains("CN=openssl client")), "{shown:#}");
    Ok(())
}

#[test]
fn openssl_rsa_1024_is_refused() -> Result<()> {
    if !have_openssl("openssl_rsa_1024_is_refused") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    sandbox.with_existing_cert(&TestCa::new("Existing CA")?)?;
    openssl(
        sandbox.dir(),
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "small.key",
            "-out",
            "small.pem",
            "-subj",
            "/CN=small rsa",
            "-days",
            "30",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ],
    )?;
    set_mode(&sandbox.path("small.key"), 0o600)?;
    let stderr = sandbox.refused(
        sandbox.create_args("small_rsa", &sandbox.path("small.pem"), Some(&sandbox.path("small.key")), &[]),
        "has 1024 bits; at least 2048 are required",
    )?;
    ensure!(stderr.contains("small.pem"), "{stderr}");
    Ok(())
}

/// Kills the child when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ContextForge's recipe: `openssl x509 -req` with no extensions file makes an X.509 v1
/// client certificate. It imports, and it works against an OpenSSL server that requires and
/// verifies client certificates (as nginx and curl accept it too).
#[test]
fn an_x509_v1_client_certificate_works_against_openssl_s_server() -> Result<()> {
    if !have_openssl("an_x509_v1_client_certificate_works_against_openssl_s_server") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let dir = sandbox.dir();
    let (ca, _, _) = openssl_ca_and_leaf(dir)?;
    openssl(dir, ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "v1.key", "-out", "v1.csr", "-subj", "/CN=v1 client"])?;
    openssl(
        dir,
        ["x509", "-req", "-in", "v1.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "v1.pem", "-days", "30"],
    )?;
    let printed = output({
        let mut command = std::process::Command::new("openssl");
        command.args(["x509", "-in", "v1.pem", "-noout", "-text"]).current_dir(dir);
        command
    })?;
    ensure!(String::from_utf8_lossy(&printed.stdout).contains("Version: 1 (0x0)"), "openssl did not make a v1 certificate");
    set_mode(&sandbox.path("v1.key"), 0o600)?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "v1_client",
        "--cert",
        &text_of(dir, "v1.pem"),
        "--key",
        &text_of(dir, "v1.key"),
        "--env",
        "development",
    ])?;

    // A server certificate for localhost from the same CA, and s_server requiring a client
    // certificate that verifies against it.
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")?;
    openssl(
        dir,
        ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
    )?;
    openssl(
        dir,
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "30",
            "-extfile",
            "server.ext",
        ],
    )?;
    let port = free_port()?;
    let server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &port.to_string(),
            "-cert",
            "server.pem",
            "-key",
            "server.key",
            "-CAfile",
            "ca.pem",
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let _server = Server(server);
    wait_for(port)?;
    let report = sandbox.ok(["cert", "test", "v1_client", &format!("https://localhost:{port}/"), "--ca", &text(&ca)])?;
    ensure!(report.contains("200"), "{report}");
    Ok(())
}

#[test]
fn a_ca_certificate_is_refused_as_a_client_certificate() -> Result<()> {
    if !have_openssl("a_ca_certificate_is_refused_as_a_client_certificate") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (ca, leaf, leaf_key) = openssl_ca_and_leaf(sandbox.dir())?;
    set_mode(&sandbox.path("ca.key"), 0o600)?;
    sandbox.ok(["cert", "create", "--name", "leaf", "--cert", &text(&leaf), "--key", &text(&leaf_key), "--env", "development"])?;
    sandbox.refused(
        [
            "cert",
            "create",
            "--name",
            "ca_as_client",
            "--cert",
            &text(&ca),
            "--key",
            &text_of(sandbox.dir(), "ca.key"),
            "--env",
            "development",
        ],
        "is a CA certificate (basic constraints CA:TRUE), not a client certificate",
    )?;
    Ok(())
}

fn text_of(dir: &Path, name: &str) -> String {
    text(&dir.join(name))
}

#[test]
fn an_old_style_encrypted_pem_key_is_refused_for_its_encryption_with_the_conversion() -> Result<()> {
    if !have_openssl("an_old_style_encrypted_pem_key_is_refused_for_its_encryption_with_the_conversion") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (_, leaf, key) = openssl_ca_and_leaf(sandbox.dir())?;
    let key_name = key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    openssl(sandbox.dir(), ["rsa", "-in", &key_name, "-aes256", "-traditional", "-passout", "pass:old secret", "-out", "old.key"])?;
    let old = sandbox.path("old.key");
    let old_text = std::fs::read_to_string(&old)?;
    ensure!(old_text.contains("Proc-Type: 4,ENCRYPTED") && old_text.contains("BEGIN RSA PRIVATE KEY"), "{old_text}");
    set_mode(&old, 0o600)?;

    let mut command = sandbox.command(sandbox.create_args("legacy", &leaf, Some(&old), &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "old secret");
    let stderr = expect_failure(command, "is encrypted the old OpenSSL way (Proc-Type: 4,ENCRYPTED)")?;
    ensure!(!stderr.contains("unsupported key") && !stderr.contains("expected RSA"), "{stderr}");
    ensure!(stderr.contains(&format!("openssl pkcs8 -topk8 -in {} -out NEW.key", text(&old))), "{stderr}");

    // The conversion it names works, and its output imports as the RSA 2048 key it is.
    openssl(
        sandbox.dir(),
        ["pkcs8", "-topk8", "-in", "old.key", "-out", "NEW.key", "-passin", "pass:old secret", "-passout", "pass:new secret"],
    )?;
    set_mode(&sandbox.path("NEW.key"), 0o600)?;
    let mut command =
        sandbox.command(sandbox.create_args("converted", &leaf, Some(&sandbox.path("NEW.key")), &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "new secret");
    expect_success(command)?;
    assert_rsa_2048(&sandbox, "converted", &leaf, 1)
}
