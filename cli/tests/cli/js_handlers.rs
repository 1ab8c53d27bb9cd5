//! A TypeScript handler, built with `edgemtls build` and served by `edgemtls serve`, against
//! `edgemtls dev-upstream` (which requires client certificates and reports each one's CN):
//! names, no name, the five certificate errors as their own types, a Zuplo-style handler per
//! stage, 200 interleaved requests, and 10 MiB each way.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use time::{Duration, OffsetDateTime};

use super::common::*;

/// Where `edgemtls build` keeps its npm packages for every test run: installed once.
fn toolchain() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("js-toolchain")
}

/// Waits for a host serving a JavaScript component: its start compiles 12 MiB of WebAssembly.
fn wait_for_js(port: u16) -> Result<()> {
    wait_for_addr_within(std::net::SocketAddr::from(([127, 0, 0, 1], port)), std::time::Duration::from_secs(300))
}

fn node_is_installed() -> bool {
    std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Builds the test handler into the sandbox.
/// One compile cache for every test of the run (12 MiB of SpiderMonkey compiled once).
fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compiled")
}

fn build_probe(sandbox: &Sandbox) -> Result<PathBuf> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/probe.ts");
    let output = sandbox.path("probe.wasm");
    let mut command = sandbox.command(["build", &text(&source), "-o", &text(&output)]);
    // The cache serve uses below: build compiles the component into it, so serve loads it.
    command.env("EDGEMTLS_JS_TOOLCHAIN", toolchain()).env("EDGEMTLS_COMPILE_CACHE", compile_cache());
    let built = expect_success(command)?;
    ensure!(built.contains("built") && built.contains("compiled it for serve"), "{built}");
    Ok(output)
}

fn write_config(sandbox: &Sandbox, upstream_port: u16) -> Result<PathBuf> {
    let config = sandbox.path("edgemtls.toml");
    std::fs::write(
        &config,
        format!(
            r#"[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"

[environments.preview.vars]
BACKEND_MTLS_CERT = "billing_preview"

[[routes]]
path = "/js"
handler = "probe.wasm"
max_requests_per_instance = 1000
[routes.options]
url = "https://localhost:{upstream_port}/"

[[upstreams]]
hosts = ["localhost:{upstream_port}"]
ca_bundle = "pki/ca.pem"
"#
        ),
    )?;
    Ok(config)
}

/// Stores a certificate whose validity is outside today (which `cert create` refuses), the
/// way one ends up in a store: created in time, then time passes.
fn add_out_of_date(sandbox: &Sandbox, name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<()> {
    use edgemtls_host::pki::{ImportRequest, inspect_leaf, load_identity};
    use edgemtls_host::store::{NewCertificate, Store, StoreLocation};
    let ca = TestCa::new("dated ca")?;
    let leaf = ca.sign(&client_params(name, not_before, not_after)?, rcgen::KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(sandbox, name)?;
    let identity = load_identity(ImportRequest { cert_path: &cert, key_path: Some(&key), password: None })?;
    let metadata = inspect_leaf(&cert, &identity.chain[0])?;
    let mut store = Store::open(&StoreLocation::Directory(sandbox.store.clone()))?;
    store.create(NewCertificate { name: name.into(), environments: vec![edgemtls_host::Environment::Production], identity, metadata })?;
    Ok(())
}

/// What [`http_post`] got back: status, headers (names lower-cased) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A POST of `body` to 127.0.0.1:`port`.
fn http_post(port: u16, path: &str, body: &[u8]) -> Result<Answer> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let head = format!("POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("no end of the response head")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).context("no status line")?;
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    Ok(Answer { status, headers, body: response[split + 4..].to_vec() })
}

fn json_at(port: u16, path: &str) -> Result<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, path)?;
    let value = serde_json::from_str(&body).with_context(|| format!("{path} answered {status}: {body}"))?;
    Ok((status, value))
}

/// Serves `config` in `env`; returns the process, its port, its admin port and its log.
fn serve(sandbox: &Sandbox, config: &std::path::Path, env: &str) -> Result<(Running, u16, u16, PathBuf)> {
    let port = free_port()?;
    let admin = free_port()?;
    let log = sandbox.path(&format!("serve-{env}.log"));
    let process = sandbox
        .command([
            "serve",
            "--config",
            &text(config),
            "--env",
            env,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        // Compiled once for every test of the run (12 MiB of SpiderMonkey).
        .env("EDGEMTLS_COMPILE_CACHE", compile_cache())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let process = Running(process);
    wait_for_js(port)?;
    Ok((process, port, admin, log))
}

#[test]
fn a_typescript_handler_presents_exactly_the_certificate_it_names() -> Result<()> {
    if !node_is_installed() {
        crate::cli::peers::missing_peer("Node.js is not installed (edgemtls build needs it to build JavaScript handlers)");
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["js-prod", "js-prod-2", "js-preview"])?;
    for (name, cn, env) in [
        ("billing_prod", "js-prod", "production"),
        ("billing_other", "js-prod-2", "production"),
        ("billing_preview", "js-preview", "preview"),
        ("switched_off", "js-prod", "production"),
    ] {
        sandbox.ok(sandbox.create_args(
            name,
            Path::new(&format!("{pki}/{cn}.pem")),
            Some(Path::new(&format!("{pki}/{cn}.key"))),
            &["--env", env],
        ))?;
    }
    sandbox.ok(["cert", "disable", "switched_off"])?;
    let now = OffsetDateTime::now_utc();
    add_out_of_date(&sandbox, "lapsed", now - Duration::days(30), now - Duration::days(1))?;
    add_out_of_date(&sandbox, "future", now + Duration::days(1), now + Duration::days(30))?;
    build_probe(&sandbox)?;
    let config = write_config(&sandbox, upstream_port)?;
    let (_production, port, admin, log) = serve(&sandbox, &config, "production")?;
    let (_preview, preview_port, _, _) = serve(&sandbox, &config, "preview")?;

    // The name the handler passes is the certificate the upstream sees.
    let (status, seen) = json_at(port, "/js/named?cert=billing_prod")?;
    ensure!(status == 200 && seen["client_cn"] == "js-prod", "{status} {seen}");
    // No name: no certificate. This upstream requires one, so the request fails (how TLS 1.3
    // reports the refusal, an alert or a closed connection, depends on timing), and the
    // host's audit line shows none was presented.
    let (status, body) = http_get(port, "/js/none")?;
    ensure!(status == 500 && body.contains("NetworkError"), "{status} {body}");
    let logged = std::fs::read_to_string(&log)?;
    let failed: Vec<&str> = logged.lines().filter(|l| l.contains("outbound request failed")).collect();
    ensure!(!failed.is_empty(), "the request without a certificate failed: {logged}");
    ensure!(failed.iter().all(|l| !l.contains("certificate=\"") && !l.contains("certificate_id")), "no certificate presented: {logged}");

    // Each certificate failure reaches JavaScript as its own error type.
    for (name, type_name, kind) in [
        ("nope", "CertificateNotFoundError", "not-found"),
        ("switched_off", "CertificateDisabledError", "disabled"),
        ("billing_preview", "CertificateNotInEnvironmentError", "not-in-environment"),
        ("lapsed", "CertificateExpiredError", "expired"),
        ("future", "CertificateNotYetValidError", "not-yet-valid"),
    ] {
        let (_, error) = json_at(port, &format!("/js/error?cert={name}"))?;
        ensure!(error["error"] == type_name && error["certificate_error"] == true, "{name}: {error}");
        ensure!(error["instance_of"] == serde_json::json!([type_name]), "{name}: exactly one type: {error}");
        ensure!(error["kind"] == kind && error["certificate"] == name, "{name}: {error}");
        // Let through, the SDK answers 502 and says which.
        let (status, problem) = json_at(port, &format!("/js/unhandled?cert={name}"))?;
        // The same problem shape as the host and the Rust SDK write (tests/e2e/failures.rs).
        ensure!(
            status == 502
                && problem["type"] == format!("urn:edgemtls:problem:certificate-{kind}")
                && problem["reason"] == format!("certificate-{kind}")
                && problem["title"] == "Client certificate cannot be used"
                && problem["status"] == 502
                && problem["detail"].as_str().is_some_and(|d| d.contains(name))
                && problem["certificate"] == name,
            "{name}: {status} {problem}"
        );
    }

    // Zuplo's way: the global fetch, the name from the stage's variables, per stage.
    let (_, production) = json_at(port, "/js/zuplo")?;
    ensure!(production["client_cn"] == "js-prod", "{production}");
    let (_, preview) = json_at(preview_port, "/js/zuplo")?;
    ensure!(preview["client_cn"] == "js-preview", "{preview}");
    let (_, variables) = json_at(preview_port, "/js/env")?;
    ensure!(variables["sdk"] == "billing_preview" && variables["cloudflare"] == "billing_preview", "{variables}");

    // 200 requests alternating two names and none keep identities apart, on instances that
    // serve request after request (the SDK's own incoming handler makes that possible).
    for i in 0..200 {
        let (path, expected) = match i % 3 {
            0 => ("/js/named?cert=billing_prod", Some("js-prod")),
            1 => ("/js/named?cert=billing_other", Some("js-prod-2")),
            _ => ("/js/none", None),
        };
        let (status, body) = http_get(port, path)?;
        match expected {
            Some(cn) => ensure!(status == 200 && body.contains(&format!("\"client_cn\":\"{cn}\"")), "request {i}: {status} {body}"),
            None => ensure!(status == 500, "request {i} named nothing and must not pass: {status} {body}"),
        }
    }
    let (_, metrics) = http_get(admin, "/metrics")?;
    let created: f64 = metrics
        .lines()
        .find(|l| l.starts_with("edgemtls_instances_created_total{route=\"/js\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .context("instances_created for /js")?;
    ensure!(created <= 20.0, "instances are reused: {created} created for over 230 requests");

    // 10 MiB each way, streamed.
    const SIZE: usize = 10 * 1024 * 1024;
    let Answer { status, headers, body } = http_post(port, &format!("/js/big?bytes={SIZE}&cert=billing_prod"), &vec![b'q'; SIZE])?;
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    ensure!(status == 200, "{status}");
    ensure!(header("x-upstream-received") == SIZE.to_string(), "the upstream got the whole body: {headers:?}");
    ensure!(header("x-upstream-cn") == "js-prod", "{headers:?}");
    ensure!(body.len() == SIZE && body.iter().all(|b| *b == b'x'), "the caller got {} bytes", body.len());
    Ok(())
}

#[test]
fn edgemtls_new_makes_a_typescript_handler_that_builds_and_serves() -> Result<()> {
    if !node_is_installed() {
        crate::cli::peers::missing_peer("Node.js is not installed (edgemtls build needs it to build JavaScript handlers)");
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["billing-dev"])?;
    sandbox.ok(sandbox.create_args(
        "billing_dev",
        Path::new(&format!("{pki}/billing-dev.pem")),
        Some(Path::new(&format!("{pki}/billing-dev.key"))),
        &[],
    ))?;
    let created = sandbox.ok(["new", "hello-ts", "--lang", "ts"])?;
    ensure!(created.contains("edgemtls build handler.ts -o handler.wasm"), "{created}");
    sandbox.fails(["new", "hello-ts"], "already exists")?;
    let project = sandbox.path("hello-ts");
    ensure!(project.join("types/edgemtls/index.d.ts").is_file() && project.join("tsconfig.json").is_file());
    // Point the scaffold at this test's upstream, as its README tells a user to.
    let config = std::fs::read_to_string(project.join("edgemtls.toml"))?
        .replace("https://localhost:8443/", &format!("https://localhost:{upstream_port}/"))
        .replace("# [[upstreams]]", "[[upstreams]]")
        .replace("# hosts = [\"localhost:8443\"]", &format!("hosts = [\"localhost:{upstream_port}\"]"))
        .replace("# ca_bundle = \"pki/ca.pem\"", &format!("ca_bundle = \"{pki}/ca.pem\""));
    let port = free_port()?;
    let config = config.replace("listen = \"127.0.0.1:8080\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(project.join("edgemtls.toml"), config)?;
    let mut build = sandbox.command(["build", "handler.ts", "-o", "handler.wasm"]);
    build.current_dir(&project).env("EDGEMTLS_JS_TOOLCHAIN", toolchain());
    expect_success(build)?;
    let process = sandbox
        .command(["serve", "--config", "edgemtls.toml", "--env", "development"])
        .current_dir(&project)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _serve = Running(process);
    wait_for_js(port)?;
    let (status, body) = http_get(port, "/hello")?;
    ensure!(status == 200 && body.contains("\"client_cn\":\"billing-dev\""), "{status} {body}");
    Ok(())
}

#[test]
fn the_javascript_sdk_imports_the_hosts_next_request_interface() -> Result<()> {
    // guest-sdk/js/wit/deps is generated from wit/ (WASI at the engine's 0.2.10): a change to
    // the host's interface that is not carried over fails here, not in a user's build.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/js/wit/make-deps.py");
    let output = std::process::Command::new("python3").arg(&script).arg("--check").output()?;
    ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// An nginx upstream that requires nothing but reports the client certificate it saw
/// (`x-client-dn`, empty for none), serving `/file` (the bytes of `file`, with two
/// `set-cookie` headers) and `/json`. Returns the process and its port.
fn nginx_upstream(sandbox: &Sandbox, pki: &str, file: &std::path::Path) -> Result<(Running, u16)> {
    let port = free_port()?;
    let dir = sandbox.path("nginx");
    std::fs::create_dir_all(dir.join("logs"))?;
    let dir = text(&dir);
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].iter().map(|k| format!("{k}_temp_path {dir}/{k}; ")).collect();
    let config = format!(
        r#"daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; {temps}
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {pki}/localhost.pem; ssl_certificate_key {pki}/localhost.key;
    ssl_client_certificate {pki}/ca.pem; ssl_verify_client optional;
    location = /file {{ alias {file}; default_type application/octet-stream;
      add_header x-client-dn "$ssl_client_s_dn" always; add_header set-cookie "a=1; Path=/" always; add_header set-cookie "b=2; Path=/" always; }}
    location = /json {{ default_type application/json; add_header x-client-dn "$ssl_client_s_dn" always; return 200 '{{"dn":"$ssl_client_s_dn"}}'; }}
  }}
}}
"#,
        file = text(file),
    );
    let path = sandbox.write("nginx.conf", config)?;
    let process = std::process::Command::new("nginx")
        .args(["-c", &text(&path), "-p", &dir])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let process = Running(process);
    wait_for(port)?;
    Ok((process, port))
}

#[test]
fn a_javascript_handler_passes_answers_on_exactly_and_reused_instances_present_only_their_own_certificate() -> Result<()> {
    if !node_is_installed() {
        crate::cli::peers::missing_peer("Node.js is not installed (edgemtls build needs it to build JavaScript handlers)");
        return Ok(());
    }
    if std::process::Command::new("nginx").arg("-v").stderr(Stdio::null()).status().is_err() {
        crate::cli::peers::missing_peer("nginx is not installed (the upstream of this test)");
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let pki = text(&sandbox.path("pki"));
    sandbox.ok(["pki", "init", "--out", &pki])?;
    for cn in ["js-one", "js-two"] {
        sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", cn, "--out", &pki])?;
    }
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", &pki])?;
    for (name, cn) in [("one", "js-one"), ("two", "js-two")] {
        sandbox.ok(sandbox.create_args(
            name,
            Path::new(&format!("{pki}/{cn}.pem")),
            Some(Path::new(&format!("{pki}/{cn}.key"))),
            &["--env", "production"],
        ))?;
    }
    // 1 MiB that no two offsets repeat the same way: a byte out of place shows.
    let bytes: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = sandbox.write("answer.bin", &bytes)?;
    let (_nginx, nginx_port) = nginx_upstream(&sandbox, &pki, &file)?;
    build_probe(&sandbox)?;
    let config = sandbox.path("edgemtls.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[routes]]
path = "/js"
handler = "probe.wasm"
allowed_outbound_hosts = ["*"]
[routes.options]
url = "https://localhost:{nginx_port}"

[[upstreams]]
hosts = ["localhost:{nginx_port}"]
ca_bundle = "pki/ca.pem"
"#
        ),
    )?;
    let (_serve, port, admin, _log) = serve(&sandbox, &config, "production")?;
    let get = |path: &str| -> Result<Answer> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("no end of the response head")?;
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).context("no status line")?;
        let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
        Ok(Answer { status, headers, body: response[split + 4..].to_vec() })
    };
    let all =
        |answer: &Answer, name: &str| -> Vec<String> { answer.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect() };

    // Returned as fetched, and rewrapped with a header added: the exact bytes, the status,
    // both cookies, and the certificate the upstream saw.
    for (path, cn) in [("/js/pass?path=/file&cert=one", "js-one"), ("/js/rewrap?path=/file&cert=two", "js-two")] {
        let answer = get(path)?;
        ensure!(answer.status == 200, "{path}: {}", answer.status);
        ensure!(answer.body == bytes, "{path}: the caller got {} bytes, not the upstream's 1 MiB as they were", answer.body.len());
        ensure!(all(&answer, "set-cookie") == ["a=1; Path=/", "b=2; Path=/"], "{path}: {:?}", answer.headers);
        ensure!(all(&answer, "x-client-dn") == [format!("O=edgemtls development,CN={cn}")], "{path}: {:?}", answer.headers);
        ensure!(all(&answer, "connection").iter().all(|v| v == "close"), "{path}: no upstream hop-by-hop header: {:?}", answer.headers);
    }
    ensure!(all(&get("/js/rewrap?path=/file&cert=one")?, "x-rewrapped") == ["yes"]);

    // A handler that reads and changes the body.
    let answer = get("/js/json?path=/json&cert=one")?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body)?;
    ensure!(
        answer.status == 200 && value == serde_json::json!({ "dn": "O=edgemtls development,CN=js-one", "changed": true }),
        "{} {value}",
        answer.status
    );

    // Bodies the handler makes: held (one host call, the length the host's own), streamed
    // (written chunk by chunk) and none; status and repeated headers as the handler set them.
    let held = get("/js/held")?;
    ensure!(held.status == 201 && held.body == "held \u{2713}\n".as_bytes(), "{} {:?}", held.status, held.body);
    ensure!(all(&held, "set-cookie") == ["a=1; Path=/", "b=2; Path=/"] && all(&held, "x-kind") == ["held"], "{:?}", held.headers);
    ensure!(all(&held, "content-length") == [held.body.len().to_string()], "{:?}", held.headers);
    let streamed = get("/js/streamed")?;
    ensure!(streamed.status == 202 && streamed.body == b"one,two,three", "{} {:?}", streamed.status, streamed.body);
    ensure!(all(&streamed, "x-kind") == ["streamed"], "{:?}", streamed.headers);
    let empty = get("/js/empty")?;
    ensure!(empty.status == 204 && empty.body.is_empty() && all(&empty, "x-kind") == ["empty"], "{} {:?}", empty.status, empty.headers);

    // Reused instances: each request presents its own certificate, or none, never the one
    // before it; and what the handler keeps in a global outlives the request.
    for i in 0..200 {
        let (path, expected) = match i % 3 {
            0 => ("/js/pass?path=/json&cert=one", "O=edgemtls development,CN=js-one"),
            1 => ("/js/pass?path=/json&cert=two", "O=edgemtls development,CN=js-two"),
            _ => ("/js/pass?path=/json", ""),
        };
        let answer = get(path)?;
        let seen: serde_json::Value = serde_json::from_slice(&answer.body)?;
        ensure!(answer.status == 200 && seen["dn"] == expected, "request {i} ({path}): {} {seen}", answer.status);
    }
    let served = |answer: Answer| -> Result<u64> {
        let value: serde_json::Value = serde_json::from_slice(&answer.body)?;
        value["served"].as_u64().context("served")
    };
    let first = served(get("/js/served")?)?;
    let second = served(get("/js/served")?)?;
    ensure!(second == first + 1, "a global persists on a reused instance: {first} then {second}");
    let (_, metrics) = http_get(admin, "/metrics")?;
    let created: f64 = metrics
        .lines()
        .find(|l| l.starts_with("edgemtls_instances_created_total{route=\"/js\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .context("instances_created for /js")?;
    // Without max_requests_per_instance: what `edgemtls build` made is reused by default.
    ensure!(created <= 5.0, "one caller at a time is served by reused instances: {created} created");

    // An upstream that cannot be reached: a problem in plain words, no Rust Debug text.
    let closed = free_port()?;
    let answer = get(&format!("/js/pass?to=https://localhost:{closed}/&cert=one"))?;
    let problem: serde_json::Value = serde_json::from_slice(&answer.body)?;
    let detail = problem["detail"].as_str().unwrap_or_default();
    ensure!(answer.status == 500 && problem["reason"] == "handler-error", "{} {problem}", answer.status);
    ensure!(detail.contains("NetworkError when attempting to fetch resource: ") && detail.len() > 60, "{detail}");
    ensure!(!["{", "Error(", "kind:", "Os "].iter().any(|debug| detail.contains(debug)), "plain words: {detail}");
    Ok(())
}
