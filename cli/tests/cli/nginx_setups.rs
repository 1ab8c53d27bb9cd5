//! The README's "Replacing the nginx in front": each `toml` block marked `# setup: NAME` is
//! served as written (its backend address pointed at a local backend, its listener at a free
//! port) in front of a Python backend that answers with the headers it received, and called
//! with curl. The backend must see the caller under the names the document's service reads,
//! never a caller's forged copy, and no request from a caller the document's nginx refuses.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::common::*;

/// The setups the README must show, in its order.
const SETUPS: [&str; 4] = ["contextforge-nginx", "contextforge-caddy", "arcp-basic", "arcp-strict"];

/// The backend addresses the README's blocks use (ContextForge's gateway:4444, ARCP's arcp:8001).
const BACKEND_PLACEHOLDERS: [&str; 2] = ["127.0.0.1:4444", "127.0.0.1:8001"];

/// The headers each document's nginx (or Caddy) sets and the caller field each carries, as
/// the documents write them: the README's blocks must name exactly these.
fn document_headers(setup: &str) -> Result<&'static [(&'static str, &'static str)]> {
    Ok(match setup {
        "contextforge-nginx" => &[
            ("X-SSL-Client-Cert", "escaped_cert"),
            ("X-SSL-Client-S-DN", "subject_dn"),
            ("X-SSL-Client-S-DN-CN", "subject_cn"),
            ("X-SSL-Client-Verify", "verify"),
            ("X-Authenticated-User", "subject_cn"),
        ],
        "contextforge-caddy" => &[
            ("X-SSL-Client-Cert", "escaped_cert"),
            ("X-SSL-Client-S-DN", "subject_dn"),
            ("X-SSL-Client-S-DN-CN", "subject_cn"),
            ("X-Authenticated-User", "subject_cn"),
        ],
        "arcp-basic" => &[
            ("X-Client-Cert", "escaped_cert"),
            ("X-Client-Cert-Subject", "subject_dn"),
            ("X-Client-Cert-Issuer", "issuer_dn"),
            ("X-Client-Cert-Serial", "serial"),
            ("X-Client-Cert-Fingerprint", "fingerprint_sha1"),
        ],
        "arcp-strict" => &[("X-Client-Cert", "escaped_cert")],
        other => bail!("no document setup named {other}"),
    })
}

/// The caller the tests present (ARCP's example CN).
const CALLER: &str = "agent-001";

/// Answers every request with the headers it received, as a JSON list of [name, value], and
/// appends that list to the file named by its second argument. A WebSocket upgrade is
/// answered 101 (with the right Sec-WebSocket-Accept), then the same JSON, then a close.
const BACKEND: &str = r#"
import base64, hashlib, http.server, json, sys

class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        seen = [[name, value] for name, value in self.headers.items()]
        body = json.dumps(seen).encode()
        with open(sys.argv[2], "a") as log:
            log.write(json.dumps(seen) + "\n")
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: " + accept + "\r\n\r\n").encode() + body + b"\n")
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"#;

/// A WebSocket upgrade over TLS with the caller's certificate and forged identity headers:
/// prints what came back until the server closed.
const WS_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "X-Authenticated-User: forged\r\nX-SSL-Client-S-DN-CN: forged\r\n\r\n").encode())
        received = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
sys.stdout.write(received.decode())
"#;

/// The README's marked `toml` blocks: (name, text).
fn readme_setups() -> Result<Vec<(String, String)>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let mut setups = Vec::new();
    for block in readme.split("```toml\n# setup: ").skip(1) {
        let block = block.split("\n```").next().context("an unterminated toml block")?;
        let (name, _) = block.split_once('\n').context("a setup block with nothing after its marker")?;
        setups.push((name.trim().to_string(), format!("# setup: {block}\n")));
    }
    Ok(setups)
}

/// The `[tls.caller_headers]` entries of a block: header name -> caller field.
fn caller_headers(block: &str) -> Result<Vec<(String, String)>> {
    let table = block.split("[tls.caller_headers]\n").nth(1).context("the block has no [tls.caller_headers]")?;
    let mut entries = Vec::new();
    for line in table.lines().take_while(|line| !line.trim().is_empty()) {
        let line = line.split('#').next().unwrap_or(line);
        let (name, field) = line.split_once('=').with_context(|| format!("not a `\"Header\" = \"field\"` line: {line}"))?;
        entries.push((name.trim().trim_matches('"').to_string(), field.trim().trim_matches('"').to_string()));
    }
    ensure!(!entries.is_empty(), "the block names no caller header");
    Ok(entries)
}

/// Percent-decoding; `plus_is_space` as a query string is read (Caddy's form).
fn percent_decode(text: &str, plus_is_space: bool) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = text.get(at + 1..at + 3).context("a % without two hex digits")?;
                out.push(u8::from_str_radix(hex, 16)?);
                at += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    Ok(String::from_utf8(out)?)
}

/// `openssl x509 -noout ARGS` on `cert`: the value after the first `=`.
fn openssl_field(cert: &Path, args: &[&str]) -> Result<String> {
    let out = output({
        let mut command = Command::new("openssl");
        command.args(["x509", "-noout", "-in", &text(cert)]).args(args).stdin(Stdio::null());
        command
    })?;
    ensure!(out.status.success(), "openssl failed:\n{}", describe(&out));
    let line = String::from_utf8(out.stdout)?;
    Ok(line.split_once('=').context("openssl printed no `=`")?.1.trim().to_string())
}

/// What nginx's variable for `field` holds for the caller certificate `cert`.
fn expected_value(field: &str, cert: &Path) -> Result<String> {
    Ok(match field {
        "subject_dn" => openssl_field(cert, &["-subject", "-nameopt", "RFC2253"])?,
        "issuer_dn" => openssl_field(cert, &["-issuer", "-nameopt", "RFC2253"])?,
        "subject_cn" => CALLER.to_string(),
        "serial" => openssl_field(cert, &["-serial"])?,
        "fingerprint_sha1" => openssl_field(cert, &["-fingerprint", "-sha1"])?.replace(':', "").to_lowercase(),
        "verify" => "SUCCESS".to_string(),
        other => bail!("the test has no expected value for the field {other}"),
    })
}

/// The headers a backend reported, by lower-case name (every value, in order).
fn seen_headers(report: &Value) -> Result<BTreeMap<String, Vec<String>>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in report.as_array().context("the backend's report is not a list")? {
        let name = pair[0].as_str().context("a header without a name")?.to_lowercase();
        headers.entry(name).or_default().push(pair[1].as_str().unwrap_or_default().to_string());
    }
    Ok(headers)
}

/// curl to the served setup; `with_cert` presents the caller's certificate. Returns the
/// status and the body.
fn curl(work: &Path, port: u16, with_cert: bool, headers: &[String]) -> Result<(u16, String)> {
    let mut command = Command::new("curl");
    command
        .current_dir(work)
        .args(["-sS", "--max-time", "30", "--cacert", "pki/ca.pem", "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}"])
        .stdin(Stdio::null());
    if with_cert {
        command.args(["--cert", &format!("pki/{CALLER}.pem"), "--key", &format!("pki/{CALLER}.key")]);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(format!("https://localhost:{port}/health"));
    let out = output(command)?;
    ensure!(out.status.success(), "curl failed:\n{}", describe(&out));
    let stdout = String::from_utf8(out.stdout)?;
    let (body, status) = stdout.rsplit_once('\n').context("curl printed no status")?;
    Ok((status.trim().parse()?, body.to_string()))
}

/// Checks one served setup end to end.
fn check_setup(work: &Path, name: &str, block: &str, port: u16, seen_log: &Path) -> Result<()> {
    let entries: Vec<(String, String)> =
        document_headers(name)?.iter().map(|(header, field)| (header.to_string(), field.to_string())).collect();
    let mut named = caller_headers(block)?;
    named.sort();
    let mut wanted = entries.clone();
    wanted.sort();
    ensure!(named == wanted, "{name}: the README's caller_headers are {named:?}, the document sets {wanted:?}");
    let cert = work.join(format!("pki/{CALLER}.pem"));
    let caller_der = pem::parse(std::fs::read(&cert)?)?.into_contents();
    // A forged copy of every named header, as sent and with `_` for `-`.
    let forged: Vec<String> =
        entries.iter().flat_map(|(header, _)| [format!("{header}: forged"), format!("{}: forged", header.replace('-', "_"))]).collect();

    let (status, body) = curl(work, port, true, &forged)?;
    ensure!(status == 200, "{name}: a caller with its certificate got {status}: {body}");
    ensure!(!body.contains("forged"), "{name}: a forged header reached the backend: {body}");
    let seen = seen_headers(&serde_json::from_str(&body).with_context(|| format!("{name}: not the backend's report: {body}"))?)?;
    for (header, field) in &entries {
        let values = seen.get(&header.to_lowercase()).with_context(|| format!("{name}: the backend did not get {header}: {seen:?}"))?;
        ensure!(values.len() == 1, "{name}: the backend got {header} {} times: {values:?}", values.len());
        let value = &values[0];
        if field == "escaped_cert" {
            // What ARCP does with MTLS_CERT_HEADER: URL-unquote, load the PEM. Caddy's readers
            // unquote a query string, which must read the same certificate.
            for plus_is_space in [false, true] {
                let pem_text = percent_decode(value, plus_is_space)?;
                let der = pem::parse(pem_text.as_bytes()).with_context(|| format!("{name}: {header} is not a PEM: {pem_text}"))?;
                ensure!(der.contents() == caller_der.as_slice(), "{name}: {header} holds another certificate");
            }
        } else {
            let expected = expected_value(field, &cert)?;
            ensure!(*value == expected, "{name}: {header} is {value:?}, nginx would send {expected:?}");
        }
    }

    let marker = format!("X-Test-Request: {name}-without-certificate");
    let mut headers = forged.clone();
    headers.push(marker.clone());
    let (status, body) = curl(work, port, false, &headers)?;
    // nginx's `ssl_verify_client optional` (ARCP's basic setup) lets such callers through.
    if name != "arcp-basic" {
        ensure!(status == 401, "{name}: a caller without a certificate got {status}: {body}");
        ensure!(body.contains("client-certificate-required"), "{name}: the 401 does not say why: {body}");
        let log = std::fs::read_to_string(seen_log)?;
        ensure!(!log.contains(&format!("{name}-without-certificate")), "{name}: the backend saw a caller without a certificate");
    } else {
        ensure!(status == 200, "{name}: a caller without a certificate got {status}: {body}");
        ensure!(!body.contains("forged"), "{name}: a forged header reached the backend without a certificate: {body}");
        let seen = seen_headers(&serde_json::from_str(&body)?)?;
        for (header, _) in &entries {
            ensure!(!seen.contains_key(&header.to_lowercase()), "{name}: {header} was set for a caller without a certificate: {seen:?}");
        }
    }
    Ok(())
}

/// A WebSocket upgrade through the setup reaches the backend as an upgrade, with the
/// caller's identity and without the forged copies (ContextForge's `location /ws`).
fn check_websocket(work: &Path, name: &str, port: u16) -> Result<()> {
    let out = output({
        let mut command = Command::new("python3");
        command
            .current_dir(work)
            .args(["ws_client.py", &port.to_string(), "pki/ca.pem", &format!("pki/{CALLER}.pem"), &format!("pki/{CALLER}.key")])
            .stdin(Stdio::null());
        command
    })?;
    ensure!(out.status.success(), "{name}: the WebSocket client failed:\n{}", describe(&out));
    let received = String::from_utf8(out.stdout)?;
    ensure!(received.starts_with("HTTP/1.1 101"), "{name}: the upgrade was not switched:\n{received}");
    let (_, report) = received.split_once("\r\n\r\n").context("no end of the 101's headers")?;
    ensure!(!report.contains("forged"), "{name}: a forged header reached the WebSocket backend: {report}");
    let seen = seen_headers(&serde_json::from_str(report.trim())?)?;
    for header in ["x-authenticated-user", "x-ssl-client-s-dn-cn"] {
        ensure!(seen.get(header) == Some(&vec![CALLER.to_string()]), "{name}: the WebSocket backend's {header}: {seen:?}");
    }
    Ok(())
}

#[test]
fn the_readme_nginx_setups_verify_callers_and_send_them_under_the_documents_names() -> Result<()> {
    for (peer, args) in [("python3", "--version"), ("curl", "--version"), ("openssl", "version")] {
        if Command::new(peer).arg(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            crate::cli::peers::missing_peer(&format!("the nginx setups test needs {peer}, which is not on PATH"));
            return Ok(());
        }
    }
    let setups = readme_setups()?;
    let names: Vec<&str> = setups.iter().map(|(name, _)| name.as_str()).collect();
    ensure!(names == SETUPS, "the README's setups are {names:?}, the test knows {SETUPS:?}");

    let sandbox = Sandbox::new()?;
    let work = sandbox.dir();
    let pki = text(&sandbox.path("pki"));
    sandbox.ok(["pki", "init", "--out", &pki])?;
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", CALLER, "--out", &pki])?;
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", &pki])?;
    sandbox.write("backend.py", BACKEND)?;
    sandbox.write("ws_client.py", WS_CLIENT)?;

    let backend_port = free_port()?;
    let seen_log = sandbox.path("seen.jsonl");
    let _backend = Running(
        Command::new("python3")
            .current_dir(work)
            .args(["backend.py", &backend_port.to_string(), &text(&seen_log)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_for(backend_port)?;

    for (name, block) in &setups {
        let mut config = block.clone();
        for placeholder in BACKEND_PLACEHOLDERS {
            config = config.replace(placeholder, &format!("127.0.0.1:{backend_port}"));
        }
        ensure!(config != *block, "{name}: the block names none of the backend addresses {BACKEND_PLACEHOLDERS:?}");
        let path = sandbox.write(&format!("{name}.toml"), &config)?;
        // serve_logged listens on a free port (`--listen`) in place of the block's 443.
        let (serve, port, log) = serve_logged(&sandbox, &path, false)?;
        let checked = check_setup(work, name, block, port, &seen_log)
            .and_then(|()| if name.starts_with("contextforge") { check_websocket(work, name, port) } else { Ok(()) });
        drop(serve);
        if let Err(error) = checked {
            bail!("{error:#}\nserve's log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
    }
    Ok(())
}
