//! Every reason `cert create` refuses an input: a clear message on stderr, a non-zero exit,
//! and a store left exactly as it was.

use anyhow::{Result, ensure};
use rcgen::{ExtendedKeyUsagePurpose, KeyPair};
use time::{Duration, OffsetDateTime};

use super::common::*;

/// A sandbox whose store already holds the certificate `existing`, and its CA.
fn setup() -> Result<(Sandbox, TestCa)> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Validation CA")?;
    sandbox.with_existing_cert(&ca)?;
    Ok((sandbox, ca))
}

#[test]
fn refuses_files_that_cannot_be_parsed() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("good")?;
    let (good_cert, good_key) = leaf.write_pem_split(&sandbox, "good")?;

    let junk = sandbox.write("junk.crt", b"this is not a certificate\n")?;
    let stderr = sandbox.refused(sandbox.create_args("junk", &junk, Some(&good_key), &[]), "cannot parse")?;
    ensure!(stderr.contains("junk.crt"), "the message should name the file: {stderr}");

    let binary = sandbox.write("random.der", [0x30u8, 0x82, 0xff, 0x00, 0x13, 0x37, 0x42, 0x00, 0x01])?;
    sandbox.refused(sandbox.create_args("binary", &binary, Some(&good_key), &[]), "cannot parse")?;

    let no_sections = sandbox.write("empty.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")?;
    sandbox.refused(sandbox.create_args("no_sections", &no_sections, Some(&good_key), &[]), "cannot parse")?;

    let broken_cert = sandbox.write("broken.pem", "-----BEGIN CERTIFICATE-----\nMIIBkTCCATegAwIBAgIU\n-----END CERTIFICATE-----\n")?;
    sandbox.refused(sandbox.create_args("broken", &broken_cert, Some(&good_key), &[]), "cannot parse")?;

    let junk_key = sandbox.write("junk.key", b"not a key either")?;
    let stderr = sandbox.refused(sandbox.create_args("junk_key", &good_cert, Some(&junk_key), &[]), "cannot parse")?;
    ensure!(stderr.contains("junk.key"), "the message should name the key file: {stderr}");

    let missing = sandbox.path("missing.pem");
    sandbox.refused(sandbox.create_args("missing", &missing, Some(&good_key), &[]), "cannot read")?;
    Ok(())
}

#[test]
fn refuses_a_key_that_does_not_match_the_leaf() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("mismatch")?;
    let other = ca.client("other")?;
    let cert = sandbox.write("leaf.pem", leaf.chain_pem())?;
    let key = sandbox.write("other.key", other.key_pkcs8_pem())?;
    sandbox.refused(sandbox.create_args("mismatch", &cert, Some(&key), &[]), "does not match the certificate")?;

    // A bundle whose key belongs to no certificate in it.
    let bundle = sandbox.write("bundle.pem", format!("{}{}", leaf.chain_pem(), other.key_pkcs8_pem()))?;
    sandbox.refused(sandbox.create_args("mismatch", &bundle, None, &[]), "does not match the certificate")?;
    Ok(())
}

#[test]
fn refuses_a_pem_certificate_without_any_key() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("no key")?;
    let cert = sandbox.write("leaf.pem", leaf.chain_pem())?;
    sandbox.refused(sandbox.create_args("no_key", &cert, None, &[]), "no private key found")?;
    Ok(())
}

#[test]
fn refuses_an_expired_certificate() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let now = OffsetDateTime::now_utc();
    let leaf = ca.sign(&client_params("expired", now - Duration::days(60), now - Duration::days(1))?, KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "expired")?;
    sandbox.refused(sandbox.create_args("expired", &cert, Some(&key), &[]), "expired on")?;
    Ok(())
}

#[test]
fn refuses_a_certificate_that_is_not_yet_valid() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let now = OffsetDateTime::now_utc();
    let leaf = ca.sign(&client_params("future", now + Duration::days(2), now + Duration::days(90))?, KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "future")?;
    sandbox.refused(sandbox.create_args("future", &cert, Some(&key), &[]), "is not valid until")?;
    Ok(())
}

#[test]
fn refuses_a_server_only_certificate() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let now = OffsetDateTime::now_utc();
    let mut params = client_params("server only", now - Duration::days(1), now + Duration::days(90))?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = ca.sign(&params, KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "server")?;
    sandbox.refused(sandbox.create_args("server_only", &cert, Some(&key), &[]), "without clientAuth (serverAuth)")?;
    Ok(())
}

#[test]
fn refuses_invalid_names() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("names")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "names")?;
    let long = "a".repeat(65);
    for (name, expected) in [
        ("billing-api", "'-' is not allowed"),
        ("billing api", "' ' is not allowed"),
        ("1billing", "must start with a letter, '_' or '$', not '1'"),
        ("class", "'class' is a reserved word"),
        (long.as_str(), "65 characters long; at most 64"),
    ] {
        let stderr = sandbox.refused(sandbox.create_args(name, &cert, Some(&key), &[]), expected)?;
        ensure!(stderr.contains("invalid certificate name"), "{stderr}");
    }
    // 64 characters is still fine.
    sandbox.ok(sandbox.create_args(&"a".repeat(64), &cert, Some(&key), &[]))?;
    Ok(())
}

#[test]
fn refuses_a_name_that_is_taken() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("taken")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "taken")?;
    sandbox.refused(sandbox.create_args("existing", &cert, Some(&key), &[]), "a certificate named 'existing' already exists")?;
    Ok(())
}

#[test]
fn refuses_an_unknown_environment() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("env")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "env")?;
    sandbox.refused(
        sandbox.create_args("env_test", &cert, Some(&key), &["--env", "development", "--env", "moon"]),
        "unknown environment 'moon'",
    )?;
    // update refuses it too, and leaves the certificate as it was.
    sandbox.refused(["cert", "update", "existing", "--env", "qa"], "unknown environment 'qa'")?;
    Ok(())
}

#[test]
fn refuses_files_over_one_mebibyte() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("large")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "large")?;

    // A valid PEM chain followed by padding: the size check comes before parsing.
    let mut big = leaf.chain_pem().into_bytes();
    big.resize(1024 * 1024 + 1, b'\n');
    let big_cert = sandbox.write("big.pem", &big)?;
    let stderr = sandbox.refused(sandbox.create_args("big", &big_cert, Some(&key), &[]), "limited to 1 MiB")?;
    ensure!(stderr.contains("1048577 bytes"), "{stderr}");

    let mut big_key = leaf.key_pkcs8_pem().into_bytes();
    big_key.resize(2 * 1024 * 1024, b'\n');
    let big_key = sandbox.write("big.key", &big_key)?;
    sandbox.refused(sandbox.create_args("big", &cert, Some(&big_key), &[]), "limited to 1 MiB")?;

    // Exactly 1 MiB is still accepted.
    let mut exact = leaf.chain_pem().into_bytes();
    exact.resize(1024 * 1024, b'\n');
    let exact = sandbox.write("exact.pem", &exact)?;
    sandbox.ok(sandbox.create_args("exact", &exact, Some(&key), &[]))?;
    Ok(())
}

/// A chain TLS peers cannot take fails every request it is presented on, so it is refused
/// at import (issue 30, item 6): 1,550 copies of the CA behind the leaf, just under the
/// 1 MiB file cap, were imported as `chain_length 1551`.
#[test]
fn refuses_a_chain_over_the_limit_naming_the_limit() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("bloated")?;
    let key = sandbox.write("bloated.key", leaf.key_pkcs8_pem())?;
    let (leaf_pem, ca_pem) = (leaf.cert.pem(), ca.cert.pem());
    let copies = (1024 * 1024 - leaf_pem.len()) / ca_pem.len();
    ensure!(copies > 1000, "only {copies} copies of the CA fit in 1 MiB");
    let bloated = sandbox.write("bloated-chain.pem", format!("{leaf_pem}{}", ca_pem.repeat(copies)))?;
    let stderr = sandbox.refused(sandbox.create_args("bloated", &bloated, Some(&key), &[]), "more than the 10 accepted")?;
    ensure!(stderr.contains("bloated-chain.pem"), "the message names the file: {stderr}");
    ensure!(stderr.contains(&format!("a chain of {} certificates", copies + 1)), "{stderr}");

    // The limit is on the count: ten certificates pass, eleven do not (the leaf, its CA, and
    // CAs of no relation to it, which are kept after the leaf's path).
    let others = (0..9).map(|i| Ok(TestCa::new(&format!("Other CA {i}"))?.cert.pem())).collect::<Result<Vec<_>>>()?;
    let ten = ca.client("ten")?;
    let ten_key = sandbox.write("ten.key", ten.key_pkcs8_pem())?;
    let ten_chain = sandbox.write("ten.pem", format!("{}{}", ten.chain_pem(), others[..8].concat()))?;
    sandbox.ok(sandbox.create_args("ten", &ten_chain, Some(&ten_key), &[]))?;
    let eleven = ca.client("eleven")?;
    let eleven_key = sandbox.write("eleven.key", eleven.key_pkcs8_pem())?;
    let eleven_chain = sandbox.write("eleven.pem", format!("{}{}", eleven.chain_pem(), others.concat()))?;
    sandbox.refused(
        sandbox.create_args("eleven", &eleven_chain, Some(&eleven_key), &[]),
        "eleven.pem' holds a chain of 11 certificates, more than the 10 accepted",
    )?;
    Ok(())
}

#[test]
fn refuses_a_chain_that_repeats_a_certificate() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("repeated")?;
    let key = sandbox.write("repeated.key", leaf.key_pkcs8_pem())?;
    let chain = sandbox.write("repeated.pem", format!("{}{}", leaf.chain_pem(), ca.cert.pem()))?;
    let stderr =
        sandbox.refused(sandbox.create_args("repeated", &chain, Some(&key), &[]), "2 times (a chain lists each certificate once)")?;
    ensure!(stderr.contains("Validation CA"), "the message names the repeated certificate: {stderr}");
    ensure!(stderr.contains("keep only the leaf and the intermediates up to the CA, each once"), "and what to do: {stderr}");
    Ok(())
}

#[test]
fn refuses_a_wrong_pkcs12_password() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("p12")?;
    let p12 = sandbox.write("client.p12", pkcs12(&leaf, "right password")?)?;
    let mut command = sandbox.command(sandbox.create_args("p12", &p12, None, &["--password-env", PASSWORD_VAR]));
    command.env(PASSWORD_VAR, "wrong password!");
    let stderr = sandbox.refused_command(command, "wrong password")?;
    ensure!(stderr.contains("client.p12"), "{stderr}");
    Ok(())
}

#[test]
fn refuses_a_pkcs12_file_without_password_env() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("p12")?;
    let p12 = sandbox.write("client.p12", pkcs12(&leaf, "right password")?)?;
    sandbox.refused(
        sandbox.create_args("p12", &p12, None, &[]),
        "password protected; name the variable holding the password with --password-env",
    )?;
    Ok(())
}

#[test]
fn refuses_a_password_env_variable_that_is_not_set() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("p12")?;
    let p12 = sandbox.write("client.p12", pkcs12(&leaf, "right password")?)?;
    // Sandbox::command removes PASSWORD_VAR from the child environment.
    sandbox.refused(
        sandbox.create_args("p12", &p12, None, &["--password-env", PASSWORD_VAR]),
        &format!("--password-env names '{PASSWORD_VAR}', which is not set"),
    )?;
    Ok(())
}

#[test]
fn refuses_an_encrypted_pem_key() -> Result<()> {
    let (sandbox, ca) = setup()?;
    let leaf = ca.client("encrypted")?;
    let cert = sandbox.write("leaf.pem", leaf.chain_pem())?;
    // Without a passphrase the importer refuses on the PEM label alone.
    let key = sandbox.write("enc.key", pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![0x30, 0x00])))?;
    sandbox.refused(sandbox.create_args("encrypted", &cert, Some(&key), &[]), "is encrypted; name the environment variable")?;
    if !have_openssl("refuses_an_encrypted_pem_key") {
        return Ok(());
    }
    // A key that openssl encrypted: the right passphrase opens it, a wrong one is named.
    sandbox.write("plain.key", leaf.key_pkcs8_pem())?;
    openssl(
        sandbox.dir(),
        ["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "plain.key", "-out", "enc.key", "-passout", "pass:open sesame"],
    )?;
    let args = sandbox.create_args("encrypted", &cert, Some(&key), &["--password-env", PASSWORD_VAR]);
    let mut wrong = sandbox.command(&args);
    wrong.env(PASSWORD_VAR, "close sesame");
    sandbox.refused_command(wrong, "wrong passphrase")?;
    let mut right = sandbox.command(&args);
    right.env(PASSWORD_VAR, "open sesame");
    expect_success(right)?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn warns_about_a_key_file_readable_by_others_but_imports_it() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Validation CA")?.client("open key")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "open")?;
    set_mode(&key, 0o644)?;
    let output = sandbox.run(sandbox.create_args("open_key", &cert, Some(&key), &[]))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "{stderr}");
    ensure!(stderr.contains("warning:") && stderr.contains("readable by group or others (mode 644)"), "{stderr}");
    ensure!(stderr.contains("open.key"), "the warning should name the key file: {stderr}");
    ensure!(by_name(&sandbox.list_json()?, "open_key").is_ok());

    // A 0600 key gives no warning.
    let (cert, key) = leaf.write_pem_split(&sandbox, "closed")?;
    ensure!(mode(&key)? == 0o600);
    let output = sandbox.run(sandbox.create_args("closed_key", &cert, Some(&key), &[]))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success() && !stderr.contains("warning"), "{stderr}");
    Ok(())
}
