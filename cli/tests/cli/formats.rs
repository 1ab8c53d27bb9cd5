//! `cert create` accepts every import format; each import is checked through `cert show --json`.

use anyhow::{Result, ensure};

use super::common::*;

/// The certificate `name` is stored with `leaf`'s public key and a chain of `chain_length`.
fn assert_imported(sandbox: &Sandbox, name: &str, leaf: &TestLeaf, chain_length: u64) -> Result<()> {
    let shown = sandbox.show_json(name)?;
    ensure!(shown["name"] == name, "{shown:#}");
    ensure!(shown["spki_sha256"] == pin(&leaf.spki_der()?).as_str(), "spki pin differs: {shown:#}");
    ensure!(shown["chain_length"] == chain_length, "chain_length: {shown:#}");
    ensure!(shown["enabled"] == true, "{shown:#}");
    Ok(())
}

#[test]
fn pem_cert_and_separate_pem_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pem split")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "split")?;
    let out = sandbox.ok(sandbox.create_args("pem_split", &cert, Some(&key), &[]))?;
    ensure!(out.contains("created certificate 'pem_split'"), "{out}");
    assert_imported(&sandbox, "pem_split", &leaf, 2)
}

#[test]
fn pem_bundle_with_key_in_the_cert_file() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pem bundle")?;
    let bundle = sandbox.write("bundle.pem", format!("{}{}", leaf.chain_pem(), leaf.key_pkcs8_pem()))?;
    let output = sandbox.run(sandbox.create_args("bundled", &bundle, None, &[]))?;
    ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The bundle is mode 0600, so no permission warning.
    ensure!(!String::from_utf8_lossy(&output.stderr).contains("warning"), "{}", String::from_utf8_lossy(&output.stderr));
    assert_imported(&sandbox, "bundled", &leaf, 2)
}

#[test]
fn pem_bundle_with_key_first_and_no_ca() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Formats CA")?;
    let leaf = ca.client("key first")?;
    let bundle = sandbox.write("bundle.pem", format!("{}{}", leaf.key_pkcs8_pem(), leaf.cert.pem()))?;
    sandbox.ok(sandbox.create_args("key_first", &bundle, None, &[]))?;
    assert_imported(&sandbox, "key_first", &leaf, 1)
}

#[test]
fn der_cert_and_der_pkcs8_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("der")?;
    let cert = sandbox.write("client.der", leaf.cert.der())?;
    let key = sandbox.write("client.key.der", leaf.key_pkcs8_der())?;
    sandbox.ok(sandbox.create_args("der_files", &cert, Some(&key), &[]))?;
    assert_imported(&sandbox, "der_files", &leaf, 1)
}

#[test]
fn der_cert_with_cer_extension_and_der_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("cer")?;
    let cert = sandbox.write("client.cer", leaf.cert.der())?;
    let key = sandbox.write("client.pk8", leaf.key_pkcs8_der())?;
    sandbox.ok(sandbox.create_args("cer_file", &cert, Some(&key), &[]))?;
    assert_imported(&sandbox, "cer_file", &leaf, 1)
}

#[test]
fn pkcs12_from_p12_keystore_with_password_env() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pkcs12")?;
    let p12 = sandbox.write("client.p12", pkcs12(&leaf, "s3cret pass")?)?;
    let mut command = sandbox.command(sandbox.create_args("from_p12", &p12, None, &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "s3cret pass");
    expect_success(command)?;
    assert_imported(&sandbox, "from_p12", &leaf, 2)
}

#[test]
fn pfx_extension_is_read_as_pkcs12() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pfx")?;
    let pfx = sandbox.write("client.pfx", pkcs12(&leaf, "pw")?)?;
    let mut command = sandbox.command(sandbox.create_args("from_pfx", &pfx, None, &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "pw");
    expect_success(command)?;
    assert_imported(&sandbox, "from_pfx", &leaf, 2)
}

#[test]
fn pkcs7_der_chain_with_separate_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pkcs7 der")?;
    let ca_der = leaf.ca_der.clone().unwrap_or_default();
    // CA first, as .p7b files often are: the importer must find the leaf by its key.
    let p7b = sandbox.write("chain.p7b", pkcs7_der(&[&ca_der, leaf.cert.der()])?)?;
    let key = sandbox.write("client.key", leaf.key_pkcs8_pem())?;
    sandbox.ok(sandbox.create_args("from_p7b", &p7b, Some(&key), &[]))?;
    assert_imported(&sandbox, "from_p7b", &leaf, 2)
}

#[test]
fn pkcs7_pem_chain_with_separate_der_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("pkcs7 pem")?;
    let ca_der = leaf.ca_der.clone().unwrap_or_default();
    let der = pkcs7_der(&[leaf.cert.der(), &ca_der])?;
    let p7b = sandbox.write("chain.p7b", pem::encode(&pem::Pem::new("PKCS7", der)))?;
    let key = sandbox.write("client.der", leaf.key_pkcs8_der())?;
    sandbox.ok(sandbox.create_args("from_p7b_pem", &p7b, Some(&key), &[]))?;
    assert_imported(&sandbox, "from_p7b_pem", &leaf, 2)
}

#[test]
fn sec1_ec_key_in_pem_and_der() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Formats CA")?;
    let leaf = ca.client("sec1")?;
    let sec1 = pkcs8_inner_key(&leaf.key_pkcs8_der())?;
    let cert = sandbox.write("client.pem", leaf.chain_pem())?;

    let pem_key = sandbox.write("client-ec.key", pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.clone())))?;
    sandbox.ok(sandbox.create_args("sec1_pem", &cert, Some(&pem_key), &[]))?;
    assert_imported(&sandbox, "sec1_pem", &leaf, 2)?;
    ensure!(sandbox.show_json("sec1_pem")?["key_type"] == "ECDSA P-256");

    let der_key = sandbox.write("client-ec.der", &sec1)?;
    sandbox.ok(sandbox.create_args("sec1_der", &cert, Some(&der_key), &[]))?;
    assert_imported(&sandbox, "sec1_der", &leaf, 2)?;

    // SEC1 key bundled with the certificate in one PEM file.
    let bundle = sandbox.write("bundle-ec.pem", format!("{}{}", leaf.chain_pem(), pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1))))?;
    sandbox.ok(sandbox.create_args("sec1_bundle", &bundle, None, &[]))?;
    assert_imported(&sandbox, "sec1_bundle", &leaf, 2)
}

#[test]
fn tilde_in_cert_key_and_store_paths_is_the_home_directory() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("tilde")?;
    leaf.write_pem_split(&sandbox, "certs/tilde")?;
    // HOME is the sandbox; the working directory is elsewhere so a relative "~" would not resolve.
    let elsewhere = sandbox.path("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;
    let mut command = sandbox.command([
        "cert",
        "create",
        "--name",
        "tilde",
        "--cert",
        "~/certs/tilde.pem",
        "--key",
        "~/certs/tilde.key",
        "--env",
        "development",
    ]);
    command.current_dir(&elsewhere);
    expect_success(command)?;
    assert_imported(&sandbox, "tilde", &leaf, 2)?;
    ensure!(!elsewhere.join("~").exists(), "a literal '~' directory was created");

    // --store ~/... is expanded too.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgemtls"));
    command
        .args(["--store", "~/tilde-store", "cert", "create", "--name", "tilde2", "--cert", "~/certs/tilde.pem"])
        .args(["--key", "~/certs/tilde.key", "--env", "preview"])
        .current_dir(&elsewhere)
        .env_remove("EDGEMTLS_MASTER_KEY")
        .env_remove("EDGEMTLS_STORE")
        .env("HOME", sandbox.dir())
        .stdin(std::process::Stdio::null());
    expect_success(command)?;
    ensure!(sandbox.path("tilde-store/store.db").exists(), "--store ~/tilde-store was not expanded");
    ensure!(!elsewhere.join("~").exists(), "a literal '~' directory was created");
    Ok(())
}

#[test]
fn ecdsa_p384_and_ed25519_keys() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Formats CA")?;
    let now = time::OffsetDateTime::now_utc();
    for (name, alg, key_type, bits) in
        [("p384", &rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384", 384), ("ed25519", &rcgen::PKCS_ED25519, "Ed25519", 256)]
    {
        let params = client_params(name, now - time::Duration::days(1), now + time::Duration::days(30))?;
        let leaf = ca.sign(&params, rcgen::KeyPair::generate_for(alg)?)?;
        let (cert, key) = leaf.write_pem_split(&sandbox, name)?;
        sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
        assert_imported(&sandbox, name, &leaf, 2)?;
        let shown = sandbox.show_json(name)?;
        ensure!(shown["key_type"] == key_type && shown["key_bits"] == bits, "{shown:#}");
    }
    Ok(())
}

#[test]
fn pem_chain_with_the_ca_first_is_stored_leaf_first() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Formats CA")?.client("leaf last")?;
    let cert = sandbox.write("ca-first.pem", format!("{}{}", leaf.ca_pem.clone().unwrap_or_default(), leaf.cert.pem()))?;
    let key = sandbox.write("leaf.key", leaf.key_pkcs8_pem())?;
    sandbox.ok(sandbox.create_args("ca_first", &cert, Some(&key), &[]))?;
    assert_imported(&sandbox, "ca_first", &leaf, 2)?;
    let shown = sandbox.show_json("ca_first")?;
    ensure!(shown["subject"].as_str().is_some_and(|s| s.contains("CN=leaf last")), "{shown:#}");
    ensure!(shown["issuer"].as_str().is_some_and(|s| s.contains("CN=Formats CA")), "{shown:#}");
    Ok(())
}
