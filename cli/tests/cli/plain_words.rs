//! Every message a person reads is plain words: the CLI's errors from commands that fail in
//! the ways a newcomer meets (a missing config, a taken port, a missing or broken file, an
//! upstream that refuses), and the problem details a failing request answers with. None may
//! carry Rust Debug text or a library's own wording.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::common::*;

/// Text that shows a message was not written for a person: the system's error number, Rust
/// Debug output, a path into Rust code, a struct's braces, hyper's error framing, base64's words.
const NOT_PLAIN: [&str; 8] = ["os error", "Some(", "::", "{ ", "client error (", "Invalid padding", "Invalid symbol", "Invalid byte"];

fn assert_plain(text: &str, what: &str) -> Result<()> {
    for sign in NOT_PLAIN {
        ensure!(!text.contains(sign), "{what} contains '{sign}':\n{text}");
    }
    Ok(())
}

/// Runs a command that must fail; what it prints (`cert test` reports on standard output,
/// the rest on standard error) must say each of `says` in plain words.
fn failing(what: &str, mut command: std::process::Command, says: &[&str]) -> Result<String> {
    let output = command.output().with_context(|| format!("running {what}"))?;
    ensure!(!output.status.success(), "{what} succeeded but should fail:\n{}", describe(&output));
    let printed = format!("{}{}", String::from_utf8(output.stdout)?, String::from_utf8(output.stderr)?);
    assert_plain(&printed, what)?;
    for words in says {
        ensure!(printed.contains(words), "{what}: the output lacks {words:?}:\n{printed}");
    }
    Ok(printed)
}

#[test]
fn cli_errors_say_what_happened_and_what_to_do_in_plain_words() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, _port) = dev_pki_and_upstream(&sandbox, &["client"])?;
    let client_pem = format!("{pki}/client.pem");
    let client_key = format!("{pki}/client.key");
    sandbox.ok(["cert", "create", "--name", "client", "--cert", &client_pem, "--key", &client_key, "--env", "development"])?;

    // A port that something else holds for as long as the test runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken_addr = taken.local_addr()?.to_string();
    let taken_config = sandbox.write("taken.toml", format!("listen = \"{taken_addr}\"\n"))?;
    // A port nothing listens on: bound, then let go.
    let dead_port = free_port()?;
    let broken_pem = sandbox.write("broken.pem", "-----BEGIN CERTIFICATE-----\nMIIB=x\n-----END CERTIFICATE-----\n")?;
    let bad_ca_config = sandbox.write("bad-ca.toml", "[[upstreams]]\nhosts = [\"api.example:443\"]\nca_bundle = \"missing-ca.pem\"\n")?;

    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("serve without a config", vec!["serve".into()], vec!["'edgemtls.toml'", "does not exist", "--config"]),
        ("check without a config", vec!["check".into(), "--config".into(), "nope.toml".into()], vec!["does not exist", "--config"]),
        (
            "serve on a taken port",
            vec!["serve".into(), "--config".into(), text(&taken_config)],
            vec![&taken_addr, "another program already listens", "--listen"],
        ),
        (
            "dev-upstream on a taken port",
            [
                "dev-upstream",
                "--client-ca",
                &format!("{pki}/ca.pem"),
                "--cert",
                &format!("{pki}/localhost.pem"),
                "--key",
                &format!("{pki}/localhost.key"),
                "--listen",
                &taken_addr,
            ]
            .map(String::from)
            .to_vec(),
            vec![&taken_addr, "another program already listens"],
        ),
        (
            "a missing certificate file",
            ["cert", "create", "--name", "x", "--cert", "missing.pem", "--key", &client_key, "--env", "development"]
                .map(String::from)
                .to_vec(),
            vec!["'missing.pem'", "does not exist"],
        ),
        (
            "a key that is a directory",
            ["cert", "create", "--name", "x", "--cert", &client_pem, "--key", &pki, "--env", "development"].map(String::from).to_vec(),
            vec!["not a regular file"],
        ),
        (
            "bad base64 in a PEM",
            ["cert", "create", "--name", "x", "--cert", &text(&broken_pem), "--key", &client_key, "--env", "development"]
                .map(String::from)
                .to_vec(),
            vec!["broken.pem", "not valid base64"],
        ),
        (
            "a refused upstream through cert test",
            ["cert", "test", "client", &format!("https://127.0.0.1:{dead_port}/"), "--ca", &format!("{pki}/ca.pem")]
                .map(String::from)
                .to_vec(),
            vec!["refused the connection"],
        ),
        (
            "pki issue from a missing CA",
            ["pki", "issue", "--ca", "no-such-ca", "--cn", "x", "--out", "out"].map(String::from).to_vec(),
            vec!["no-such-ca", "does not exist"],
        ),
        ("a config naming a missing CA bundle", vec!["check".into(), "--config".into(), text(&bad_ca_config)], vec!["missing-ca.pem"]),
    ];
    for (what, args, says) in cases {
        let says: Vec<&str> = says.iter().map(|s| s.as_ref()).collect();
        failing(what, sandbox.command(&args), &says)?;
    }

    // A master key that is not base64.
    let mut bad_key = sandbox.command(["cert", "list"]);
    bad_key.env("EDGEMTLS_MASTER_KEY", "c2hvcnQ");
    failing("a master key that is not base64", bad_key, &["EDGEMTLS_MASTER_KEY", "not valid base64"])?;
    drop(taken);
    Ok(())
}

#[test]
fn problem_details_of_failing_requests_are_plain_words() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["client"])?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "client",
        "--cert",
        &format!("{pki}/client.pem"),
        "--key",
        &format!("{pki}/client.key"),
        "--env",
        "development",
    ])?;
    let dead_port = free_port()?;
    let config = sandbox.write(
        "edgemtls.toml",
        format!(
            r#"[[routes]]
path = "/refused"
handler = "url-forward"
certificates = ["client"]
[routes.options]
baseUrl = "https://localhost:{dead_port}"
mtlsCertificate = "client"

[[routes]]
path = "/untrusted"
handler = "url-forward"
certificates = ["client"]
[routes.options]
baseUrl = "https://localhost:{upstream_port}"
mtlsCertificate = "client"

[[routes]]
path = "/unresolvable"
handler = "url-forward"
certificates = ["client"]
[routes.options]
baseUrl = "https://no-such-host.invalid"
mtlsCertificate = "client"
"#
        ),
    )?;
    let (_serve, port, log) = serve_logged(&sandbox, &config, false)?;

    for (path, status, reason) in [
        ("/refused/x", 502, "connection-refused"),
        // No ca_bundle for the dev CA: the upstream's certificate is from a CA nobody trusts.
        ("/untrusted/x", 502, "upstream-unknown-issuer"),
        // A name no resolver knows: the failure is the client library's, framed in its words.
        ("/unresolvable/x", 502, "connect-failed"),
        ("/nowhere", 404, "no-route"),
    ] {
        let (got, body) = http_get(port, path)?;
        let what = format!("GET {path}");
        ensure!(got == status, "{what}: {got} {body}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        let problem: Value = serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))?;
        ensure!(problem["type"] == format!("urn:edgemtls:problem:{reason}"), "{what}: {problem}");
        let Value::Object(members) = &problem else { anyhow::bail!("{what}: not an object: {problem}") };
        for (name, value) in members {
            if let Value::String(words) = value {
                assert_plain(words, &format!("{what}: {name}"))?;
            }
        }
    }
    Ok(())
}
