//! `cert status`: exit code 0 when every enabled certificate has more than 14 days left,
//! 1 on a warning (7-14 days), 2 when one is critical (< 7 days).

use anyhow::{Context, Result, ensure};
use rcgen::KeyPair;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::common::*;

/// Adds a certificate `name` that expires in `days` days.
fn add(sandbox: &Sandbox, ca: &TestCa, name: &str, days: i64) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let leaf = ca.sign(&client_params(name, now - Duration::days(1), now + Duration::days(days))?, KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(sandbox, name)?;
    sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
    Ok(())
}

fn status(sandbox: &Sandbox, json: bool) -> Result<(i32, String)> {
    let mut args = vec!["cert", "status"];
    if json {
        args.push("--json");
    }
    let out = sandbox.run(args)?;
    let code = out.status.code().context("killed by a signal")?;
    Ok((code, String::from_utf8(out.stdout)?))
}

fn status_json(sandbox: &Sandbox) -> Result<(i32, Value)> {
    let (code, out) = status(sandbox, true)?;
    Ok((code, serde_json::from_str(&out).with_context(|| format!("cert status --json printed: {out}"))?))
}

fn entry<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["certificates"]
        .as_array()
        .context("certificates is not an array")?
        .iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("{name} not in {report:#}"))
}

#[test]
fn exits_0_when_all_certificates_have_more_than_14_days() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Status CA")?;
    add(&sandbox, &ca, "long_lived", 90)?;
    add(&sandbox, &ca, "fifteen", 16)?;

    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 0, "exit {code}: {out}");
    ensure!(out.contains("long_lived") && out.contains("worst: valid"), "{out}");

    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 0, "exit {code}: {report:#}");
    ensure!(report["worst"] == "valid", "{report:#}");
    let item = entry(&report, "long_lived")?;
    ensure!(item["expiry_status"] == "valid" && item["enabled"] == true, "{item:#}");
    ensure!((89..=90).contains(&item["days_left"].as_i64().context("days_left")?), "{item:#}");
    ensure!(item["id"].as_str().is_some_and(|id| id.starts_with("cert_")), "{item:#}");
    ensure!(item["environments"] == serde_json::json!(["development"]), "{item:#}");
    let not_after = item["not_after"].as_str().context("not_after")?;
    OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("not RFC 3339: {not_after}"))?;
    ensure!(entry(&report, "fifteen")?["expiry_status"] == "valid");
    Ok(())
}

#[test]
fn exits_0_for_an_empty_store() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 0 && out.contains("no certificates"), "exit {code}: {out}");
    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 0 && report["worst"] == "valid" && report["certificates"] == serde_json::json!([]), "{report:#}");
    Ok(())
}

#[test]
fn exits_1_when_a_certificate_has_10_days_left() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Status CA")?;
    add(&sandbox, &ca, "long_lived", 90)?;
    add(&sandbox, &ca, "ten_days", 10)?;

    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 1, "exit {code}: {out}");
    ensure!(out.contains("worst: warning"), "{out}");

    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 1, "exit {code}: {report:#}");
    ensure!(report["worst"] == "warning", "{report:#}");
    let item = entry(&report, "ten_days")?;
    ensure!(item["expiry_status"] == "warning", "{item:#}");
    ensure!((9..=10).contains(&item["days_left"].as_i64().context("days_left")?), "{item:#}");
    ensure!(entry(&report, "long_lived")?["expiry_status"] == "valid");
    Ok(())
}

#[test]
fn exits_2_when_a_certificate_has_3_days_left() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Status CA")?;
    add(&sandbox, &ca, "long_lived", 90)?;
    add(&sandbox, &ca, "ten_days", 10)?;
    add(&sandbox, &ca, "three_days", 3)?;

    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(out.contains("worst: critical"), "{out}");

    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 2, "exit {code}: {report:#}");
    ensure!(report["worst"] == "critical", "{report:#}");
    let item = entry(&report, "three_days")?;
    ensure!(item["expiry_status"] == "critical", "{item:#}");
    ensure!((2..=3).contains(&item["days_left"].as_i64().context("days_left")?), "{item:#}");
    ensure!(entry(&report, "ten_days")?["expiry_status"] == "warning");

    // `cert list --json` reports the same status.
    ensure!(by_name(&sandbox.list_json()?, "three_days")?["expiry_status"] == "critical");

    // Disabled certificates are reported but do not set the exit code.
    sandbox.ok(["cert", "disable", "three_days"])?;
    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 1 && report["worst"] == "warning", "exit {code}: {report:#}");
    ensure!(entry(&report, "three_days")?["enabled"] == false);
    sandbox.ok(["cert", "disable", "ten_days"])?;
    let (code, _) = status_json(&sandbox)?;
    ensure!(code == 0, "exit {code}");
    Ok(())
}

#[test]
fn a_key_that_does_not_unseal_is_reported_damaged_and_exits_2() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Status CA")?;
    add(&sandbox, &ca, "healthy", 90)?;
    add(&sandbox, &ca, "broken", 90)?;
    // What a bad sector or a stray write does to one sealed key.
    let db = rusqlite::Connection::open(sandbox.store.join("store.db"))?;
    let changed = db.execute("UPDATE certificates SET key_sealed = zeroblob(64) WHERE name = 'broken'", [])?;
    ensure!(changed == 1, "no record named broken");
    drop(db);

    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(out.lines().any(|l| l.starts_with("broken") && l.contains("damaged")), "{out}");
    ensure!(out.lines().any(|l| l.starts_with("healthy") && l.contains("enabled")), "{out}");
    ensure!(out.contains("broken: cannot unseal the private key"), "the reason is printed: {out}");

    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 2, "exit {code}: {report:#}");
    ensure!(entry(&report, "broken")?["damaged"] == true, "{report:#}");
    ensure!(entry(&report, "healthy")?["damaged"] == false, "{report:#}");

    // Disabled, it no longer sets the exit code, but it is still reported.
    sandbox.ok(["cert", "disable", "broken"])?;
    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 0, "exit {code}: {report:#}");
    ensure!(entry(&report, "broken")?["damaged"] == true, "{report:#}");
    Ok(())
}

/// A record imported before the chain limits (issue 30, item 6) cannot be served: `serve`
/// refuses its name, and `cert status` says why, in the words `serve` logs, and exits 2.
#[test]
fn a_stored_chain_over_the_limit_is_reported_and_exits_2() -> Result<()> {
    use edgemtls_host::pki::{ImportRequest, load_identity, validate_client_identity};
    use edgemtls_host::store::{NewCertificate, Store, StoreLocation};
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Status CA")?;
    add(&sandbox, &ca, "healthy", 90)?;
    // Written with the library, past `cert create`, which refuses such a chain now.
    let leaf = ca.client("bloated")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "bloated")?;
    let mut identity = load_identity(ImportRequest { cert_path: &cert, key_path: Some(&key), password: None })?;
    let ca_cert = identity.chain[1].clone();
    identity.chain.extend(std::iter::repeat_n(ca_cert, 1549));
    let metadata = validate_client_identity(&identity, OffsetDateTime::now_utc())?;
    let mut store = Store::open(&StoreLocation::Directory(sandbox.store.clone()))?;
    store.create(NewCertificate { name: "bloated".into(), environments: edgemtls_host::Environment::ALL.to_vec(), identity, metadata })?;
    drop(store);

    let (code, out) = status(&sandbox, false)?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(out.lines().any(|l| l.starts_with("bloated") && l.contains("damaged")), "{out}");
    ensure!(out.lines().any(|l| l.starts_with("healthy") && l.contains("enabled")), "{out}");
    ensure!(
        out.contains(
            "bloated: certificate 'bloated' cannot be used: its record holds a chain of 1551 certificates, more than the 10 accepted"
        ),
        "the reason is printed: {out}"
    );
    let (code, report) = status_json(&sandbox)?;
    ensure!(code == 2, "exit {code}: {report:#}");
    ensure!(entry(&report, "bloated")?["damaged"] == true, "{report:#}");
    ensure!(entry(&report, "healthy")?["damaged"] == false, "{report:#}");
    Ok(())
}

/// `cert status` and `cert show` ask the CRL a stored certificate's distribution point names,
/// served by Python's http.server: good, revoked, a CRL from another CA, an unreachable
/// distribution point, no distribution point, and --offline.
#[test]
fn status_and_show_report_a_revocation_from_the_issuers_crl() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let published = sandbox.path("published");
    std::fs::create_dir(&published)?;
    let port = free_port()?;
    let mut server = std::process::Command::new("python3");
    server
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(&published)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let server = Running(server.spawn()?);
    wait_for(port)?;

    let ca = TestCa::new("Status CA")?;
    let now = OffsetDateTime::now_utc();
    let mut params = client_params("billing", now - Duration::days(1), now + Duration::days(90))?;
    params.serial_number = Some(rcgen::SerialNumber::from(4242u64));
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![format!("http://127.0.0.1:{port}/ca.crl")] }];
    let (cert, key) = ca.sign(&params, rcgen::KeyPair::generate()?)?.write_pem_split(&sandbox, "billing")?;
    sandbox.ok(sandbox.create_args("billing", &cert, Some(&key), &[]))?;
    // A certificate that names no CRL: nothing to ask.
    let (plain_cert, plain_key) = ca.client("plain")?.write_pem_split(&sandbox, "plain")?;
    sandbox.ok(sandbox.create_args("plain", &plain_cert, Some(&plain_key), &[]))?;

    let status_json = |sandbox: &Sandbox| -> Result<(Option<i32>, serde_json::Value)> {
        let out = sandbox.run(["cert", "status", "--json"])?;
        Ok((out.status.code(), serde_json::from_slice(&out.stdout)?))
    };
    let revocation_of = |value: &serde_json::Value, name: &str| {
        value["certificates"].as_array().and_then(|items| items.iter().find(|i| i["name"] == name)).map(|i| i["revocation"].clone())
    };

    // Not on the CRL.
    std::fs::write(published.join("ca.crl"), ca.crl(&[7])?)?;
    let (code, value) = status_json(&sandbox)?;
    ensure!(code == Some(0), "{value:#}");
    ensure!(revocation_of(&value, "billing").is_some_and(|r| r["status"] == "good"), "{value:#}");
    ensure!(revocation_of(&value, "plain").is_some_and(|r| r["status"] == "not-published"), "{value:#}");

    // On it: exit 2, the table and `cert show` say so with the date.
    std::fs::write(published.join("ca.crl"), ca.crl(&[7, 4242])?)?;
    let out = sandbox.run(["cert", "status"])?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(2), "{table}");
    ensure!(table.contains("REVOKED") && table.contains("billing: revoked on"), "{table}");
    let shown = sandbox.ok(["cert", "show", "billing"])?;
    ensure!(shown.contains("revocation:   REVOKED: revoked on") && shown.contains(&format!("127.0.0.1:{port}/ca.crl")), "{shown}");
    let shown = sandbox.show_json("billing")?;
    ensure!(shown["revocation"]["status"] == "revoked", "{shown:#}");

    // A CRL signed by another CA proves nothing.
    std::fs::write(published.join("ca.crl"), TestCa::new("Impostor CA")?.crl(&[4242])?)?;
    let (code, value) = status_json(&sandbox)?;
    ensure!(code == Some(0), "{value:#}");
    let billing = revocation_of(&value, "billing").unwrap_or_default();
    ensure!(billing["status"] == "unknown" && billing["detail"].as_str().is_some_and(|d| d.contains("not from its issuer")), "{value:#}");

    // --offline asks nobody.
    let out = sandbox.ok(["cert", "status", "--offline"])?;
    ensure!(out.contains("not checked"), "{out}");

    // The distribution point gone: unknown, with the reason, and the status still reported.
    drop(server);
    let (code, value) = status_json(&sandbox)?;
    ensure!(code == Some(0), "{value:#}");
    let billing = revocation_of(&value, "billing").unwrap_or_default();
    ensure!(
        billing["status"] == "unknown" && billing["detail"].as_str().is_some_and(|d| d.contains("no CRL could be fetched")),
        "{value:#}"
    );
    Ok(())
}

/// `pki issue --ocsp-url` names a responder; `cert status` asks it (a real `openssl ocsp`)
/// and reports the revocation with its date; `cert show --json` says where it came from.
#[test]
fn status_asks_the_ocsp_responder_a_certificate_names() -> Result<()> {
    if !have_openssl("status_asks_the_ocsp_responder_a_certificate_names") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let port = free_port()?;
    let ca = text(&sandbox.path("ca"));
    let out = text(&sandbox.path("issued"));
    sandbox.ok(["pki", "init", "--out", &ca])?;
    sandbox.ok(["pki", "issue", "--ca", &ca, "--cn", "agent", "--out", &out, "--ocsp-url", &format!("http://127.0.0.1:{port}")])?;
    sandbox.fails(["pki", "issue", "--ca", &ca, "--cn", "x", "--out", &out, "--ocsp-url", "ldap://nowhere"], "not an http:// URL")?;
    let cert = sandbox.path("issued/agent.pem");
    sandbox.ok(sandbox.create_args("agent", &cert, Some(&sandbox.path("issued/agent.key")), &[]))?;
    let serial = sandbox.show_json("agent")?["serial"].as_str().unwrap_or_default().replace(':', "").to_uppercase();
    sandbox.write("index.txt", format!("R\t351231235959Z\t261101000000Z\t{serial}\tunknown\t/CN=agent\n"))?;

    let mut responder = std::process::Command::new("openssl");
    responder
        .args(["ocsp", "-index", "index.txt", "-port", &port.to_string(), "-rsigner", "ca/ca.pem", "-rkey", "ca/ca.key"])
        .args(["-CA", "ca/ca.pem", "-ndays", "1"])
        .current_dir(sandbox.dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = responder.spawn()?;
    // `openssl ocsp` serves one connection at a time and hangs on one that sends nothing,
    // so no connect probe: it says when it listens.
    let stderr = child.stderr.take().context("no stderr")?;
    let _responder = Running(child);
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

    let out = sandbox.run(["cert", "status"])?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(2), "{table}");
    ensure!(table.contains("agent: revoked on 2026-11-01T00:00:00Z, per the OCSP responder"), "{table}");
    let shown = sandbox.show_json("agent")?;
    ensure!(shown["revocation"]["status"] == "revoked", "{shown:#}");
    ensure!(shown["revocation"]["source"].as_str().is_some_and(|s| s.contains(&port.to_string())), "{shown:#}");
    Ok(())
}
