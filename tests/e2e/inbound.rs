//! Inbound mutual TLS: the listener verifies callers' certificates, refuses the bad ones
//! with their reason, and hands the good ones' identity to handlers and, when a route
//! forwards it, to upstreams. The callers are curl, `openssl s_client` and Python's `ssl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgemtls_host::Environment;
use edgemtls_host::pki::{DevCa, IssueOptions, inspect_leaf};
use time::OffsetDateTime;

use crate::harness::*;

pub(crate) const CALLER_ECHO: &str = edgemtls_e2e::guests::CALLER_ECHO;

/// The server's certificate (from the world's CA) and callers' certificates from a CA of
/// their own, written as files the clients read.
struct Callers {
    dir: PathBuf,
    ca: DevCa,
}

/// A client certificate and key on disk.
pub(crate) struct ClientFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl ClientFiles {
    /// The certificate (DER).
    fn der(&self) -> anyhow::Result<rustls_pki_types::CertificateDer<'static>> {
        let mut chain = edgemtls_host::pki::pem::certificates(&std::fs::read(&self.cert)?)?;
        anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", self.cert.display());
        Ok(chain.remove(0))
    }

    /// What the store's inspection says about it (serial, SPKI hash, fingerprint).
    pub(crate) fn metadata(&self) -> anyhow::Result<edgemtls_host::pki::CertificateMetadata> {
        Ok(inspect_leaf(&self.cert, &self.der()?)?)
    }
}

impl Callers {
    fn new(world: &World) -> anyhow::Result<Self> {
        let dir = world.path().join("callers");
        std::fs::create_dir_all(&dir)?;
        let server = IssueOptions {
            common_name: "localhost".into(),
            server: true,
            sans: vec!["localhost".into(), "127.0.0.1".into()],
            days: 30,
            ..Default::default()
        };
        let (chain, key) = world.ca.issue(&server)?;
        std::fs::write(world.path().join("server.pem"), chain)?;
        std::fs::write(world.path().join("server.key"), key)?;
        let ca = DevCa::generate("callers CA", 30)?;
        std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
        std::fs::write(dir.join("crl.pem"), ca.revocation_list(&[])?)?;
        Ok(Self { dir, ca })
    }

    fn issue(&self, stem: &str, cn: &str, server: bool, validity: Option<(OffsetDateTime, OffsetDateTime)>) -> anyhow::Result<ClientFiles> {
        issue_with(&self.ca, &self.dir, stem, cn, server, validity)
    }

    fn client(&self, stem: &str, cn: &str) -> anyhow::Result<ClientFiles> {
        self.issue(stem, cn, false, None)
    }

    /// Revokes `client` in the CRL the listener reads.
    fn revoke(&self, client: &ClientFiles) -> anyhow::Result<()> {
        let serial = client.metadata()?.serial;
        std::fs::write(self.dir.join("crl.pem"), self.ca.revocation_list(&[&serial])?)?;
        Ok(())
    }
}

fn issue_with(
    ca: &DevCa,
    dir: &Path,
    stem: &str,
    cn: &str,
    server: bool,
    validity: Option<(OffsetDateTime, OffsetDateTime)>,
) -> anyhow::Result<ClientFiles> {
    let options =
        IssueOptions { common_name: cn.into(), server, sans: vec![format!("{stem}.callers.example")], days: 30, ..Default::default() };
    let (cert, key) = match validity {
        Some((from, until)) => ca.issue_with_validity(&options, from, until)?,
        None => ca.issue(&options)?,
    };
    let files = ClientFiles { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
    std::fs::write(&files.cert, cert)?;
    std::fs::write(&files.key, key)?;
    Ok(files)
}

/// A TLS config with `routes` and `[tls]` lines `tls_extra`.
fn tls_config(world: &World, tls_extra: &str, routes: &str) -> anyhow::Result<PathBuf> {
    world.config_raw(&format!(
        "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"callers/ca.pem\"]\ncrl = [\"callers/crl.pem\"]\n{tls_extra}\n{routes}"
    ))
}

fn echo_route(path: &str, extra: &str) -> String {
    format!("[[routes]]\npath = \"{path}\"\nhandler = \"{CALLER_ECHO}\"\n{extra}\n")
}

/// What a client got: the status and the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// The HTTP version curl used (`1.1`, `2`), when curl was the client.
    version: String,
}

impl Answer {
    /// The value of a `key: value` line from the caller-echo guest.
    pub(crate) fn line(&self, key: &str) -> Option<&str> {
        self.body.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
    }

    pub(crate) fn problem_type(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("(not a problem: {})", self.body))
    }
}

async fn run(mut command: Command, stdin: Option<String>) -> anyhow::Result<std::process::Output> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<std::process::Output> {
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot run the client")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    })
    .await?
}

/// `curl` to `https://localhost:PORT{path}` trusting the world's CA.
pub(crate) async fn curl(world: &World, port: u16, path: &str, client: Option<&ClientFiles>, extra: &[&str]) -> anyhow::Result<Answer> {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(world.path().join("pki/ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1"), "-w", "\n%{http_code} %{http_version}"])
        .args(extra);
    if let Some(client) = client {
        command.arg("--cert").arg(&client.cert).arg("--key").arg(&client.key);
    }
    command.arg(format!("https://localhost:{port}{path}"));
    let output = run(command, None).await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) =
        text.rsplit_once('\n').with_context(|| format!("curl printed nothing: {}", String::from_utf8_lossy(&output.stderr)))?;
    let (status, version) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Ok(Answer { status: status.parse().unwrap_or(0), body: body.to_string(), version: version.to_string() })
}

/// `openssl s_client` sending one HTTP/1.1 request.
pub(crate) async fn s_client(world: &World, port: u16, path: &str, client: &ClientFiles) -> anyhow::Result<Answer> {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost", "-CAfile"])
        .arg(world.path().join("pki/ca.pem"))
        .arg("-cert")
        .arg(&client.cert)
        .arg("-key")
        .arg(&client.key);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let output = run(command, Some(request)).await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Ok(Answer { status, body, version: "1.1".into() })
}

const PYTHON_CLIENT: &str = r#"
import http.client, ssl, sys
cafile, cert, key, port, path = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
if cert:
    context.load_cert_chain(cert, key)
connection = http.client.HTTPSConnection("localhost", int(port), context=context, timeout=20)
connection.request("GET", path)
response = connection.getresponse()
print(response.status)
print(response.read().decode(), end="")
"#;

/// Python's `ssl` and `http.client`.
async fn python(world: &World, port: u16, path: &str, client: &ClientFiles) -> anyhow::Result<Answer> {
    let mut command = Command::new("python3");
    command.args(["-c", PYTHON_CLIENT]).arg(world.path().join("pki/ca.pem")).arg(&client.cert).arg(&client.key);
    command.arg(port.to_string()).arg(path);
    let output = run(command, None).await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, body) =
        text.split_once('\n').with_context(|| format!("python printed nothing: {}", String::from_utf8_lossy(&output.stderr)))?;
    Ok(Answer { status: status.trim().parse().unwrap_or(0), body: body.to_string(), version: String::new() })
}

/// What `openssl x509` prints for a certificate: the RFC 2253 subject and the SHA-256
/// fingerprint (lower-case, without colons).
async fn openssl_facts(cert: &Path) -> anyhow::Result<(String, String)> {
    let mut command = Command::new("openssl");
    command.args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-fingerprint", "-sha256", "-in"]).arg(cert);
    let output = run(command, None).await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let subject = text.lines().find_map(|l| l.strip_prefix("subject=")).context("no subject")?.trim().to_string();
    let fingerprint = text.lines().find_map(|l| l.split_once("Fingerprint=").map(|(_, f)| f)).context("no fingerprint")?;
    Ok((subject, fingerprint.replace(':', "").to_ascii_lowercase()))
}

fn port_of(host: &Served) -> u16 {
    host.addr.port()
}

#[tokio::test]
async fn a_valid_caller_reaches_a_required_route_over_h2_and_http1_and_the_handler_sees_what_openssl_prints() -> anyhow::Result<()> {
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let config = tls_config(&world, "client_auth = \"required\"", &echo_route("/secure", ""))?;
    let host = world.serve(&config, Environment::Development).await?;
    let (subject, fingerprint) = openssl_facts(&bot.cert).await?;

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let answer = curl(&world, port_of(&host), "/secure", Some(&bot), &[flag]).await?;
        assert_eq!((answer.status, answer.version.as_str()), (200, version), "{answer:?}");
        assert_eq!(answer.line("sdk.subject"), Some(subject.as_str()), "{}", answer.body);
        assert_eq!(answer.line("sdk.fingerprint"), Some(fingerprint.as_str()), "{}", answer.body);
        assert_eq!(answer.line("sdk.verified"), Some("true"));
        assert_eq!(answer.line("sdk.issuer"), Some("O=edgemtls development,CN=callers CA"));
        assert_eq!(answer.line("sdk.sans"), Some("DNS:bot.callers.example"));
        // curl sends the leaf and the CA: the rest of the chain is Client-Cert-Chain.
        assert_eq!(answer.line("sdk.chain_len"), Some("1"), "{}", answer.body);
        assert!(answer.line("header.client-cert").is_some_and(|v| v.starts_with(':') && v.ends_with(':')), "{}", answer.body);
    }
    let answer = python(&world, port_of(&host), "/secure", &bot).await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.line("sdk.fingerprint"), Some(fingerprint.as_str()));
    Ok(())
}

#[tokio::test]
async fn callers_without_a_valid_certificate_are_refused_with_their_reason() -> anyhow::Result<()> {
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let now = OffsetDateTime::now_utc();
    let expired = callers.issue("expired", "expired-bot", false, Some((now - time::Duration::days(30), now - time::Duration::days(1))))?;
    let revoked = callers.client("revoked", "revoked-bot")?;
    let server_only = callers.issue("server-only", "not-a-client", true, None)?;
    let stranger_ca = DevCa::generate("stranger CA", 30)?;
    let stranger = issue_with(&stranger_ca, &callers.dir, "stranger", "stranger-bot", false, None)?;
    callers.revoke(&revoked)?;
    let config = tls_config(&world, "client_auth = \"required\"", &echo_route("/secure", ""))?;
    let host = world.serve(&config, Environment::Development).await?;
    let port = port_of(&host);

    let none = curl(&world, port, "/secure", None, &[]).await?;
    assert_eq!((none.status, none.problem_type()), (401, "urn:edgemtls:problem:client-certificate-required".into()), "{none:?}");
    let other_ca = s_client(&world, port, "/secure", &stranger).await?;
    assert_eq!(
        (other_ca.status, other_ca.problem_type()),
        (401, "urn:edgemtls:problem:client-certificate-unknown-issuer".into()),
        "{other_ca:?}"
    );
    let expired = python(&world, port, "/secure", &expired).await?;
    assert_eq!((expired.status, expired.problem_type()), (401, "urn:edgemtls:problem:client-certificate-expired".into()), "{expired:?}");
    let revoked = python(&world, port, "/secure", &revoked).await?;
    assert_eq!((revoked.status, revoked.problem_type()), (401, "urn:edgemtls:problem:client-certificate-revoked".into()), "{revoked:?}");
    let wrong = curl(&world, port, "/secure", Some(&server_only), &[]).await?;
    assert_eq!((wrong.status, wrong.problem_type()), (401, "urn:edgemtls:problem:client-certificate-wrong-purpose".into()), "{wrong:?}");
    assert!(revoked.body.contains("revoked by its issuer"), "the detail is in plain words: {}", revoked.body);

    let metrics = host.handle.app().metrics().encode();
    for reason in ["required", "unknown-issuer", "expired", "revoked", "wrong-purpose"] {
        assert!(metrics.contains(&format!("edgemtls_inbound_callers_refused_total{{reason=\"{reason}\"}} 1")), "{reason}: {metrics}");
    }

    // Plain HTTP to the TLS listener never completes a handshake, and is counted.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(host.addr).await?;
        plain.write_all(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut rest)).await;
    }
    let counted = "edgemtls_inbound_handshake_failures_total{reason=\"protocol\"} 1";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.handle.app().metrics().encode().contains(counted) {
        assert!(Instant::now() < deadline, "the failed handshake was not counted: {}", host.handle.app().metrics().encode());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn optional_callers_without_a_certificate_are_served_and_forged_identity_never_reaches_the_handler() -> anyhow::Result<()> {
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let config = tls_config(&world, "client_auth = \"optional\"", &echo_route("/open", ""))?;
    let host = world.serve(&config, Environment::Development).await?;
    let forged = ["-H", "Client-Cert: :QUFBQQ==:", "-H", "edgemtls-client-subject: CN=admin", "-H", "EdgeMTLS-Client-Cert-Verified: true"];

    let anonymous = curl(&world, port_of(&host), "/open", None, &forged).await?;
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    assert_eq!(anonymous.line("sdk.presented"), Some("false"), "{}", anonymous.body);
    assert_eq!(anonymous.line("header.edgemtls-client-cert-presented"), Some("false"), "{}", anonymous.body);
    assert!(
        !anonymous.body.contains("CN=admin") && !anonymous.body.contains("QUFBQQ"),
        "forged headers reached the handler: {}",
        anonymous.body
    );

    let with_certificate = curl(&world, port_of(&host), "/open", Some(&bot), &forged).await?;
    assert_eq!(with_certificate.status, 200, "{with_certificate:?}");
    assert!(!with_certificate.body.contains("CN=admin") && !with_certificate.body.contains("QUFBQQ"), "{}", with_certificate.body);
    assert!(with_certificate.line("sdk.subject").is_some_and(|s| s.contains("CN=deploy-bot")), "{}", with_certificate.body);
    drop(host);

    // On a plain-HTTP listener the copies a caller sends are removed too.
    let plain = world.config_raw(&echo_route("/open", ""))?;
    let host = world.serve(&plain, Environment::Development).await?;
    let answer = host.get("/open", &[("client-cert", ":QUFBQQ==:"), ("edgemtls-client-subject", "CN=admin")]).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body.trim(), "sdk.presented: false", "forged headers reached the handler");
    Ok(())
}

#[tokio::test]
async fn loopback_exemption_is_off_by_default_and_allow_lists_still_need_a_certificate() -> anyhow::Result<()> {
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let ops = callers.client("ops", "ops-agent")?;
    let routes =
        format!("{}{}", echo_route("/secure", ""), echo_route("/ops", "allowed_client_subjects = [\"CN=ops-*, O=edgemtls development\"]"));
    let exempt = tls_config(&world, "client_auth = \"required\"\nclient_auth_exempt_loopback = true", &routes)?;
    let host = world.serve(&exempt, Environment::Development).await?;
    let port = port_of(&host);
    let local = curl(&world, port, "/secure", None, &[]).await?;
    assert_eq!((local.status, local.line("sdk.presented")), (200, Some("false")), "{local:?}");
    let ops_without = curl(&world, port, "/ops", None, &[]).await?;
    assert_eq!(ops_without.problem_type(), "urn:edgemtls:problem:client-certificate-required", "{ops_without:?}");
    let not_allowed = curl(&world, port, "/ops", Some(&bot), &[]).await?;
    assert_eq!(
        (not_allowed.status, not_allowed.problem_type()),
        (401, "urn:edgemtls:problem:client-certificate-not-allowed".into()),
        "{not_allowed:?}"
    );
    assert!(not_allowed.body.contains("allowed_client_subjects"), "{}", not_allowed.body);
    let allowed = curl(&world, port, "/ops", Some(&ops), &[]).await?;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    drop(host);

    let default = tls_config(&world, "client_auth = \"required\"", &routes)?;
    let host = world.serve(&default, Environment::Development).await?;
    let refused = curl(&world, port_of(&host), "/secure", None, &[]).await?;
    assert_eq!(refused.status, 401, "loopback is not exempt unless the config says so: {refused:?}");
    Ok(())
}

#[tokio::test]
async fn a_new_server_certificate_and_crl_are_used_once_their_files_change() -> anyhow::Result<()> {
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let config = tls_config(&world, "client_auth = \"required\"", &echo_route("/secure", ""))?;
    let host = world.serve(&config, Environment::Development).await?;
    let port = port_of(&host);
    assert_eq!(curl(&world, port, "/secure", Some(&bot), &[]).await?.status, 200);

    // Revoking the caller takes effect without a reload.
    callers.revoke(&bot)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = curl(&world, port, "/secure", Some(&bot), &[]).await?;
        if answer.problem_type() == "urn:edgemtls:problem:client-certificate-revoked" {
            break;
        }
        assert!(Instant::now() < deadline, "the new CRL was not picked up: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // So does a renewed server certificate.
    let renewed = IssueOptions {
        common_name: "localhost".into(),
        server: true,
        sans: vec!["localhost".into(), "127.0.0.1".into()],
        days: 60,
        ..Default::default()
    };
    let (chain, key) = world.ca.issue(&renewed)?;
    let expected = edgemtls_host::pki::pem::certificates(chain.as_bytes())?;
    let expected = inspect_leaf(Path::new("server.pem"), &expected[0])?.fingerprint_sha256;
    std::fs::write(world.path().join("server.key"), key)?;
    std::fs::write(world.path().join("server.pem"), chain)?;
    loop {
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ));
        let output = run(command, None).await?;
        let seen = String::from_utf8_lossy(&output.stdout).replace(':', "").to_ascii_lowercase();
        if seen.contains(&expected) {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed server certificate was not picked up: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One keep-alive connection (Python `http.client`): a request every 100 ms until one is
/// refused or 20 s pass, each printed as `STATUS LOCAL-PORT PROBLEM-TYPE` (the local port
/// shows the connection stayed the same). Reads a line from stdin after the first answer,
/// so the test can change the listener's trust in between.
pub(crate) const PYTHON_KEEPALIVE_CLIENT: &str = r#"
import http.client, json, ssl, sys, time
cafile, cert, key, port, path = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
context.load_cert_chain(cert, key)
connection = http.client.HTTPSConnection("localhost", int(port), context=context, timeout=20)
deadline = time.time() + 20
first = True
while True:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read().decode()
    kind = json.loads(body).get("type", "-") if response.status != 200 else "-"
    print(response.status, connection.sock.getsockname()[1], kind, flush=True)
    if first:
        first = False
        sys.stdin.readline()
    if response.status != 200 or time.time() > deadline:
        break
    time.sleep(0.1)
"#;

#[tokio::test]
async fn a_caller_revoked_while_connected_is_refused_on_its_next_request_on_the_same_connection() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let world = World::new()?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let config = tls_config(&world, "client_auth = \"required\"", &echo_route("/secure", ""))?;
    let host = world.serve(&config, Environment::Development).await?;
    let mut client = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_KEEPALIVE_CLIENT])
        .arg(world.path().join("pki/ca.pem"))
        .arg(&bot.cert)
        .arg(&bot.key)
        .arg(port_of(&host).to_string())
        .arg("/secure")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(client.stdout.take().context("no stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??.context("the client printed nothing")?;
    assert!(first.starts_with("200 "), "{first}");

    // Revoked while its connection is open: nginx would serve it until it reconnects.
    callers.revoke(&bot)?;
    client.stdin.take().context("no stdin")?.write_all(b"go\n").await?;
    let mut last = first.clone();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await?? {
        last = line;
    }
    let first_port = first.split(' ').nth(1);
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.first(), Some(&"401"), "never refused on the open connection: {last}");
    assert_eq!(fields.get(1).copied(), first_port, "the client had to reconnect: {first} then {last}");
    assert_eq!(fields.get(2), Some(&"urn:edgemtls:problem:client-certificate-revoked"), "{last}");
    Ok(())
}

#[tokio::test]
async fn the_caller_identity_reaches_an_nginx_upstream_only_when_the_route_forwards_it() -> anyhow::Result<()> {
    let world = World::new()?;
    let echo = r#"return 200 "nginx saw $ssl_client_s_dn; subject $http_edgemtls_client_subject; client-cert $http_client_cert\n";"#;
    let Some(nginx) = crate::nginx::Nginx::start(&world, echo).await? else {
        return Ok(());
    };
    world.add_cert("nginx_client", "nginx-client", &all_envs())?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let forward = |path: &str, forward: bool| {
        format!(
            "[[routes]]\npath = \"{path}\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"https://localhost:{}\"\nmtlsCertificate = \"nginx_client\"\nforwardClientCert = {forward}\n",
            nginx.addr.port()
        )
    };
    let routes = format!("{}{}", forward("/with", true), forward("/without", false));
    let tls = "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"callers/ca.pem\"]\nclient_auth = \"required\"\n";
    let config = world.config(&format!("{tls}{routes}"), nginx.addr)?;
    let host = world.serve(&config, Environment::Development).await?;

    let expected = {
        use base64::Engine;
        format!(":{}:", base64::engine::general_purpose::STANDARD.encode(bot.der()?))
    };
    // Forged copies in the spellings nginx (and CGI, WSGI) fold into the real names.
    let forged = ["-H", "client_cert: :U1BPT0Y=:", "-H", "edgemtls_client_subject: CN=root", "-H", "EDGEMTLS_CLIENT-SUBJECT: CN=root"];
    let with = curl(&world, port_of(&host), "/with", Some(&bot), &forged).await?;
    assert_eq!(with.status, 200, "{with:?}");
    assert!(
        with.body.contains("nginx saw O=edgemtls development,CN=nginx-client"),
        "edgemtls presented the named certificate: {}",
        with.body
    );
    assert!(with.body.contains(&format!("client-cert {expected}")), "nginx got the caller's certificate: {}", with.body);
    assert!(!with.body.contains("U1BPT0Y") && !with.body.contains("CN=root"), "a forged spelling reached nginx: {}", with.body);
    let without = curl(&world, port_of(&host), "/without", Some(&bot), &forged).await?;
    assert_eq!(without.status, 200, "{without:?}");
    assert!(without.body.trim_end().ends_with("subject ; client-cert"), "forwarded without being asked, or forged: {}", without.body);
    Ok(())
}

#[tokio::test]
async fn mtls_auth_admits_callers_by_subject_and_by_the_binding_of_their_token() -> anyhow::Result<()> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let world = World::new()?;
    world.add_cert("edge", "edge-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let callers = Callers::new(&world)?;
    let bot = callers.client("bot", "deploy-bot")?;
    let ops = callers.client("ops", "ops-agent")?;
    let route = format!(
        "[[routes]]\npath = \"/agents\"\nhandler = \"mtls-auth\"\n[routes.options]\nbaseUrl = \"https://localhost:{}\"\nmtlsCertificate = \"edge\"\nallowedSubjects = \"O=edgemtls development,CN=deploy-*\"\n",
        upstream.addr().port()
    );
    let tls = "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"callers/ca.pem\"]\nclient_auth = \"required\"\n";
    let config = world.config(&format!("{tls}{route}"), upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let port = port_of(&host);

    let token = |binding: &str| {
        let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let bearer =
            format!("{}.{}.c2ln", part(r#"{"alg":"ES256"}"#), part(&format!(r#"{{"sub":"bot","cnf":{{"x5t#S256":"{binding}"}}}}"#)));
        format!("Authorization: Bearer {bearer}")
    };
    let bot_facts = bot.metadata()?;
    let certificate_hash = {
        let bytes: Vec<u8> = (0..bot_facts.fingerprint_sha256.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&bot_facts.fingerprint_sha256[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        URL_SAFE_NO_PAD.encode(bytes)
    };

    let unbound = curl(&world, port, "/agents/register", Some(&bot), &[]).await?;
    assert_eq!(unbound.status, 200, "no token binding to check: {unbound:?}");
    let spki_bound = curl(&world, port, "/agents/register", Some(&bot), &["-H", &token(&bot_facts.spki_sha256)]).await?;
    assert_eq!(spki_bound.status, 200, "ARCP's SPKI binding: {spki_bound:?}");
    let cert_bound = curl(&world, port, "/agents/register", Some(&bot), &["-H", &token(&certificate_hash)]).await?;
    assert_eq!(cert_bound.status, 200, "RFC 8705's certificate binding: {cert_bound:?}");
    let stolen = curl(&world, port, "/agents/register", Some(&bot), &["-H", &token(&ops.metadata()?.spki_sha256)]).await?;
    assert_eq!((stolen.status, stolen.problem_type()), (401, "urn:edgemtls:problem:mtls-binding-mismatch".into()), "{stolen:?}");
    let other_subject = curl(&world, port, "/agents/register", Some(&ops), &[]).await?;
    assert_eq!(
        (other_subject.status, other_subject.problem_type()),
        (401, "urn:edgemtls:problem:mtls-not-allowed".into()),
        "{other_subject:?}"
    );
    Ok(())
}

/// Runs `openssl ARGS` in `dir`.
async fn openssl_in(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    let output = run(command, None).await?;
    anyhow::ensure!(output.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// ContextForge's Quick Start makes callers' certificates with `openssl x509 -req` and no
/// `-extfile`: X.509 version 1, which webpki does not verify. Such a caller completes the
/// handshake and gets a 401 that names the version and the fix, counted under its own
/// reason, instead of a bare TLS alert counted as a bad signature.
#[tokio::test]
async fn a_caller_with_a_version_1_certificate_is_refused_with_words_that_name_it() -> anyhow::Result<()> {
    let world = World::new()?;
    let _callers = Callers::new(&world)?;
    let dir = world.path().join("quick-start");
    std::fs::create_dir_all(&dir)?;
    openssl_in(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Quick Start CA",
            "-days",
            "30",
        ],
    )
    .await?;
    openssl_in(
        &dir,
        &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=quick-client"],
    )
    .await?;
    openssl_in(
        &dir,
        &["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.pem", "-days", "30"],
    )
    .await?;
    let v1 = ClientFiles { cert: dir.join("client.pem"), key: dir.join("client.key") };
    let config = world.config_raw(&format!(
        "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"quick-start/ca.pem\"]\nclient_auth = \"required\"\n{}",
        echo_route("/secure", "")
    ))?;
    let host = world.serve(&config, Environment::Development).await?;
    let port = port_of(&host);

    for answer in [curl(&world, port, "/secure", Some(&v1), &["--http1.1"]).await?, s_client(&world, port, "/secure", &v1).await?] {
        assert_eq!((answer.status, answer.problem_type()), (401, "urn:edgemtls:problem:client-certificate-version-1".into()), "{answer:?}");
        assert!(answer.body.contains("X.509 version 1 certificate"), "{}", answer.body);
        assert!(answer.body.contains("-extfile") && answer.body.contains("edgemtls pki issue"), "the fix is given: {}", answer.body);
        assert!(!answer.body.contains("UnsupportedCertVersion"), "{}", answer.body);
    }
    let metrics = host.handle.app().metrics().encode();
    assert!(metrics.contains("edgemtls_inbound_callers_refused_total{reason=\"version-1\"} 2"), "{metrics}");
    assert!(!metrics.contains("bad-client-signature"), "{metrics}");
    Ok(())
}

/// ARCP's parsing of `MTLS_CERT_HEADER`: URL-unquote, load the PEM, hash the
/// SubjectPublicKeyInfo. Prints the SPKI SHA-256 (base64url, no padding) and the subject CN.
const ARCP_PARSE: &str = r#"
import base64, hashlib, sys, urllib.parse
from cryptography import x509
from cryptography.hazmat.primitives import serialization
cert = x509.load_pem_x509_certificate(urllib.parse.unquote(sys.argv[1]).encode())
spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
print(base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode())
print(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
"#;

/// The `name=value` lines nginx printed.
fn nginx_line<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix('=')).unwrap_or("(missing)")
}

/// `caller_headers_preset = "nginx"` sets what nginx itself computes for the same caller:
/// nginx, called directly with the caller's certificate, prints its `$ssl_client_*`
/// variables; called through edgemtls, it prints the headers it got, which must be the same
/// bytes. ARCP's parsing of `X-Client-Cert` finds the caller's key, ContextForge's
/// `X-Authenticated-User` is the caller's CN, and forged copies (any case, `_` for `-`)
/// never reach nginx (which keeps underscored headers) nor the dev upstream, with or without
/// a certificate.
#[tokio::test]
async fn caller_headers_reproduce_nginx_variables_and_forged_copies_never_reach_the_upstream() -> anyhow::Result<()> {
    let world = World::new()?;
    let printed = [
        ("ssl_s_dn", "$ssl_client_s_dn"),
        ("ssl_i_dn", "$ssl_client_i_dn"),
        ("ssl_serial", "$ssl_client_serial"),
        ("ssl_fingerprint", "$ssl_client_fingerprint"),
        ("ssl_verify", "$ssl_client_verify"),
        ("ssl_cert", "$ssl_client_escaped_cert"),
        ("h_s_dn", "$http_x_ssl_client_s_dn"),
        ("h_cn", "$http_x_ssl_client_s_dn_cn"),
        ("h_i_dn", "$http_x_ssl_client_i_dn"),
        ("h_serial", "$http_x_client_cert_serial"),
        ("h_fingerprint", "$http_x_client_cert_fingerprint"),
        ("h_verify", "$http_x_ssl_client_verify"),
        ("h_cert", "$http_x_client_cert"),
        ("h_user", "$http_x_authenticated_user"),
        ("h_spki", "$http_x_client_spki"),
    ];
    let location = format!("return 200 \"{}\";", printed.iter().map(|(name, var)| format!("{name}={var}\\n")).collect::<String>());
    let Some(nginx) = crate::nginx::Nginx::start(&world, &location).await? else {
        return Ok(());
    };
    world.add_cert("edge", "edge-client", &all_envs())?;
    let dump = world.upstream(true).await?;
    let _callers = Callers::new(&world)?; // server.pem for the listener
    // The caller's certificate comes from the world's CA, which nginx trusts too.
    let agent = issue_with(&world.ca, world.path(), "agent", "agent-7", false, None)?;
    let forward = |path: &str, port: u16| {
        format!(
            "[[routes]]\npath = \"{path}\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"https://localhost:{port}\"\nmtlsCertificate = \"edge\"\n"
        )
    };
    let config = world.config_raw(&format!(
        "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"pki/ca.pem\"]\nclient_auth = \"optional\"\n\
         caller_headers_preset = \"nginx\"\n[tls.caller_headers]\n\"X-Authenticated-User\" = \"subject_cn\"\n\n\
         {nginx_route}[routes.caller_headers]\n\"X-Client-SPKI\" = \"spki_sha256\"\n\n{dump_route}\n\
         [[upstreams]]\nhosts = [\"localhost:{n}\", \"localhost:{d}\"]\nca_bundle = \"pki/ca.pem\"\n",
        nginx_route = forward("/nginx", nginx.addr.port()),
        dump_route = forward("/dump", dump.addr().port()),
        n = nginx.addr.port(),
        d = dump.addr().port(),
    ))?;
    let host = world.serve(&config, Environment::Development).await?;
    let port = port_of(&host);
    let forged = [
        "-H",
        "X-Authenticated-User: root",
        "-H",
        "x_authenticated_user: root",
        "-H",
        "X-Client-Cert: forged",
        "-H",
        "X_CLIENT_CERT: forged",
        "-H",
        "x-ssl-client-verify: SUCCESS",
        "-H",
        "X_SSL_Client_S_DN: CN=root",
        "-H",
        "x-client-spki: forged",
        "-H",
        "X-Tenant: kept",
    ];

    let direct = curl(&world, nginx.addr.port(), "/", Some(&agent), &[]).await?;
    assert_eq!(direct.status, 200, "{direct:?}");
    let through = curl(&world, port, "/nginx", Some(&agent), &forged).await?;
    assert_eq!(through.status, 200, "{through:?}");
    let (direct, through) = (direct.body, through.body);
    for (header, variable) in [
        ("h_s_dn", "ssl_s_dn"),
        ("h_i_dn", "ssl_i_dn"),
        ("h_serial", "ssl_serial"),
        ("h_fingerprint", "ssl_fingerprint"),
        ("h_verify", "ssl_verify"),
        ("h_cert", "ssl_cert"),
    ] {
        let nginx_says = nginx_line(&direct, variable);
        assert!(!nginx_says.is_empty() && nginx_says != "(missing)", "nginx printed no {variable}: {direct}");
        assert_eq!(nginx_line(&through, header), nginx_says, "{header} vs nginx's {variable}:\n{through}\n{direct}");
    }
    assert_eq!(nginx_line(&through, "h_verify"), "SUCCESS");
    assert_eq!(nginx_line(&through, "h_cn"), "agent-7", "{through}");
    assert_eq!(nginx_line(&through, "h_user"), "agent-7", "ContextForge's PROXY_USER_HEADER: {through}");

    // ARCP reads the caller's key out of X-Client-Cert.
    let mut python = Command::new("python3");
    python.args(["-c", ARCP_PARSE, nginx_line(&through, "h_cert")]);
    let parsed = run(python, None).await?;
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let parsed = String::from_utf8_lossy(&parsed.stdout).into_owned();
    let spki = agent.metadata()?.spki_sha256;
    assert_eq!(parsed.lines().collect::<Vec<_>>(), [spki.as_str(), "agent-7"], "{through}");
    assert_eq!(nginx_line(&through, "h_spki"), spki);

    // Without a certificate: only the verify result, and still no forged copy.
    let anonymous = curl(&world, port, "/nginx", None, &forged).await?;
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    assert_eq!(nginx_line(&anonymous.body, "h_verify"), "NONE", "{}", anonymous.body);
    for header in ["h_user", "h_cert", "h_s_dn", "h_spki"] {
        assert_eq!(nginx_line(&anonymous.body, header), "", "{header}: {}", anonymous.body);
    }

    // Every header name the upstream got, in every spelling: one of each named, none forged.
    for client in [Some(&agent), None] {
        let seen = curl(&world, port, "/dump", client, &forged).await?;
        assert_eq!(seen.status, 200, "{seen:?}");
        let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&seen.body)?["headers"]
            .as_array()
            .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_ascii_lowercase)).collect())
            .unwrap_or_default();
        let folded = |name: &str| names.iter().filter(|n| n.replace('_', "-") == name).count();
        assert!(names.iter().all(|n| !n.contains('_')), "a forged spelling arrived: {names:?}");
        assert_eq!(folded("x-authenticated-user"), usize::from(client.is_some()), "{names:?}");
        assert_eq!(folded("x-client-cert"), usize::from(client.is_some()), "{names:?}");
        assert_eq!(folded("x-client-spki"), 0, "only the /nginx route names it, and no caller may send it: {names:?}");
        assert_eq!(folded("x-ssl-client-verify"), 1, "{names:?}");
        assert_eq!(folded("x-tenant"), 1, "other headers pass: {names:?}");
    }
    drop(host);

    // On a plain-HTTP listener a route's caller_headers are only removed: no caller is verified.
    let plain = world.config_raw(&format!(
        "[[routes]]\npath = \"/dump\"\nhandler = \"url-forward\"\ncaller_headers_preset = \"nginx\"\n\
         [routes.caller_headers]\n\"X-Authenticated-User\" = \"subject_cn\"\n\
         [routes.options]\nbaseUrl = \"https://localhost:{d}\"\nmtlsCertificate = \"edge\"\n\n\
         [[upstreams]]\nhosts = [\"localhost:{d}\"]\nca_bundle = \"pki/ca.pem\"\n",
        d = dump.addr().port(),
    ))?;
    let host = world.serve(&plain, Environment::Development).await?;
    let seen = host
        .get(
            "/dump",
            &[("x_authenticated_user", "root"), ("X-Client-Cert", "forged"), ("x-ssl-client-verify", "SUCCESS"), ("x-tenant", "kept")],
        )
        .await?;
    assert_eq!(seen.status, 200, "{}", seen.body);
    let names = seen.json()?["headers"].to_string().to_ascii_lowercase();
    assert!(!names.contains("authenticated") && !names.contains("x-client-cert") && !names.contains("verify"), "{names}");
    assert!(names.contains("x-tenant"), "{names}");
    Ok(())
}
