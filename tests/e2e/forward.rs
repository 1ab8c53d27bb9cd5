//! Proxying in the host (`edgemtls:mtls/forward`, the SDK's `forward`): the same answers as
//! forwarding in the guest, and an instance that is free while the bodies still stream.

use std::time::Duration;

use edgemtls_host::Environment;
use http_body_util::BodyExt;
use time::OffsetDateTime;

use crate::harness::*;

/// A probe request in `mode` (`forward`: the host forwards; `forward-changed`: the guest
/// forwards, and adds a header; any other: the guest fetches `target` and answers with it).
async fn forward(host: &Served, mode: &str, target: &str, certificate: &str) -> anyhow::Result<Reply> {
    host.get("/probe", &[("x-mode", mode), ("x-target", target), ("x-certificate", certificate)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_answers_a_forward_as_the_guest_would() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let now = OffsetDateTime::now_utc();
    world.add_cert_with_validity("old", "old-client", &all_envs(), now - time::Duration::days(30), now - time::Duration::days(1))?;
    let upstream = world.upstream(true).await?;
    // A port nothing listens on, and one the route may not call.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let route = format!(
        "[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n\
         allowed_outbound_hosts = [\"https://localhost:{port}\", \"https://127.0.0.1:{closed}\"]\n",
        port = upstream.addr().port()
    );
    let config = world.config(&route, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    let who = upstream_url(&upstream, "/who?x=1");
    let refused = format!("https://127.0.0.1:{closed}/who");
    let denied = format!("https://127.0.0.1:{elsewhere}/who");
    // (target, certificate, status, the problem's reason; none for a 200)
    let cases = [
        (who.as_str(), "alpha", 200, None),
        (who.as_str(), "nope", 500, Some("certificate-not-found")),
        (who.as_str(), "old", 500, Some("certificate-expired")),
        (who.as_str(), "", 502, Some("client-certificate-required")),
        (refused.as_str(), "alpha", 502, Some("connection-refused")),
        (denied.as_str(), "alpha", 502, Some("egress-denied")),
        ("ftp://files.internal/x", "alpha", 500, Some("invalid-url")),
        ("files.internal/x", "alpha", 500, Some("invalid-url")),
    ];
    for (target, certificate, status, reason) in cases {
        let in_host = forward(&host, "forward", target, certificate).await?;
        let in_guest = forward(&host, "forward-changed", target, certificate).await?;
        let case = format!("{target} with '{certificate}'");
        assert_eq!(in_host.status, status, "{case}: {}", in_host.body);
        assert_eq!(in_guest.status, status, "{case}: {}", in_guest.body);
        assert!(in_host.headers.get("x-changed").is_none(), "{case}: the host's answer is the upstream's");
        assert_eq!(in_guest.headers["x-changed"], "yes", "{case}: the guest's change is applied");
        let (host_json, guest_json) = (in_host.json()?, in_guest.json()?);
        match reason {
            None => {
                assert_eq!(host_json["client_cn"], "alpha-client", "{case}");
                assert_eq!(host_json["path"], "/who?x=1", "{case}");
                assert_eq!(guest_json["client_cn"], "alpha-client", "{case}");
            }
            Some(reason) => {
                assert_eq!(in_host.headers["content-type"], "application/problem+json", "{case}");
                assert_eq!(host_json["reason"], reason, "{case}: {host_json}");
                assert_eq!(host_json["type"], format!("urn:edgemtls:problem:{reason}"), "{case}");
                // Every member alike: type, title, status, detail, reason, certificate.
                assert_eq!(host_json, guest_json, "{case}: the host and the SDK describe it alike");
            }
        }
    }
    assert_eq!(forward(&host, "forward", &who, "nope").await?.json()?["certificate"], "nope");
    Ok(())
}

/// A host with the probe at `/probe` and one instance in all (kept warm): a second request
/// gets it only once the first has let go, else 503 after a short wait.
async fn one_instance_in_all(world: &World, upstream: std::net::SocketAddr) -> anyhow::Result<Served> {
    let body = format!(
        "[limits]\nmax_instances = 1\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 1000\nidle_timeout_ms = 600000\n"
    );
    let config = world.config(&body, upstream)?;
    world.serve(&config, Environment::Development).await
}

/// Whether the guest's instance is free while the body still streams, both when the host
/// forwards (`forward`) and when the guest fetched with the SDK and answers with the
/// upstream's body unread (`fetch`: the host streams it, `pass-through.respond-with-body`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_again_while_the_body_it_forwarded_or_fetched_still_streams() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    for mode in ["forward", "fetch"] {
        let host = one_instance_in_all(&world, upstream.addr()).await?;
        let metrics = host.handle.app().metrics().clone();

        // Twenty 64 KiB chunks, 150 ms apart: three seconds of body.
        let slow = upstream_url(&upstream, "/slow?bytes=1310720&pause_ms=150");
        let request = hyper::Request::get(format!("http://{}/probe", host.addr))
            .header("x-mode", mode)
            .header("x-target", &slow)
            .header("x-certificate", "alpha")
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        let streaming = client_for_test().request(request).await?;
        assert_eq!(streaming.status(), 200, "{mode}");
        let reading = tokio::spawn(async move {
            let mut body = streaming.into_body();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                received += frame?.data_ref().map(|d| d.len()).unwrap_or(0);
            }
            anyhow::Ok(received)
        });

        // Meanwhile the one instance serves other requests (503 while it were still busy).
        let who = upstream_url(&upstream, "/who");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let reply = forward(&host, mode, &who, "alpha").await?;
            if reply.status == 200 {
                assert_eq!(reply.json()?["client_cn"], "alpha-client", "{mode}");
                break;
            }
            assert_eq!(reply.status, 503, "{mode}: {}", reply.body);
            assert!(tokio::time::Instant::now() < deadline, "{mode}: the instance stayed busy while the first body streamed");
        }
        assert!(!reading.is_finished(), "{mode}: the first body ended before the second request was served: the test proves nothing");
        assert_eq!(reading.await??, 1_310_720, "{mode}: the first body arrives whole");
        assert_eq!(metrics.instances_created("/probe"), 1, "{mode}");
    }
    Ok(())
}

fn client_for_test()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<bytes::Bytes>> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// How a caller goes away while its request is being forwarded.
#[derive(Debug, Clone, Copy)]
enum Departure {
    /// Closes its HTTP/1.1 connection in the middle of an upload: the request body fails,
    /// and so does the forward.
    Http1Close,
    /// Resets its HTTP/2 stream in the middle of an upload: its request is dropped and its
    /// body fails at once, and the forward ends by whichever the host sees first.
    Http2Reset,
    /// Resets its HTTP/2 stream, its request sent whole, while the upstream has not
    /// answered: the request is dropped, the forward with it.
    Http2ResetWaiting,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_frees_its_instance_and_its_forward_is_audited() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let host = one_instance_in_all(&world, upstream.addr()).await?;
    let metrics = host.handle.app().metrics().clone();
    let who = upstream_url(&upstream, "/who");
    let slow_to_answer = upstream_url(&upstream, "/who?answer_after_ms=30000");
    let audited = |outcome: &str| {
        let line = format!("edgemtls_outbound_requests_total{{certificate=\"alpha\",outcome=\"{outcome}\"}} ");
        let text = metrics.encode();
        text.lines().find_map(|l| l.strip_prefix(&line)?.parse::<u64>().ok()).unwrap_or(0)
    };
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, http_body_util::StreamBody<
            futures_util::stream::BoxStream<'static, Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>>,
        >>(hyper_util::client::legacy::connect::HttpConnector::new());

    for departure in [Departure::Http1Close, Departure::Http2Reset, Departure::Http2ResetWaiting] {
        // A request the caller starts and never sees answered: an upload it never finishes
        // (the upstream waits for the rest of the body), or one the upstream is slow to
        // answer; meanwhile the guest is in `forward`. It competes for the one instance with the
        // requests that look whether it took it: one that was answered (503 after the slot
        // wait, on a loaded machine) is started again.
        let start = || async {
            anyhow::Ok(match departure {
                Departure::Http1Close => {
                    let mut caller = tokio::net::TcpStream::connect(host.addr).await?;
                    let head = format!(
                        "POST /probe HTTP/1.1\r\nhost: edge\r\nx-mode: forward\r\nx-target: {who}\r\nx-certificate: alpha\r\ncontent-length: 1000000\r\n\r\n"
                    );
                    caller.write_all(head.as_bytes()).await?;
                    caller.write_all(&[b'x'; 1000]).await?;
                    Upload::Http1(caller)
                }
                Departure::Http2Reset | Departure::Http2ResetWaiting => {
                    let (body, target) = match departure {
                        Departure::Http2ResetWaiting => (futures_util::StreamExt::boxed(futures_util::stream::empty()), &slow_to_answer),
                        _ => {
                            let first = futures_util::stream::once(async {
                                Ok(hyper::body::Frame::data(bytes::Bytes::from_static(&[b'x'; 1000])))
                            });
                            (futures_util::StreamExt::boxed(futures_util::StreamExt::chain(first, futures_util::stream::pending())), &who)
                        }
                    };
                    let request = hyper::Request::post(format!("http://{}/probe", host.addr))
                        .header("x-mode", "forward")
                        .header("x-target", target)
                        .header("x-certificate", "alpha")
                        .body(http_body_util::StreamBody::new(body))?;
                    Upload::Http2(AbortOnDrop(tokio::spawn(h2.request(request))))
                }
            })
        };
        let mut caller = start().await?;
        // The one instance is busy with it: others are told 503.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while forward(&host, "forward", &who, "alpha").await?.status != 503 {
            assert!(tokio::time::Instant::now() < deadline, "{departure:?}: the upload never took the instance");
            if caller.answered() {
                caller = start().await?;
            }
        }
        let outcomes = ["request-body-failed", "abandoned", "upstream-error"];
        let before = outcomes.map(audited);

        // The caller goes away: the instance slot is free long before the request's deadline,
        // and the forward it had in flight gets its audit line.
        drop(caller);
        loop {
            let reply = forward(&host, "forward", &who, "alpha").await?;
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 503, "{departure:?}: {}", reply.body);
            assert!(tokio::time::Instant::now() < deadline, "{departure:?}: the departed caller's guest kept the instance");
        }
        // One audit line, for the reason the forward ended; never the upstream's fault.
        let [body_failed, abandoned, upstream_error] = [0, 1, 2].map(|i| audited(outcomes[i]) - before[i]);
        let seen = (body_failed, abandoned, upstream_error);
        match departure {
            Departure::Http1Close => assert_eq!(seen, (1, 0, 0), "{departure:?}: {}", metrics.encode()),
            Departure::Http2Reset => {
                assert!(matches!(seen, (1, 0, 0) | (0, 1, 0)), "{departure:?}: {seen:?}: {}", metrics.encode())
            }
            Departure::Http2ResetWaiting => assert_eq!(seen, (0, 1, 0), "{departure:?}: {}", metrics.encode()),
        }
    }
    Ok(())
}

/// An upload in progress, as its caller sees it.
enum Upload {
    Http1(tokio::net::TcpStream),
    Http2(AbortOnDrop<Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>>),
}

impl Upload {
    /// Whether the host already answered it (it never took the instance).
    fn answered(&mut self) -> bool {
        match self {
            Upload::Http1(stream) => {
                let mut byte = [0u8; 1];
                !matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
            }
            Upload::Http2(task) => task.0.is_finished(),
        }
    }
}

/// A task aborted when dropped: a request whose caller goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An upstream that requires a client certificate refuses a request without one after the
/// TLS 1.3 handshake (with an alert) and closes; an upload's bytes then meet a reset, which
/// our write sees before any read reaches the alert. The failure is still the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_for_its_missing_certificate_is_told_so_not_a_lost_connection() -> anyhow::Result<()> {
    let world = World::new()?;
    let upstream = world.upstream(true).await?;
    let route = format!(
        "[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nallowed_outbound_hosts = [\"https://localhost:{port}\"]\n",
        port = upstream.addr().port()
    );
    let host = world.serve(&world.config(&route, upstream.addr())?, Environment::Development).await?;
    let who = upstream_url(&upstream, "/who");
    // Before the host read the unread alert, eight in twenty of these were `connection-lost`.
    for attempt in 0..20 {
        let body = bytes::Bytes::from(vec![b'x'; 4 << 20]);
        let reply = host.request("POST", "/probe", &[("x-mode", "forward"), ("x-target", &who), ("x-certificate", "")], body).await?;
        assert_eq!(reply.status, 502, "attempt {attempt}: {}", reply.body);
        assert_eq!(reply.json()?["reason"], "client-certificate-required", "attempt {attempt}: {}", reply.body);
    }
    Ok(())
}
