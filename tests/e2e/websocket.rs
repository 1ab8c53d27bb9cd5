//! WebSockets through url-forward: Python `websockets` as both peers, the upstream behind
//! TLS that requires a client certificate from this world's CA; each side prints what it saw.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgemtls_host::Environment;
use edgemtls_host::pki::IssueOptions;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::harness::{World, all_envs};
use crate::peers::missing_peer;

/// The upstream (`ca cert key`, or `plain` without TLS behind nginx, which names the client
/// in `X-Client-Subject`): prints `port N`, then for each connection `open <client> <path>`, each
/// message as `got <text>` (answered `echo:<text>`; `bye` is answered by a close with code
/// 4000), and `closed <code>` when it ends.
const UPSTREAM: &str = r#"
import asyncio, ssl, sys
from websockets.asyncio.server import serve
plain = sys.argv[1] == "plain"
context = None
if not plain:
    ca, cert, key = sys.argv[1:4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca)
    context.load_cert_chain(cert, key)
def say(*words):
    print(*words, flush=True)
async def handler(ws):
    if plain:
        client = ws.request.headers.get("X-Client-Subject")
    else:
        peer = ws.transport.get_extra_info("peercert")
        client = dict(pair[0] for pair in peer["subject"]).get("commonName")
    say("open", client, ws.request.path)
    try:
        async for message in ws:
            say("got", message)
            if message == "bye":
                await ws.close(4000, "bye from upstream")
                break
            await ws.send("echo:" + message)
    finally:
        say("closed", ws.close_code)
async def main():
    async with serve(handler, "127.0.0.1", 0, ssl=context, ping_interval=None) as server:
        say("port", server.sockets[0].getsockname()[1])
        await asyncio.Future()
asyncio.run(main())
"#;

/// The caller: `url ca cert key mode` (cert `-`: none). Prints `status N` when the upgrade is
/// refused, else `open`, then per mode: `chat` sends two messages and `bye` and prints the
/// replies and `closed <code> <reason>`; `hold` waits for a line on stdin first; `slow` sends
/// eight messages 300 ms apart first; `idle` sends one message, then nothing, and prints
/// `closed <code> after <ms since the reply>` when the connection ends.
const CALLER: &str = r#"
import asyncio, ssl, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
url, ca, cert, key, mode = sys.argv[1:6]
context = None
if url.startswith("wss"):
    context = ssl.create_default_context(cafile=ca)
    if cert != "-":
        context.load_cert_chain(cert, key)
def say(*words):
    print(*words, flush=True)
async def chat(ws):
    for message in ["hello", "second"]:
        await ws.send(message)
        say("reply", await ws.recv())
    await ws.send("bye")
    try:
        await ws.recv()
    except ConnectionClosed:
        pass
    say("closed", ws.close_code, ws.close_reason)
async def main():
    try:
        async with connect(url, ssl=context, ping_interval=None, open_timeout=20, close_timeout=5) as ws:
            say("open")
            if mode == "hold":
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if mode == "idle":
                await ws.send("once")
                say("reply", await ws.recv())
                quiet_since = time.monotonic()
                try:
                    await asyncio.wait_for(ws.recv(), 60)
                except ConnectionClosed:
                    say("closed", ws.close_code, "after", int((time.monotonic() - quiet_since) * 1000))
            elif mode == "slow":
                for n in range(8):
                    await asyncio.sleep(0.3)
                    await ws.send(f"slow-{n}")
                    say("reply", await ws.recv())
                await chat(ws)
            else:
                await chat(ws)
    except InvalidStatus as refused:
        say("status", refused.response.status_code)
asyncio.run(main())
"#;

/// Whether Python's `websockets` can be imported, installing it from PyPI when it is missing.
async fn websockets_available() -> bool {
    let importable =
        || async { Command::new("python3").args(["-c", "import websockets"]).output().await.is_ok_and(|o| o.status.success()) };
    if importable().await {
        return true;
    }
    let _ = Command::new("python3").args(["-m", "pip", "install", "--quiet", "websockets"]).output().await;
    importable().await
}

/// A Python process and the lines it printed so far.
struct Peer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn spawn(script: &str, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new("python3")
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting python3")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Ok(Self { child, lines })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (at most 30 s) until a printed line starts with `prefix`, and returns it.
    async fn line(&self, prefix: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| line.starts_with(prefix)) {
                return Ok(line);
            }
            anyhow::ensure!(Instant::now() < deadline, "no line starting '{prefix}' in {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn send_line(&mut self) -> anyhow::Result<()> {
        self.child.stdin.as_mut().context("no stdin")?.write_all(b"go\n").await?;
        Ok(())
    }
}

/// A world with a WebSocket upstream requiring client certificates, and the certificate
/// `edge` (CN `edge-client`) for the route to present.
struct Setup {
    world: World,
    upstream: Peer,
    upstream_port: u16,
}

impl Setup {
    async fn new() -> anyhow::Result<Option<Self>> {
        if !websockets_available().await {
            missing_peer("Python's websockets package is not installed and pip could not install it");
            return Ok(None);
        }
        let world = World::new()?;
        world.add_cert("edge", "edge-client", &all_envs())?;
        let (cert, key) = server_files(&world, "ws-upstream")?;
        let ca = world.path().join("pki/ca.pem");
        let upstream = Peer::spawn(UPSTREAM, &[path(&ca), path(&cert), path(&key)])?;
        let upstream_port = upstream.line("port ").await?["port ".len()..].parse()?;
        Ok(Some(Self { world, upstream, upstream_port }))
    }

    /// A config with `[limits]` lines `limits`, the `[tls]` table `tls` (empty: plain HTTP),
    /// and three routes to the upstream, each presenting `edge`: url-forward at `/ws` (a
    /// prefix), url-rewrite at `/rw/:room` (to `/ws/<room>`) and mtls-auth at `/agents`
    /// (admitting only CN agent-7).
    fn config(&self, limits: &str, tls: &str) -> anyhow::Result<PathBuf> {
        self.config_to(self.upstream_port, limits, tls)
    }

    /// Like [`Setup::config`], to the upstream on `port`.
    fn config_to(&self, port: u16, limits: &str, tls: &str) -> anyhow::Result<PathBuf> {
        let body = format!(
            "[limits]\n{limits}\n{tls}\n\
             [[routes]]\npath = \"/ws\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"wss://localhost:{port}\"\nmtlsCertificate = \"edge\"\n\n\
             [[routes]]\npath = \"/rw/:room\"\nhandler = \"url-rewrite\"\n[routes.options]\nrewritePattern = \"wss://localhost:{port}/ws/${{params.room}}\"\nmtlsCertificate = \"edge\"\n\n\
             [[routes]]\npath = \"/agents\"\nhandler = \"mtls-auth\"\n[routes.options]\nbaseUrl = \"wss://localhost:{port}\"\nmtlsCertificate = \"edge\"\nallowedSubjects = \"*CN=agent-7\"\n"
        );
        // Trust for every upstream, which allows calling none: the routes' wss:// URLs are
        // what allows them (egress).
        self.world.config_raw(&format!("{body}\n[[upstreams]]\nhosts = [\"*\"]\nca_bundle = \"pki/ca.pem\"\n"))
    }

    /// Starts a caller on `url` in `mode`, presenting `client` (cert, key) if any.
    fn caller(&self, url: &str, client: Option<&(PathBuf, PathBuf)>, mode: &str) -> anyhow::Result<Peer> {
        let ca = path(&self.world.path().join("pki/ca.pem"));
        let (cert, key) = client.map_or(("-".to_string(), "-".to_string()), |(cert, key)| (path(cert), path(key)));
        Peer::spawn(CALLER, &[url.to_string(), ca, cert, key, mode.to_string()])
    }

    fn opened_upstream(&self) -> usize {
        self.upstream.lines().iter().filter(|line| line.starts_with("open ")).count()
    }
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// A server certificate for localhost and 127.0.0.1, written as `<stem>.pem` and `<stem>.key`.
fn server_files(world: &World, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let options = IssueOptions {
        common_name: "localhost".into(),
        server: true,
        sans: vec!["localhost".into(), "127.0.0.1".into()],
        days: 30,
        ..Default::default()
    };
    let (cert_pem, key_pem) = world.ca.issue(&options)?;
    let (cert, key) = (world.path().join(format!("{stem}.pem")), world.path().join(format!("{stem}.key")));
    std::fs::write(&cert, cert_pem)?;
    std::fs::write(&key, key_pem)?;
    Ok((cert, key))
}

/// A client certificate of the world's CA, written as `<stem>.pem` and `<stem>.key`.
fn client_files(world: &World, stem: &str, cn: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let options = IssueOptions { common_name: cn.into(), server: false, sans: vec![], days: 30, ..Default::default() };
    let (cert_pem, key_pem) = world.ca.issue(&options)?;
    let (cert, key) = (world.path().join(format!("{stem}.pem")), world.path().join(format!("{stem}.key")));
    std::fs::write(&cert, cert_pem)?;
    std::fs::write(&key, key_pem)?;
    Ok((cert, key))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_through_url_forward_and_url_rewrite_presents_the_routes_certificate_and_carries_messages_and_the_close_both_ways()
-> anyhow::Result<()> {
    let Some(setup) = Setup::new().await? else { return Ok(()) };
    let host = setup.world.serve(&setup.config("", "")?, Environment::Development).await?;
    let chat = ["open", "reply echo:hello", "reply echo:second", "closed 4000 bye from upstream"];

    let forwarded = setup.caller(&format!("ws://127.0.0.1:{}/ws/room?x=1", host.addr.port()), None, "chat")?;
    forwarded.line("closed ").await?;
    assert_eq!(forwarded.lines(), chat);
    setup.upstream.line("closed ").await?;
    assert_eq!(
        setup.upstream.lines()[1..],
        ["open edge-client /ws/room?x=1", "got hello", "got second", "got bye", "closed 4000"],
        "the upstream saw the route's certificate, the path, every message and its own close"
    );

    let rewritten = setup.caller(&format!("ws://127.0.0.1:{}/rw/lobby", host.addr.port()), None, "chat")?;
    rewritten.line("closed ").await?;
    assert_eq!(rewritten.lines(), chat);
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup.upstream.lines().len() < 11 {
        assert!(Instant::now() < deadline, "{:?}", setup.upstream.lines());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(setup.upstream.lines()[6..], ["open edge-client /ws/lobby", "got hello", "got second", "got bye", "closed 4000"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_refused_by_the_listener_or_by_mtls_auth_never_reaches_the_websocket_upstream() -> anyhow::Result<()> {
    let Some(setup) = Setup::new().await? else { return Ok(()) };
    server_files(&setup.world, "server")?;
    let agent = client_files(&setup.world, "agent", "agent-7")?;
    let stranger = client_files(&setup.world, "stranger", "stranger-1")?;
    let tls = "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"pki/ca.pem\"]\nclient_auth = \"required\"\n";
    let host = setup.world.serve(&setup.config("", tls)?, Environment::Development).await?;
    let url = format!("wss://localhost:{}/agents", host.addr.port());

    let without_certificate = setup.caller(&url, None, "chat")?;
    assert_eq!(without_certificate.line("status ").await?, "status 401");
    let not_allowed = setup.caller(&url, Some(&stranger), "chat")?;
    assert_eq!(not_allowed.line("status ").await?, "status 401");
    let admitted = setup.caller(&url, Some(&agent), "chat")?;
    assert_eq!(admitted.line("closed ").await?, "closed 4000 bye from upstream", "{:?}", admitted.lines());
    setup.upstream.line("closed ").await?;
    assert_eq!(setup.opened_upstream(), 1, "only the admitted caller reached the upstream: {:?}", setup.upstream.lines());
    assert!(setup.upstream.lines().contains(&"open edge-client /agents".to_string()), "{:?}", setup.upstream.lines());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_beyond_max_websockets_gets_503_and_the_place_comes_back_when_a_tunnel_closes() -> anyhow::Result<()> {
    let Some(setup) = Setup::new().await? else { return Ok(()) };
    let host = setup.world.serve(&setup.config("max_websockets = 1", "")?, Environment::Development).await?;
    let url = format!("ws://127.0.0.1:{}/ws/capped", host.addr.port());

    let mut first = setup.caller(&url, None, "hold")?;
    first.line("open").await?;
    let second = setup.caller(&url, None, "chat")?;
    assert_eq!(second.line("status ").await?, "status 503");
    assert_eq!(setup.opened_upstream(), 1, "the refused upgrade was never sent: {:?}", setup.upstream.lines());
    let metrics = host.handle.app().metrics().encode();
    for line in [
        "edgemtls_websockets_open 1",
        r#"edgemtls_websockets_total{route="/ws",outcome="opened"} 1"#,
        r#"edgemtls_websockets_total{route="/ws",outcome="over-limit"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no '{line}' in:\n{metrics}");
    }

    first.send_line().await?;
    assert_eq!(first.line("closed ").await?, "closed 4000 bye from upstream");
    // The tunnel's place is given back when its task ends, just after the close.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = setup.caller(&url, None, "chat")?;
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! { line = again.line("closed ") => line, line = again.line("status ") => line }
        })
        .await??;
        if outcome == "closed 4000 bye from upstream" {
            break;
        }
        assert_eq!(outcome, "status 503");
        assert!(Instant::now() < deadline, "the closed tunnel's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every tunnel has ended: the gauge says none is open.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.handle.app().metrics().encode().lines().any(|l| l == "edgemtls_websockets_open 0") {
        assert!(Instant::now() < deadline, "{}", host.handle.app().metrics().encode());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_websocket_tunnel_is_closed_after_websocket_idle_timeout_ms_and_a_busy_one_is_not() -> anyhow::Result<()> {
    let Some(setup) = Setup::new().await? else { return Ok(()) };
    // 2 s of quiet ends a tunnel; the busy caller's 300 ms gaps stay far below it even on a
    // loaded machine (500 ms once closed a busy tunnel whose caller was descheduled).
    let host = setup.world.serve(&setup.config("websocket_idle_timeout_ms = 2000", "")?, Environment::Development).await?;
    let url = format!("ws://127.0.0.1:{}/ws/quiet", host.addr.port());

    let quiet = setup.caller(&url, None, "idle")?;
    assert_eq!(quiet.line("reply ").await?, "reply echo:once");
    // Closed without a close frame: 1006 on both sides, about 2 s after the last byte.
    let closed = quiet.line("closed ").await?;
    let after: u64 = closed.strip_prefix("closed 1006 after ").with_context(|| closed.clone())?.parse()?;
    assert!((1_900..15_000).contains(&after), "closed {after} ms after the last message");
    assert_eq!(setup.upstream.line("closed ").await?, "closed 1006");

    // Eight messages 300 ms apart: 2.4 s in all, longer than the idle timeout, never 2 s without a byte.
    let busy = setup.caller(&url, None, "slow")?;
    assert_eq!(busy.line("closed ").await?, "closed 4000 bye from upstream", "{:?}", busy.lines());
    assert_eq!(busy.lines().iter().filter(|line| line.starts_with("reply echo:slow-")).count(), 8, "{:?}", busy.lines());
    Ok(())
}

/// The pool speaks HTTP/2 to an upstream that offers it; an upgrade must go over HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_reaches_an_upstream_that_offers_http2_over_http1_while_other_requests_use_http2() -> anyhow::Result<()> {
    let Some(setup) = Setup::new().await? else { return Ok(()) };
    let backend = Peer::spawn(UPSTREAM, &["plain".to_string()])?;
    let backend_port: u16 = backend.line("port ").await?["port ".len()..].parse()?;
    let location = format!(
        "location /ws/protocol {{ return 200 \"$server_protocol\"; }} \
         proxy_pass http://127.0.0.1:{backend_port}; proxy_http_version 1.1; \
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; \
         proxy_set_header X-Client-Subject \"$ssl_client_s_dn $server_protocol\";"
    );
    let Some(nginx) = crate::nginx::Nginx::start_with(&setup.world, " http2", &location).await? else { return Ok(()) };
    let host = setup.world.serve(&setup.config_to(nginx.addr.port(), "", "")?, Environment::Development).await?;

    let caller = setup.caller(&format!("ws://127.0.0.1:{}/ws/h2", host.addr.port()), None, "chat")?;
    assert_eq!(caller.line("closed ").await?, "closed 4000 bye from upstream", "{:?}", caller.lines());
    let opened = backend.line("open ").await?;
    assert!(opened.contains("CN=edge-client") && opened.ends_with(" HTTP/1.1 /ws/h2"), "{opened}");

    // The same route's plain request goes over the pool, which speaks HTTP/2 to this nginx.
    let plain = host.get("/ws/protocol", &[]).await?;
    assert_eq!((plain.status, plain.body.as_str()), (200, "HTTP/2.0"), "{plain:?}");
    let log = std::fs::read_to_string(setup.world.path().join("nginx/logs/error.log")).unwrap_or_default();
    drop(nginx);
    assert!(!log.contains("[error]"), "{log}");
    Ok(())
}
