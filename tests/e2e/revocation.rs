//! Upstream revocation against real responders: `openssl ocsp` answers for an index of good
//! and revoked serials (and knows nothing of others), Python's http.server publishes CRLs,
//! and `openssl s_server` staples an OCSP response. The upstream is a real TLS server; a
//! refused connection must carry no request to it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use edgemtls_dev_upstream::EchoUpstream;
use edgemtls_host::Environment;
use edgemtls_host::pki::IssueOptions;

use crate::harness::*;

const CLIENT: &str = "revocation_client";
const CLIENT_CN: &str = "revocation-client";

/// A child process stopped when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits (at most 20 s) until something accepts connections on 127.0.0.1:`port`.
async fn listening(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{what} did not start listening on {port}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

fn have(program: &str) -> bool {
    let found = Command::new(program).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        crate::peers::missing_peer(&format!("{program} is not installed"));
    }
    found
}

/// A server certificate for localhost from the world's CA naming `ocsp` and `crl`, written as
/// `<stem>.pem` (leaf only) and returned as `(chain PEM, key PEM, serial as openssl prints it)`.
fn server_cert(world: &World, stem: &str, ocsp: Option<String>, crl: Option<String>) -> anyhow::Result<(String, String, String)> {
    let options = IssueOptions {
        common_name: "localhost".into(),
        server: true,
        sans: vec!["localhost".into(), "127.0.0.1".into()],
        ocsp_url: ocsp,
        crl_url: crl,
        ..Default::default()
    };
    let (chain, key) = world.ca.issue(&options)?;
    let leaf = edgemtls_host::pki::pem::certificates(chain.as_bytes())?.remove(0);
    let metadata = edgemtls_host::pki::inspect_leaf(Path::new(stem), &leaf)?;
    std::fs::write(world.path().join(format!("{stem}.pem")), &chain)?;
    std::fs::write(world.path().join(format!("{stem}.key")), &key)?;
    Ok((chain, key, metadata.serial.replace(':', "").to_uppercase()))
}

/// An `openssl ocsp` responder for the world's CA on a free port: `good` serials are valid,
/// `revoked` ones revoked; any other serial is unknown to it.
async fn responder(world: &World, port: u16, good: &[&str], revoked: &[&str]) -> anyhow::Result<Spawned> {
    let expiry = "351231235959Z";
    let mut index = String::new();
    for serial in good {
        index.push_str(&format!("V\t{expiry}\t\t{serial}\tunknown\t/CN=localhost\n"));
    }
    for serial in revoked {
        index.push_str(&format!("R\t{expiry}\t261101000000Z\t{serial}\tunknown\t/CN=localhost\n"));
    }
    std::fs::write(world.path().join("index.txt"), index)?;
    let mut child = Command::new("openssl")
        .args(["ocsp", "-index", "index.txt", "-port", &port.to_string(), "-rsigner", "pki/ca.pem", "-rkey", "pki/ca.key"])
        .args(["-CA", "pki/ca.pem", "-ndays", "1"])
        .current_dir(world.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Not a connect probe: `openssl ocsp` serves one connection at a time and waits forever
    // on one that closes without a request. It says when it listens.
    let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let spawned = Spawned(child);
    let (ready, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("waiting for OCSP client connections") {
                let _ = ready.send(());
            }
        }
    });
    said.recv_timeout(std::time::Duration::from_secs(20)).map_err(|_| anyhow::anyhow!("openssl ocsp did not start listening on {port}"))?;
    Ok(spawned)
}

/// A config routing the probe, trusting the world's CA for `port` with `entry` added.
fn config(world: &World, port: u16, entry: &str) -> anyhow::Result<std::path::PathBuf> {
    world.config_raw(&format!(
        "{routes}\n[[upstreams]]\nhosts = [\"localhost:{port}\"]\nca_bundle = \"pki/ca.pem\"\n{entry}\n",
        routes = probe_routes("https://unused.invalid/")
    ))
}

/// The probe's fetch was refused for `reason` and the upstream served no request for it.
fn assert_refused(reply: &Reply, upstream: &EchoUpstream, requests_before: usize, reason: &str, says: &str, case: &str) {
    assert_eq!(reply.status, 502, "{case}: {}", reply.body);
    let problem = reply.json().unwrap();
    assert_eq!(problem["reason"], reason, "{case}: {}", reply.body);
    assert!(reply.body.contains(says), "{case}: expected '{says}' in {}", reply.body);
    assert_eq!(upstream.log().requests().len(), requests_before, "{case}: a refused connection must carry no request");
}

fn assert_served(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 200, "{case}: {}", reply.body);
    assert_eq!(reply.json().unwrap()["client_cn"], CLIENT_CN, "{case}: {}", reply.body);
}

#[tokio::test]
async fn ocsp_answers_decide_good_revoked_and_unknown_with_soft_fail_per_setting() -> anyhow::Result<()> {
    if !have("openssl") {
        return Ok(());
    }
    let world = World::new()?;
    world.add_cert(CLIENT, CLIENT_CN, &all_envs())?;
    let ocsp_port = free_port()?;
    let ocsp_url = Some(format!("http://127.0.0.1:{ocsp_port}"));
    let (good_chain, good_key, good_serial) = server_cert(&world, "good", ocsp_url.clone(), None)?;
    let (revoked_chain, revoked_key, revoked_serial) = server_cert(&world, "revoked", ocsp_url.clone(), None)?;
    let (unknown_chain, unknown_key, _) = server_cert(&world, "unknown", ocsp_url, None)?;
    let _responder = responder(&world, ocsp_port, &[&good_serial], &[&revoked_serial]).await?;

    let cases = [
        ("good", &good_chain, &good_key, "revocation = \"ocsp\"", Ok(())),
        ("revoked", &revoked_chain, &revoked_key, "revocation = \"ocsp\"", Err(("upstream-certificate-revoked", "revoked on 2026-11-01"))),
        (
            "unknown, hard fail",
            &unknown_chain,
            &unknown_key,
            "revocation = \"ocsp\"",
            Err(("upstream-revocation-unknown", "does not know the certificate")),
        ),
        ("unknown, soft fail", &unknown_chain, &unknown_key, "revocation = \"ocsp\"\nrevocation_soft_fail = true", Ok(())),
        // "both" takes OCSP's answer when there is one.
        ("revoked, both", &revoked_chain, &revoked_key, "revocation = \"both\"", Err(("upstream-certificate-revoked", "OCSP responder"))),
    ];
    for (case, chain, key, entry, expected) in cases {
        let upstream = world.upstream_with(chain, key, true).await?;
        let port = upstream.addr().port();
        let host = world.serve(&config(&world, port, entry)?, Environment::Production).await?;
        let before = upstream.log().requests().len();
        let reply = host.probe(&upstream_url(&upstream, "/ocsp"), Some(CLIENT)).await?;
        match expected {
            Ok(()) => assert_served(&reply, case),
            Err((reason, says)) => assert_refused(&reply, &upstream, before, reason, says, case),
        }
    }

    // Off (the default) asks no one: the revoked certificate is served.
    let upstream = world.upstream_with(&revoked_chain, &revoked_key, true).await?;
    let host = world.serve(&config(&world, upstream.addr().port(), "")?, Environment::Production).await?;
    assert_served(&host.probe(&upstream_url(&upstream, "/off"), Some(CLIENT)).await?, "revocation off");

    // Every decision is counted.
    let metrics = edgemtls_host::metrics::Metrics::new().encode();
    for result in ["good", "revoked", "unknown_soft_fail", "failed"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("edgemtls_upstream_revocation_checks_total{{result=\"{result}\"}}"))),
            "no {result} count in {metrics}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_republished_crl_is_picked_up_within_its_ttl_without_a_reload() -> anyhow::Result<()> {
    if !have("python3") {
        return Ok(());
    }
    let world = World::new()?;
    world.add_cert(CLIENT, CLIENT_CN, &all_envs())?;
    let published = world.path().join("published");
    std::fs::create_dir(&published)?;
    let crl_port = free_port()?;
    let crl_url = format!("http://127.0.0.1:{crl_port}/ca.crl");
    let (chain, key, serial) = server_cert(&world, "server", None, Some(crl_url.clone()))?;
    let colon_serial = serial.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_lowercase()).collect::<Vec<_>>().join(":");
    std::fs::write(published.join("ca.crl"), world.ca.revocation_list(&[])?)?;
    let _server = Spawned(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &crl_port.to_string()])
            .current_dir(&published)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    listening(crl_port, "python3 -m http.server").await?;

    let upstream = world.upstream_with(&chain, &key, true).await?;
    let entry = "revocation = \"crl\"\ncrl_cache_ttl_s = 1";
    let host = world.serve(&config(&world, upstream.addr().port(), entry)?, Environment::Production).await?;
    assert_served(&host.probe(&upstream_url(&upstream, "/before"), Some(CLIENT)).await?, "not on the CRL");

    // The CA revokes it and republishes; the host is not reloaded. Within the TTL (1 s) its
    // pool is renewed, the new connection checked against the new CRL, and refused.
    std::fs::write(published.join("ca.crl"), world.ca.revocation_list(&[&colon_serial])?)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        let before = upstream.log().requests().len();
        let reply = host.probe(&upstream_url(&upstream, "/after"), Some(CLIENT)).await?;
        if reply.status == 502 {
            break (reply, before);
        }
        assert_served(&reply, "before the new CRL is picked up");
        anyhow::ensure!(std::time::Instant::now() < deadline, "the republished CRL was not picked up: {}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_refused(&refused.0, &upstream, refused.1, "upstream-certificate-revoked", &crl_url, "republished CRL");

    // A CRL signed by someone else proves nothing: status unknown, refused without soft-fail.
    let impostor = edgemtls_host::pki::DevCa::generate("impostor CA", 30)?;
    std::fs::write(published.join("ca.crl"), impostor.revocation_list(&[])?)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let before = upstream.log().requests().len();
        let reply = host.probe(&upstream_url(&upstream, "/impostor"), Some(CLIENT)).await?;
        if reply.body.contains("not from its issuer") {
            assert_refused(&reply, &upstream, before, "upstream-revocation-unknown", "not from its issuer", "impostor CRL");
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the impostor CRL was not picked up: {}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_stapled_ocsp_response_is_honoured_when_no_responder_answers() -> anyhow::Result<()> {
    if !have("openssl") {
        return Ok(());
    }
    let world = World::new()?;
    world.add_cert(CLIENT, CLIENT_CN, &all_envs())?;
    // The certificate names a responder where nothing listens: only the staple can answer.
    let dead = free_port()?;
    let (_, _, serial) = server_cert(&world, "stapled", Some(format!("http://127.0.0.1:{dead}")), None)?;
    let expiry = "351231235959Z";
    let good = format!("V\t{expiry}\t\t{serial}\tunknown\t/CN=localhost\n");
    let revoked = format!("R\t{expiry}\t261101000000Z\t{serial}\tunknown\t/CN=localhost\n");
    let path = world.path();
    for (case, index, expected) in [("good staple", &good, 200), ("revoked staple", &revoked, 502)] {
        std::fs::write(path.join("index.txt"), index)?;
        let made = Command::new("openssl")
            .args(["ocsp", "-index", "index.txt", "-rsigner", "pki/ca.pem", "-rkey", "pki/ca.key", "-CA", "pki/ca.pem"])
            .args(["-issuer", "pki/ca.pem", "-cert", "stapled.pem", "-respout", "staple.der", "-ndays", "1"])
            .current_dir(path)
            .output()?;
        anyhow::ensure!(made.status.success(), "openssl ocsp: {}", String::from_utf8_lossy(&made.stderr));
        let port = free_port()?;
        let _server = Spawned(
            Command::new("openssl")
                .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-cert", "stapled.pem", "-key", "stapled.key"])
                .args(["-status_file", "staple.der", "-www", "-quiet"])
                .current_dir(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        listening(port, "openssl s_server").await?;
        let host = world.serve(&config(&world, port, "revocation = \"ocsp\"")?, Environment::Production).await?;
        let reply = host.probe(&format!("https://localhost:{port}/"), Some(CLIENT)).await?;
        assert_eq!(reply.status, expected, "{case}: {}", reply.body);
        if expected == 502 {
            assert!(reply.body.contains("stapled"), "{case}: {}", reply.body);
        }
    }
    Ok(())
}

// Callers of the TLS listener, with `[tls] revocation`: the same questions asked of the issuer
// of the certificate a caller (curl, `openssl s_client`, Python) presents.

use crate::inbound::{Answer, CALLER_ECHO, ClientFiles, PYTHON_KEEPALIVE_CLIENT, curl, s_client};

/// A client certificate from the world's CA (the listener's `client_ca`) naming `ocsp` and
/// `crl`, written as `<stem>.pem` (leaf and CA) and `<stem>.key`, with its serial as
/// `openssl ocsp`'s index writes it.
fn caller_cert(world: &World, stem: &str, ocsp: Option<String>, crl: Option<String>) -> anyhow::Result<(ClientFiles, String)> {
    let options = IssueOptions { common_name: stem.into(), ocsp_url: ocsp, crl_url: crl, ..Default::default() };
    let (chain, key) = world.ca.issue(&options)?;
    let files = ClientFiles { cert: world.path().join(format!("{stem}.pem")), key: world.path().join(format!("{stem}.key")) };
    std::fs::write(&files.cert, chain)?;
    std::fs::write(&files.key, key)?;
    let serial = files.metadata()?.serial.replace(':', "").to_uppercase();
    Ok((files, serial))
}

/// A listener requiring client certificates from the world's CA, with `[tls]` lines `extra`,
/// and the caller-echo guest on `/secure`.
fn caller_config(world: &World, extra: &str) -> anyhow::Result<std::path::PathBuf> {
    server_cert(world, "listener", None, None)?;
    world.config_raw(&format!(
        "[tls]\ncert = \"listener.pem\"\nkey = \"listener.key\"\nclient_auth = \"required\"\nclient_ca = [\"pki/ca.pem\"]\n{extra}\n\
         [[routes]]\npath = \"/secure\"\nhandler = \"{CALLER_ECHO}\"\n"
    ))
}

fn assert_caller_served(answer: &Answer, cn: &str, case: &str) {
    assert_eq!(answer.status, 200, "{case}: {answer:?}");
    assert_eq!(answer.line("sdk.verified"), Some("true"), "{case}: {}", answer.body);
    assert!(answer.line("sdk.subject").is_some_and(|s| s.contains(&format!("CN={cn}"))), "{case}: {}", answer.body);
}

fn assert_caller_refused(answer: &Answer, reason: &str, says: &str, case: &str) {
    assert_eq!(answer.status, 401, "{case}: {answer:?}");
    assert_eq!(answer.problem_type(), format!("urn:edgemtls:problem:{reason}"), "{case}");
    assert!(answer.body.contains(says), "{case}: expected '{says}' in {}", answer.body);
}

/// What the host logs on this test's thread (a `#[tokio::test]` runs the host's tasks there).
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The caller revocation counter's value for `result`, from the process-wide family.
fn caller_checks(result: &str) -> u64 {
    let metrics = edgemtls_host::metrics::Metrics::new().encode();
    let prefix = format!("edgemtls_inbound_caller_revocation_checks_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn callers_are_asked_of_their_ocsp_responder_good_revoked_unknown_and_down_per_soft_fail() -> anyhow::Result<()> {
    if !have("openssl") || !have("curl") {
        return Ok(());
    }
    let world = World::new()?;
    let ocsp_port = free_port()?;
    let ocsp_url = Some(format!("http://127.0.0.1:{ocsp_port}"));
    let (good, good_serial) = caller_cert(&world, "good-caller", ocsp_url.clone(), None)?;
    let (revoked, revoked_serial) = caller_cert(&world, "revoked-caller", ocsp_url.clone(), None)?;
    let (stranger, _) = caller_cert(&world, "stranger-caller", ocsp_url, None)?;
    // Its responder is a port where nothing listens.
    let dead = free_port()?;
    let (orphan, _) = caller_cert(&world, "orphan-caller", Some(format!("http://127.0.0.1:{dead}")), None)?;
    let _responder = responder(&world, ocsp_port, &[&good_serial], &[&revoked_serial]).await?;

    let config = caller_config(&world, "revocation = \"ocsp\"\nrevocation_timeout_ms = 1000")?;
    let host = world.serve(&config, Environment::Production).await?;
    let port = host.addr.port();
    assert_caller_served(&curl(&world, port, "/secure", Some(&good), &["--http2"]).await?, "good-caller", "good, h2");
    assert_caller_served(&curl(&world, port, "/secure", Some(&good), &["--http1.1"]).await?, "good-caller", "good, http/1.1 (cached)");
    let refused = curl(&world, port, "/secure", Some(&revoked), &[]).await?;
    assert_caller_refused(&refused, "client-certificate-revoked", "revoked by its issuer", "revoked (curl)");
    let refused = s_client(&world, port, "/secure", &revoked).await?;
    assert_caller_refused(&refused, "client-certificate-revoked", "revoked by its issuer", "revoked (openssl s_client)");
    let unknown = curl(&world, port, "/secure", Some(&stranger), &[]).await?;
    assert_caller_refused(&unknown, "client-certificate-revocation-unknown", "does not know the certificate", "unknown to the responder");
    let down = curl(&world, port, "/secure", Some(&orphan), &[]).await?;
    assert_caller_refused(&down, "client-certificate-revocation-unknown", &format!("127.0.0.1:{dead}"), "responder down");
    assert!(down.body.contains("revocation_soft_fail"), "the refusal names the setting that would admit it: {}", down.body);

    // With soft-fail, the caller whose responder is down is admitted, logged and counted; a
    // revoked one is still refused.
    let log = LogCapture::default();
    let writer = log.clone();
    let _logging = tracing_subscriber::util::SubscriberInitExt::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let before = caller_checks("unknown_soft_fail");
    let config = caller_config(&world, "revocation = \"ocsp\"\nrevocation_timeout_ms = 1000\nrevocation_soft_fail = true")?;
    let host = world.serve(&config, Environment::Production).await?;
    let port = host.addr.port();
    assert_caller_served(&curl(&world, port, "/secure", Some(&orphan), &[]).await?, "orphan-caller", "responder down, soft-fail");
    assert_eq!(caller_checks("unknown_soft_fail"), before + 1, "the soft-failed admission is counted");
    let logged = log.text();
    assert!(
        logged.lines().any(|line| line.contains("caller certificate revocation: status unknown (soft-fail)")
            && line.contains("CN=orphan-caller")
            && line.contains(&format!("127.0.0.1:{dead}"))),
        "the soft-failed admission is not logged with the caller and the reason: {logged}"
    );
    let refused = curl(&world, port, "/secure", Some(&revoked), &[]).await?;
    assert_caller_refused(&refused, "client-certificate-revoked", "revoked by its issuer", "revoked, soft-fail");

    // Off (the default) asks no one.
    let host = world.serve(&caller_config(&world, "")?, Environment::Production).await?;
    assert_caller_served(&curl(&world, host.addr.port(), "/secure", Some(&revoked), &[]).await?, "revoked-caller", "revocation off");

    for result in ["good", "revoked", "failed", "unknown_soft_fail"] {
        assert!(caller_checks(result) > 0, "no {result} count");
    }
    Ok(())
}

#[tokio::test]
async fn callers_are_checked_against_the_crl_they_name_and_a_republished_one_refuses_an_open_connection() -> anyhow::Result<()> {
    if !have("python3") || !have("curl") {
        return Ok(());
    }
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let world = World::new()?;
    let published = world.path().join("published");
    std::fs::create_dir(&published)?;
    let crl_port = free_port()?;
    let crl_url = format!("http://127.0.0.1:{crl_port}/ca.crl");
    let (good, _) = caller_cert(&world, "good-caller", None, Some(crl_url.clone()))?;
    let (revoked, _) = caller_cert(&world, "revoked-caller", None, Some(crl_url.clone()))?;
    let colon = |files: &ClientFiles| -> anyhow::Result<String> { Ok(files.metadata()?.serial) };
    std::fs::write(published.join("ca.crl"), world.ca.revocation_list(&[&colon(&revoked)?])?)?;
    let _server = Spawned(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &crl_port.to_string()])
            .current_dir(&published)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    listening(crl_port, "python3 -m http.server").await?;

    let config = caller_config(&world, "revocation = \"crl\"\ncrl_cache_ttl_s = 1")?;
    let host = world.serve(&config, Environment::Production).await?;
    let port = host.addr.port();
    assert_caller_served(&curl(&world, port, "/secure", Some(&good), &[]).await?, "good-caller", "not on the CRL");
    let refused = curl(&world, port, "/secure", Some(&revoked), &[]).await?;
    assert_caller_refused(&refused, "client-certificate-revoked", "revoked by its issuer", "on the CRL");

    // One keep-alive connection of the good caller; the CA then revokes it and republishes.
    // Once the CRL cache TTL (1 s) has passed, its next request on the same connection asks
    // again and is refused, without a reload.
    let mut client = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_KEEPALIVE_CLIENT])
        .arg(world.path().join("pki/ca.pem"))
        .arg(&good.cert)
        .arg(&good.key)
        .arg(port.to_string())
        .arg("/secure")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(client.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the client printed nothing"))?;
    assert!(first.starts_with("200 "), "{first}");
    std::fs::write(published.join("ca.crl"), world.ca.revocation_list(&[&colon(&revoked)?, &colon(&good)?])?)?;
    client.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?.write_all(b"go\n").await?;
    let mut last = first.clone();
    while let Some(line) = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await?? {
        last = line;
    }
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.first(), Some(&"401"), "never refused on the open connection: {last}");
    assert_eq!(fields.get(1).copied(), first.split(' ').nth(1), "the client had to reconnect: {first} then {last}");
    assert_eq!(fields.get(2), Some(&"urn:edgemtls:problem:client-certificate-revoked"), "{last}");

    // The CRL server goes away: a caller whose CRL was never fetched cannot be judged.
    drop(_server);
    let (late, _) = caller_cert(&world, "late-caller", None, Some(format!("http://127.0.0.1:{crl_port}/other.crl")))?;
    let down = curl(&world, port, "/secure", Some(&late), &[]).await?;
    assert_caller_refused(&down, "client-certificate-revocation-unknown", "no CRL could be fetched", "CRL server down");
    Ok(())
}
