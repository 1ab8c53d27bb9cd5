//! `pki verify` against `openssl verify`: for each case both must agree on OK or not, and
//! ours must say why in plain words. `pki init --encrypt`: the key is refused without its
//! passphrase and `openssl pkey` reads it with it.

use anyhow::{Result, ensure};
use rcgen::{ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
use time::{Duration, OffsetDateTime};

use super::common::*;

/// A leaf of `ca` with `eku`, valid between the two offsets from now (days).
fn leaf(ca: &TestCa, cn: &str, eku: ExtendedKeyUsagePurpose, from_days: i64, to_days: i64, serial: u64) -> Result<String> {
    let now = OffsetDateTime::now_utc();
    let mut params = client_params(cn, now + Duration::days(from_days), now + Duration::days(to_days))?;
    params.extended_key_usages = vec![eku];
    params.serial_number = Some(SerialNumber::from(serial));
    Ok(ca.sign(&params, KeyPair::generate()?)?.cert.pem())
}

/// One case: the certificate file, the extra arguments for each tool, and what ours must say.
struct Case {
    name: &'static str,
    cert: &'static str,
    ours: Vec<String>,
    theirs: Vec<String>,
    /// `None`: OK; `Some(words)`: FAILED, with these words in the reason.
    says: Option<&'static str>,
}

#[test]
fn pki_verify_agrees_with_openssl_verify() -> Result<()> {
    if !have_openssl("pki_verify_agrees_with_openssl_verify") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let root = TestCa::new("Verify Root")?;
    let other = TestCa::new("Other Root")?;
    let intermediate = root.intermediate("Verify Intermediate")?;
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    sandbox.write("root.pem", root.cert.pem())?;
    sandbox.write("intermediate.pem", intermediate.cert.pem())?;
    sandbox.write("good.pem", leaf(&root, "good", ClientAuth, -1, 30, 101)?)?;
    sandbox.write("other-ca.pem", leaf(&other, "stranger", ClientAuth, -1, 30, 102)?)?;
    sandbox.write("expired.pem", leaf(&root, "old", ClientAuth, -30, -1, 103)?)?;
    sandbox.write("future.pem", leaf(&root, "early", ClientAuth, 2, 30, 104)?)?;
    sandbox.write("via-intermediate.pem", leaf(&intermediate, "deep", ClientAuth, -1, 30, 105)?)?;
    sandbox.write("revoked.pem", leaf(&root, "gone", ClientAuth, -1, 30, 106)?)?;
    sandbox.write("server-only.pem", leaf(&root, "api", ServerAuth, -1, 30, 107)?)?;
    sandbox.write("root.crl", root.crl(&[106])?)?;

    let s = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let client = s(&["--purpose", "client"]);
    let sslclient = s(&["-purpose", "sslclient"]);
    let cases = vec![
        Case { name: "good", cert: "good.pem", ours: client.clone(), theirs: sslclient.clone(), says: None },
        Case {
            name: "another CA",
            cert: "other-ca.pem",
            ours: client.clone(),
            theirs: sslclient.clone(),
            says: Some("not issued by the given CA"),
        },
        Case { name: "expired", cert: "expired.pem", ours: client.clone(), theirs: sslclient.clone(), says: Some("expired on") },
        Case { name: "not yet valid", cert: "future.pem", ours: client.clone(), theirs: sslclient.clone(), says: Some("not valid until") },
        Case {
            name: "intermediate missing",
            cert: "via-intermediate.pem",
            ours: client.clone(),
            theirs: sslclient.clone(),
            says: Some("intermediate is missing"),
        },
        Case {
            name: "intermediate given",
            cert: "via-intermediate.pem",
            ours: s(&["--purpose", "client", "--untrusted", "intermediate.pem"]),
            theirs: s(&["-purpose", "sslclient", "-untrusted", "intermediate.pem"]),
            says: None,
        },
        Case {
            name: "revoked per --crl",
            cert: "revoked.pem",
            ours: s(&["--purpose", "client", "--crl", "root.crl"]),
            theirs: s(&["-purpose", "sslclient", "-crl_check", "-CRLfile", "root.crl"]),
            says: Some("revoked on"),
        },
        Case {
            name: "not revoked per --crl",
            cert: "good.pem",
            ours: s(&["--purpose", "client", "--crl", "root.crl"]),
            theirs: s(&["-purpose", "sslclient", "-crl_check", "-CRLfile", "root.crl"]),
            says: None,
        },
        Case {
            name: "wrong EKU",
            cert: "server-only.pem",
            ours: client.clone(),
            theirs: sslclient.clone(),
            says: Some("not for TLS client authentication"),
        },
        Case {
            name: "right EKU",
            cert: "server-only.pem",
            ours: s(&["--purpose", "server"]),
            theirs: s(&["-purpose", "sslserver"]),
            says: None,
        },
    ];

    for case in &cases {
        let mut theirs = std::process::Command::new("openssl");
        theirs.arg("verify").arg("-CAfile").arg("root.pem").args(&case.theirs).arg(case.cert).current_dir(sandbox.dir());
        let theirs = output(theirs)?;
        let mut ours = vec!["pki".to_string(), "verify".into(), "--ca".into(), "root.pem".into()];
        ours.extend(case.ours.iter().cloned());
        ours.push(case.cert.into());
        let ours = sandbox.run(&ours)?;
        let stdout = String::from_utf8_lossy(&ours.stdout);
        ensure!(
            ours.status.success() == theirs.status.success(),
            "{}: we said {stdout:?} (exit {:?}), openssl verify said {}",
            case.name,
            ours.status.code(),
            describe(&theirs)
        );
        match case.says {
            None => ensure!(stdout.trim() == format!("{}: OK", case.cert), "{}: {stdout}", case.name),
            Some(words) => ensure!(
                stdout.contains(&format!("{}: FAILED: ", case.cert)) && stdout.contains(words),
                "{}: expected a failure saying '{words}', got {stdout:?}",
                case.name
            ),
        }
    }

    // Several certificates at once: exit 0 only when all verify; each gets its own line.
    let out = sandbox.run(["pki", "verify", "--ca", "root.pem", "good.pem", "expired.pem", "missing.pem"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(!out.status.success(), "{stdout}");
    ensure!(
        stdout.lines().count() == 3 && stdout.contains("good.pem: OK") && stdout.contains("missing.pem: FAILED: cannot read"),
        "{stdout}"
    );

    // The chain in the certificate's own file completes it, as `cert create` reads chains;
    // DER works as well as PEM; a directory of CA files is read as the CA.
    std::fs::write(
        sandbox.path("chain.pem"),
        format!("{}{}", std::fs::read_to_string(sandbox.path("via-intermediate.pem"))?, intermediate.cert.pem()),
    )?;
    let der = ::pem::parse(std::fs::read(sandbox.path("good.pem"))?)?.into_contents();
    sandbox.write("good.der", der)?;
    std::fs::create_dir(sandbox.path("cas"))?;
    std::fs::copy(sandbox.path("root.pem"), sandbox.path("cas/ca.pem"))?;
    sandbox.write("cas/ca.key", root.key.serialize_pem())?;
    let out = sandbox.ok(["pki", "verify", "--ca", "cas", "chain.pem", "good.der"])?;
    ensure!(out.contains("chain.pem: OK") && out.contains("good.der: OK"), "{out}");

    // Bad trust input is an error that names it, not a verdict.
    sandbox.write("not-a-crl.pem", "hello")?;
    sandbox.fails(["pki", "verify", "--ca", "root.pem", "--crl", "not-a-crl.pem", "good.pem"], "not-a-crl.pem")?;
    sandbox.fails(["pki", "verify", "--ca", "nowhere", "good.pem"], "nowhere")?;
    Ok(())
}

#[test]
fn an_encrypted_ca_key_needs_its_passphrase_and_openssl_reads_it() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = text(&sandbox.path("ca"));
    let out = text(&sandbox.path("issued"));
    let mut init = sandbox.command(["pki", "init", "--out", &ca, "--encrypt", "--password-env", "CA_PASSPHRASE"]);
    init.env("CA_PASSPHRASE", "correct horse");
    let said = expect_success(init)?;
    ensure!(said.contains("encrypted"), "{said}");
    let key = std::fs::read_to_string(sandbox.path("ca/ca.key"))?;
    ensure!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{key}");
    ensure!(mode(&sandbox.path("ca/ca.key"))? & 0o777 == 0o600);

    // Without the passphrase (no terminal to ask on), with a wrong one: refused, nothing written.
    sandbox.fails(["pki", "issue", "--ca", &ca, "--cn", "agent", "--out", &out], "--password-env")?;
    let mut wrong = sandbox.command(["pki", "issue", "--ca", &ca, "--cn", "agent", "--out", &out, "--password-env", "CA_PASSPHRASE"]);
    wrong.env("CA_PASSPHRASE", "wrong horse");
    expect_failure(wrong, "wrong passphrase")?;
    ensure!(!sandbox.path("issued/agent.pem").exists());

    // With it: issued, and the certificate verifies against the CA.
    let mut issue = sandbox.command(["pki", "issue", "--ca", &ca, "--cn", "agent", "--out", &out, "--password-env", "CA_PASSPHRASE"]);
    issue.env("CA_PASSPHRASE", "correct horse");
    expect_success(issue)?;
    sandbox.ok(["pki", "verify", "--ca", &ca, "--purpose", "client", &text(&sandbox.path("issued/agent.pem"))])?;

    if have_openssl("an_encrypted_ca_key_needs_its_passphrase_and_openssl_reads_it") {
        let mut pkey = std::process::Command::new("openssl");
        pkey.args(["pkey", "-in", "ca/ca.key", "-passin", "env:CA_PASSPHRASE", "-noout"])
            .current_dir(sandbox.dir())
            .env("CA_PASSPHRASE", "correct horse");
        expect_success(pkey)?;
        let mut without = std::process::Command::new("openssl");
        without.args(["pkey", "-in", "ca/ca.key", "-passin", "pass:wrong", "-noout"]).current_dir(sandbox.dir());
        ensure!(!output(without)?.status.success(), "openssl read the key with a wrong passphrase");
    }
    // --password-env without --encrypt is a mistake, said so.
    sandbox.fails(["pki", "init", "--out", &text(&sandbox.path("ca2")), "--password-env", "X"], "add --encrypt")?;
    Ok(())
}

#[test]
fn issued_keys_have_the_requested_type_and_work_for_mtls_import() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = text(&sandbox.path("ca"));
    sandbox.ok(["pki", "init", "--out", &ca, "--key-type", "p384"])?;
    for (key_type, expected) in [("rsa2048", "RSA"), ("p256", "ECDSA P-256"), ("p384", "ECDSA P-384"), ("ed25519", "Ed25519")] {
        let cn = format!("client-{key_type}");
        sandbox.ok(["pki", "issue", "--ca", &ca, "--cn", &cn, "--out", &text(&sandbox.path("issued")), "--key-type", key_type])?;
        let cert = sandbox.path(&format!("issued/{cn}.pem"));
        let key = sandbox.path(&format!("issued/{cn}.key"));
        // The store accepts it and reports the key type it reads from the certificate.
        sandbox.ok(sandbox.create_args(&cn.replace('-', "_"), &cert, Some(&key), &[]))?;
        let shown = sandbox.show_json(&cn.replace('-', "_"))?;
        ensure!(shown["key_type"] == expected, "{key_type}: {shown:#}");
        sandbox.ok(["pki", "verify", "--ca", &ca, "--purpose", "client", &text(&cert)])?;
    }
    sandbox.fails(
        ["pki", "issue", "--ca", &ca, "--cn", "x", "--out", &text(&sandbox.path("issued")), "--key-type", "dsa"],
        "not a key type",
    )?;
    Ok(())
}
