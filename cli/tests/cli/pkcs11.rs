//! Client certificates whose keys stay in a PKCS#11 token (SoftHSM2): `cert create --key
//! pkcs11:…` checks the token's key against the certificate and stores only the URI; a wrong
//! PIN, a missing token and a key that is not the certificate's are refused with nothing written.

use std::process::Command;

use anyhow::{Context, Result, ensure};

use super::common::*;
use super::peers::missing_peer;
use super::softhsm::{PIN, SoftHsm};

/// The variable the tests keep the token's PIN in (named with --pin-env).
const PIN_VAR: &str = "EDGEMTLS_TEST_TOKEN_PIN";

/// A sandbox with a SoftHSM2 token `edge`, or `None` (after `missing_peer`) without SoftHSM2.
fn token_sandbox() -> Result<Option<(Sandbox, SoftHsm)>> {
    let sandbox = Sandbox::new()?;
    let Some(hsm) = SoftHsm::new(&sandbox.path("hsm"))? else {
        missing_peer("SoftHSM2 (softhsm2-util and /usr/lib/softhsm/libsofthsm2.so) is not installed");
        return Ok(None);
    };
    hsm.init_token("edge")?;
    Ok(Some((sandbox, hsm)))
}

/// `leaf`'s key imported into the token as `label`; the key file is removed afterwards.
fn import(sandbox: &Sandbox, hsm: &SoftHsm, leaf: &TestLeaf, label: &str, id: &str) -> Result<()> {
    let key = sandbox.write(&format!("{label}.key"), leaf.key_pkcs8_pem())?;
    hsm.import_key("edge", label, id, &key)?;
    std::fs::remove_file(&key)?;
    Ok(())
}

/// `edgemtls ARGS` with the token's configuration and the PIN in [`PIN_VAR`].
fn with_token(sandbox: &Sandbox, hsm: &SoftHsm, pin: &str, args: &[&str]) -> Command {
    let mut command = sandbox.command(args);
    hsm.apply(&mut command).env(PIN_VAR, pin);
    command
}

fn create_args<'a>(name: &'a str, cert: &'a str, key: &'a str) -> Vec<&'a str> {
    vec!["cert", "create", "--name", name, "--cert", cert, "--key", key, "--pin-env", PIN_VAR, "--env", "development"]
}

#[test]
fn cert_create_keeps_only_the_uri_of_a_token_key() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let ca = TestCa::new("Token Test CA")?;
    sandbox.with_existing_cert(&ca)?;
    let leaf = ca.client("token-client")?;
    import(&sandbox, &hsm, &leaf, "client", "01")?;
    let cert = text(&sandbox.write("client.pem", leaf.chain_pem())?);
    let uri = "pkcs11:token=edge;object=client";

    let out = expect_success(with_token(&sandbox, &hsm, PIN, &create_args("token_cert", &cert, uri)))?;
    ensure!(out.contains("key: in the token (pkcs11:token=edge;object=client;type=private)"), "{out}");

    // Every report says where the key lives.
    let listing = sandbox.list_json()?;
    let record = by_name(&listing, "token_cert")?;
    ensure!(record["key_location"] == "pkcs11:token=edge;object=client;type=private", "{record}");
    ensure!(by_name(&listing, "existing")?["key_location"] == "store", "{listing:?}");
    let table = sandbox.ok(["cert", "list"])?;
    let row = table.lines().find(|l| l.starts_with("token_cert")).context("token_cert row")?;
    ensure!(row.contains(" token "), "{table}");
    let details = sandbox.ok(["cert", "show", "token_cert", "--offline"])?;
    ensure!(details.contains("key location: in a PKCS#11 token, pkcs11:token=edge;object=client;type=private"), "{details}");
    let status: serde_json::Value = serde_json::from_str(&sandbox.ok(["cert", "status", "--offline", "--json"])?)?;
    let item = status["certificates"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "token_cert")).context("status item")?;
    ensure!(item["key_location"].as_str().is_some_and(|k| k.starts_with("pkcs11:")) && item["damaged"] == false, "{item}");

    // The store holds the URI, never the key: neither its PKCS#8 nor its inner encoding.
    let database = std::fs::read(sandbox.store.join("store.db"))?;
    let contains = |needle: &[u8]| database.windows(needle.len()).any(|w| w == needle);
    ensure!(!contains(&leaf.key_pkcs8_der()), "the key's PKCS#8 is in store.db");
    ensure!(!contains(&pkcs8_inner_key(&leaf.key_pkcs8_der())?), "the key is in store.db");
    Ok(())
}

#[test]
fn cert_create_refuses_what_the_token_cannot_prove() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let ca = TestCa::new("Token Test CA")?;
    sandbox.with_existing_cert(&ca)?;
    let leaf = ca.client("token-client")?;
    import(&sandbox, &hsm, &leaf, "client", "01")?;
    let other = ca.client("other-client")?;
    import(&sandbox, &hsm, &other, "other", "02")?;
    let cert = text(&sandbox.write("client.pem", leaf.chain_pem())?);

    let refused = |pin: &str, key: &str, expected: &str| {
        sandbox.refused_command(with_token(&sandbox, &hsm, pin, &create_args("token_cert", &cert, key)), expected)
    };
    refused(
        "0000",
        "pkcs11:token=edge;object=client",
        &format!("token 'edge' refused the PIN from the environment variable {PIN_VAR}: the PIN is wrong"),
    )?;
    refused(PIN, "pkcs11:token=absent;object=client", "token 'absent' is not present in the PKCS#11 module")?;
    refused(PIN, "pkcs11:token=edge;object=other", "the key 'other' in token 'edge' does not match the certificate's public key")?;
    refused(PIN, "pkcs11:token=edge;object=gone", "there is no private key 'gone' in token 'edge'")?;
    let stderr = refused(PIN, "pkcs11:token=edge;object=client?pin-value=4321", "the PIN must not be written in the URI")?;
    ensure!(!stderr.contains("4321"), "the PIN was echoed: {stderr}");
    // No PIN at all, and a module that is not there.
    let mut command = sandbox.command(create_args("token_cert", &cert, "pkcs11:token=edge;object=client"));
    hsm.apply(&mut command);
    sandbox.refused_command(command, &format!("no PIN for token 'edge': set the environment variable {PIN_VAR}"))?;
    let mut args = create_args("token_cert", &cert, "pkcs11:token=edge;object=client");
    args.extend(["--pkcs11-module", "/nonexistent/libpkcs11.so"]);
    sandbox.refused_command(
        with_token(&sandbox, &hsm, PIN, &args),
        "cannot load the PKCS#11 module '/nonexistent/libpkcs11.so': no such file",
    )?;
    // The same key with its own certificate is accepted: the refusals were about the key.
    expect_success(with_token(&sandbox, &hsm, PIN, &create_args("token_cert", &cert, "pkcs11:token=edge;id=%01")))?;
    Ok(())
}

/// `edgemtls serve` for `/hello` (hello-mtls presenting `token_cert`) towards `upstream_port`,
/// signing through the token, on a free port; returns once it listens.
fn serve_with_token(sandbox: &Sandbox, hsm: &SoftHsm, upstream_port: u16) -> Result<(Running, u16)> {
    serve_with(sandbox, hsm, upstream_port, PIN, "")
}

/// [`serve_with_token`] with the PIN `pin` and `upstream_extra` lines in the `[[upstreams]]` entry.
fn serve_with(sandbox: &Sandbox, hsm: &SoftHsm, upstream_port: u16, pin: &str, upstream_extra: &str) -> Result<(Running, u16)> {
    let config = sandbox.write(
        "edgemtls.toml",
        format!(
            r#"{}{upstream_extra}

[pkcs11]
module = "{}"
pin_env = "{PIN_VAR}"
"#,
            hello_mtls_config("token_cert", upstream_port),
            super::softhsm::MODULE
        ),
    )?;
    let port = free_port()?;
    let mut command = with_token(
        sandbox,
        hsm,
        pin,
        &["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")],
    );
    let serve = Running(command.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(sandbox.path("serve.log"))?).spawn()?);
    wait_for(port)?;
    Ok((serve, port))
}

/// Every file under `dir` (but `skip`), for looking for key bytes.
fn files_under(dir: &std::path::Path, skip: &std::path::Path, found: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.starts_with(skip) {
            continue;
        }
        if path.is_dir() {
            files_under(&path, skip, found)?;
        } else {
            found.push(path);
        }
    }
    Ok(())
}

#[test]
fn serve_signs_handshakes_through_the_token_and_recovers_when_it_returns() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let (pki, upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["token-client"])?;
    // The key goes into the token and its file away: the only copy is the token's.
    let key_pem = std::fs::read_to_string(sandbox.path("pki/token-client.key"))?;
    move_key_into_token(&sandbox, &hsm, "token-client", "client", "01")?;
    let cert = format!("{pki}/token-client.pem");
    expect_success(with_token(&sandbox, &hsm, PIN, &create_args("token_cert", &cert, "pkcs11:token=edge;object=client")))?;

    let (_serve, port) = serve_with_token(&sandbox, &hsm, upstream_port)?;
    let mut upstream = upstream;
    // `cert test` signs through the token too, with the config's [pkcs11].
    let url = format!("https://localhost:{upstream_port}/health");
    let config = text(&sandbox.path("edgemtls.toml"));
    let tested = expect_success(with_token(
        &sandbox,
        &hsm,
        PIN,
        &["cert", "test", "token_cert", &url, "--env", "development", "--config", &config],
    ))?;
    ensure!(tested.contains("200"), "{tested}");
    // The upstream says which certificate the handshake presented: the token-backed one.
    let (status, body) = http_get(port, "/hello")?;
    ensure!(status == 200 && body.contains("\"client_cn\":\"token-client\""), "{status} {body}\n{}", text_of(&sandbox.path("serve.log")));

    // Neither the store nor any file the processes wrote holds the key.
    let der = pem::parse(&key_pem)?.into_contents();
    let inner = pkcs8_inner_key(&der)?;
    let mut files = Vec::new();
    files_under(sandbox.dir(), &hsm.tokens, &mut files)?;
    ensure!(files.iter().any(|f| f.ends_with("store.db")), "no store.db among {files:?}");
    for file in files {
        let bytes = std::fs::read(&file)?;
        let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        ensure!(!holds(&der) && !holds(&inner) && !holds(key_pem.as_bytes()), "'{}' holds the key", file.display());
    }

    // The token goes away (its directory moved): a new handshake cannot be signed, and the
    // request fails saying so, after the token's deadline at most. A restarted upstream makes
    // the next request a full handshake (no pooled connection, no resumable session).
    let away = sandbox.path("hsm/tokens.away");
    std::fs::rename(&hsm.tokens, &away)?;
    drop(upstream);
    upstream = start_dev_upstream(&sandbox, &pki, upstream_port)?;
    let started = std::time::Instant::now();
    let (status, body) = http_get(port, "/hello")?;
    ensure!(status == 502 && body.contains("\"reason\":\"client-key-unavailable\""), "{status} {body}");
    ensure!(body.contains("the client certificate's key could not sign: token 'edge' is not present"), "{body}");
    ensure!(started.elapsed() < std::time::Duration::from_secs(10), "the failure took {:?}", started.elapsed());
    let log = text_of(&sandbox.path("serve.log"));
    ensure!(log.contains("the token could not sign a TLS handshake"), "{log}");

    // While it is away the host restarts the module to look for it (every 2 s at most); SoftHSM2
    // cannot start without its token directory, and says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = http_get(port, "/hello")?;
        ensure!(status == 502, "{status} {body}");
        if body.contains("the module is stopped: restarting it to look for a token that had gone failed") {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "no restart of the module 20 s after the token went: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The token comes back: requests are signed through it again, without a restart of the host.
    std::fs::rename(&away, &hsm.tokens)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = http_get(port, "/hello")?;
        if status == 200 {
            ensure!(body.contains("\"client_cn\":\"token-client\""), "{body}");
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "still failing 20 s after the token came back: {status} {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(upstream);
    Ok(())
}

/// Moves the key `pki/{name}.key` into the token `edge` as `label` (id `id`) and removes
/// the file: the token's copy is the only one.
fn move_key_into_token(sandbox: &Sandbox, hsm: &SoftHsm, name: &str, label: &str, id: &str) -> Result<()> {
    let key_file = sandbox.path(&format!("pki/{name}.key"));
    hsm.import_key("edge", label, id, &key_file)?;
    std::fs::remove_file(&key_file)?;
    Ok(())
}

fn text_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_dev_ca_key_can_live_in_the_token() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let run = |pin: &str, args: &[&str]| with_token(&sandbox, &hsm, pin, args);
    let token_args = ["--pin-env", PIN_VAR];
    let init = |extra: &[&str]| {
        let mut args = vec!["pki", "init", "--out", "pki", "--key", "pkcs11:token=edge;object=dev-ca"];
        args.extend(token_args);
        args.extend(extra);
        run(PIN, &args)
    };
    let out = expect_success(init(&[]))?;
    ensure!(out.contains("generated in the token now, sensitive and not extractable"), "{out}");
    // No key file: the directory names the key instead.
    ensure!(!sandbox.path("pki/ca.key").exists(), "ca.key was written");
    ensure!(text_of(&sandbox.path("pki/ca.key.uri")).trim() == "pkcs11:token=edge;object=dev-ca;type=private");
    let ca_spki = spki_of_cert(&pem::parse(text_of(&sandbox.path("pki/ca.pem")))?.into_contents())?;

    // Issue through the token, and check the certificate against the CA with a real verifier.
    let mut issue = vec!["pki", "issue", "--ca", "pki", "--cn", "from-token", "--out", "pki"];
    issue.extend(token_args);
    expect_success(run(PIN, &issue))?;
    let verified = sandbox.ok(["pki", "verify", "--ca", "pki/ca.pem", "pki/from-token.pem"])?;
    ensure!(verified.contains("OK"), "{verified}");
    if have_openssl("the_dev_ca_key_can_live_in_the_token") {
        openssl(sandbox.dir(), ["verify", "-CAfile", "pki/ca.pem", "pki/from-token.pem"])?;
    }
    // --ca-cert with --ca-key naming the URI works as well.
    let mut issue = vec!["pki", "issue", "--ca-cert", "pki/ca.pem", "--ca-key", "pkcs11:token=edge;object=dev-ca", "--cn", "second"];
    issue.extend(["--out", "pki"]);
    issue.extend(token_args);
    expect_success(run(PIN, &issue))?;
    ensure!(sandbox.ok(["pki", "verify", "--ca", "pki/ca.pem", "pki/second.pem"])?.contains("OK"));

    // A wrong PIN issues nothing.
    let mut issue = vec!["pki", "issue", "--ca", "pki", "--cn", "refused", "--out", "pki"];
    issue.extend(token_args);
    expect_failure(run("0000", &issue), "token 'edge' refused the PIN")?;
    ensure!(!sandbox.path("pki/refused.pem").exists() && !sandbox.path("pki/refused.key").exists(), "files written after a wrong PIN");

    // A new CA certificate for the key already in the token: the same key, not a new one.
    let out = expect_success(init(&["--force"]))?;
    ensure!(out.contains("the token's existing key"), "{out}");
    let again = spki_of_cert(&pem::parse(text_of(&sandbox.path("pki/ca.pem")))?.into_contents())?;
    ensure!(again == ca_spki, "pki init --force made another key");
    Ok(())
}

#[test]
fn rotating_from_a_file_key_to_a_token_key_under_load_loses_no_request() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["file-client", "token-client"])?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "file_cert",
        "--cert",
        &format!("{pki}/file-client.pem"),
        "--key",
        &format!("{pki}/file-client.key"),
        "--env",
        "production",
    ])?;
    move_key_into_token(&sandbox, &hsm, "token-client", "client", "01")?;

    let config = sandbox.path("edgemtls.toml");
    let config_arg = text(&config);
    let admin_port = free_port()?;
    rotation_config(&config, "file_cert", upstream_port, admin_port)?;
    let port = free_port()?;
    // No [pkcs11] section: the default module (SoftHSM2's) and PIN variable.
    let mut command = with_token(
        &sandbox,
        &hsm,
        PIN,
        &["serve", "--config", &config_arg, "--env", "production", "--listen", &format!("127.0.0.1:{port}")],
    );
    command.env("EDGEMTLS_PKCS11_PIN", PIN).stdout(std::process::Stdio::null()).stderr(std::fs::File::create(sandbox.path("serve.log"))?);
    let _serve = Running(command.spawn()?);
    wait_for(port)?;
    let load = Load::start(port, "/api/charge", 4);

    let token_cert = format!("{pki}/token-client.pem");
    let mut create = create_args("token_cert", &token_cert, "pkcs11:token=edge;object=client");
    create.pop();
    create.push("production");
    expect_success(with_token(&sandbox, &hsm, PIN, &create))?;
    rotation_config(&config, "token_cert", upstream_port, admin_port)?;
    let reloaded = sandbox.ok(["reload", "--config", &config_arg])?;
    ensure!(reloaded.contains("certificates in use: token_cert"), "{reloaded}");
    sandbox.ok(["cert", "disable", "file_cert"])?;
    // From now on the upstream sees the token-backed certificate.
    for _ in 0..20 {
        let (status, body) = http_get(port, "/api/charge")?;
        ensure!(
            status == 200 && body.contains("\"client_cn\":\"token-client\""),
            "{status} {body}\n{}",
            text_of(&sandbox.path("serve.log"))
        );
    }

    let outcomes = load.finish();
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), outcomes.len(), &failures[..failures.len().min(5)]);
    ensure!(outcomes.len() >= 20, "too little load to mean anything ({} requests)", outcomes.len());
    ensure!(outcomes.iter().flatten().all(|cn| cn == "file-client" || cn == "token-client"), "{outcomes:?}");
    ensure!(outcomes.iter().flatten().any(|cn| cn == "token-client"), "the load never reached the token certificate");
    Ok(())
}

#[test]
fn an_rsa_key_in_the_token_signs_tls_1_3_and_tls_1_2_handshakes() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &[])?;
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "rsa-client", "--key-type", "rsa2048", "--out", &pki])?;
    move_key_into_token(&sandbox, &hsm, "rsa-client", "rsa", "03")?;
    let cert = format!("{pki}/rsa-client.pem");
    expect_success(with_token(&sandbox, &hsm, PIN, &create_args("token_cert", &cert, "pkcs11:token=edge;object=rsa")))?;
    // TLS 1.3 signs with RSA-PSS, TLS 1.2 (where the server prefers it) may take PKCS#1 v1.5.
    for versions in ["", "tls_versions = [\"1.2\"]"] {
        let (serve, port) = serve_with(&sandbox, &hsm, upstream_port, PIN, versions)?;
        let (status, body) = http_get(port, "/hello")?;
        ensure!(
            status == 200 && body.contains("\"client_cn\":\"rsa-client\""),
            "{versions}: {status} {body}\n{}",
            text_of(&sandbox.path("serve.log"))
        );
        drop(serve);
    }
    Ok(())
}

#[test]
fn a_pin_the_token_refuses_while_serving_fails_requests_plainly() -> Result<()> {
    let Some((sandbox, hsm)) = token_sandbox()? else { return Ok(()) };
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["token-client"])?;
    move_key_into_token(&sandbox, &hsm, "token-client", "client", "01")?;
    let cert = format!("{pki}/token-client.pem");
    expect_success(with_token(&sandbox, &hsm, PIN, &create_args("token_cert", &cert, "pkcs11:token=edge;object=client")))?;
    let (_serve, port) = serve_with(&sandbox, &hsm, upstream_port, "0000", "")?;
    // Every request fails with the reason; the second from the remembered refusal, not a new login.
    for _ in 0..2 {
        let (status, body) = http_get(port, "/hello")?;
        ensure!(
            status == 502
                && body.contains("\"reason\":\"client-key-unavailable\"")
                && body.contains(&format!("token 'edge' refused the PIN from the environment variable {PIN_VAR}")),
            "{status} {body}"
        );
    }
    let log = text_of(&sandbox.path("serve.log"));
    ensure!(log.contains("the token could not sign a TLS handshake") && log.contains("the PIN is wrong"), "{log}");
    Ok(())
}
