//! The execution model: warm instances serve request after request, a busy guest costs only
//! its own request, and when every instance slot is taken the host says so (503).

use std::time::{Duration, Instant};

use edgemtls_host::Environment;

use crate::harness::*;

/// Waits until `condition` holds, up to 30 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_serve_many_requests_and_start_each_one_clean() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let hello_url = upstream_url(&upstream, "/hello");
    let body = format!(
        r#"[limits]
max_outbound_requests = 5

[[routes]]
path = "/hello"
handler = "hello-mtls"
[routes.options]
url = "{hello_url}"
mtlsCertificate = "alpha"

[[routes]]
path = "/fresh"
handler = "{PROBE}"

[[routes]]
path = "/reused"
handler = "{PROBE}"
max_requests_per_instance = 5

[[routes]]
path = "/trapcheck"
handler = "{PROBE}"
max_requests_per_instance = 100
"#
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let metrics = host.handle.app().metrics().clone();

    // A built-in handler reuses one instance, and each request still presents its certificate.
    for _ in 0..10 {
        let reply = host.get("/hello", &[]).await?;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()?["client_cn"], "alpha-client");
    }
    assert_eq!(metrics.instances_created("/hello"), 1, "ten sequential requests, one instance");

    // A component file gets a fresh instance per request unless its route opts in.
    for _ in 0..10 {
        assert_eq!(host.get("/fresh", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
        assert_eq!(host.get("/reused", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
    }
    assert_eq!(metrics.instances_created("/fresh"), 10);
    // A response with a content-length is complete for the client at its last byte, a
    // moment before its instance is back in the pool: the next request may miss it.
    let reused = metrics.instances_created("/reused");
    assert!((2..=4).contains(&reused), "max_requests_per_instance = 5 over 10 requests: {reused} instances");

    // Per-request limits start over on a reused instance: each flood sends exactly 5.
    let target = upstream_url(&upstream, "/flood");
    for round in 1..=2 {
        let flood = host.get("/reused", &[("x-mode", "flood"), ("x-target", &target), ("x-certificate", "alpha")]).await?;
        assert_eq!(flood.json()?["reason"], "outbound-limit", "{}", flood.body);
        let flooded = upstream.log().requests().iter().filter(|r| r.path == "/flood").count();
        assert_eq!(flooded, 5 * round, "round {round}: the outbound count must restart with each request");
    }

    // An instance that trapped is never reused. (Streamed answers, so each instance is back
    // in the pool before the next request is sent.)
    let fetch = [("x-target", target.as_str()), ("x-certificate", "alpha")];
    assert_eq!(host.get("/trapcheck", &fetch).await?.status, 200);
    assert_eq!(metrics.instances_created("/trapcheck"), 1);
    assert_eq!(host.get("/trapcheck", &[("x-mode", "trap")]).await?.status, 500);
    host.get("/trapcheck", &fetch).await?;
    assert_eq!(metrics.instances_created("/trapcheck"), 2, "the trapped instance was replaced");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_guests_cost_only_their_own_requests() -> anyhow::Result<()> {
    let world = World::new()?;
    let body = format!("[limits]\nrequest_timeout_ms = 20000\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n");
    let config = world.config_raw(&body)?;
    let host = std::sync::Arc::new(world.serve(&config, Environment::Development).await?);
    let metrics = host.handle.app().metrics().clone();

    // Four guests that never stop computing: twice as many as there are async workers.
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.get("/probe", &[("x-mode", "spin")]).await })
        })
        .collect();
    wait_until("four guests are spinning", || metrics.instances_created("/probe") == 4).await;

    // A normal request is answered while all four still run.
    let reply = host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(spinners.iter().all(|s| !s.is_finished()), "the spinning guests must still be running");
    for spinner in spinners {
        spinner.abort();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_instance_is_busy_the_host_answers_503_with_retry_after() -> anyhow::Result<()> {
    let world = World::new()?;
    let body = format!("[limits]\nrequest_timeout_ms = 20000\nmax_instances = 2\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n");
    let config = world.config_raw(&body)?;
    let host = std::sync::Arc::new(world.serve(&config, Environment::Development).await?);
    let metrics = host.handle.app().metrics().clone();
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.get("/probe", &[("x-mode", "spin")]).await })
        })
        .collect();
    wait_until("both instance slots are taken", || metrics.instances_created("/probe") == 2).await;

    let reply = host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:host-busy");
    for spinner in spinners {
        spinner.abort();
    }
    Ok(())
}

#[tokio::test]
async fn a_request_without_a_host_is_a_bad_request_and_costs_no_instance() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::new()?;
    let config = world.config_raw(&format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 10\n"))?;
    let host = world.serve(&config, Environment::Development).await?;
    let metrics = host.handle.app().metrics().clone();
    assert_eq!(host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);

    let mut stream = tokio::net::TcpStream::connect(host.addr).await?;
    stream.write_all(b"GET /probe HTTP/1.0\r\nx-mode: env\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    assert!(response.starts_with("HTTP/1.0 400"), "{response}");
    assert!(response.contains("urn:edgemtls:problem:bad-request"), "{response}");

    // The instance the refused request took went back to the pool.
    assert_eq!(host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
    assert_eq!(metrics.instances_created("/probe"), 1);
    Ok(())
}

/// GETs `target` through the probe in `mode` (`fetch`: the guest streams the body; `forward`:
/// the host does) and reads the whole body: the status, the bytes that arrived, and whether
/// the body ended cleanly.
async fn stream_through(host: &Served, mode: &str, target: &str) -> anyhow::Result<(u16, usize, bool)> {
    use http_body_util::BodyExt;
    let request = hyper::Request::get(format!("http://{}/probe", host.addr))
        .header("x-mode", mode)
        .header("x-target", target)
        .header("x-certificate", "alpha")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    // The guest's response streams with no length; the host's passes the upstream's on. A
    // cut-off body is an error to the client either way.
    let length = response.headers().get("content-length").map(|v| v.to_str().unwrap_or("").to_string());
    let expected = target.split("bytes=").nth(1).and_then(|rest| rest.split('&').next()).map(str::to_string);
    assert_eq!(length, if mode == "forward" { expected } else { None }, "{mode}: content-length");
    let mut body = response.into_body();
    let mut received = 0usize;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.data_ref().map(|d| d.len()).unwrap_or(0),
            Some(Err(_)) => return Ok((status, received, false)),
            None => return Ok((status, received, true)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_lives_while_it_flows_and_ends_in_an_error_when_it_stalls() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let body = format!(
        "[limits]\nrequest_timeout_ms = 300\nstream_idle_timeout_ms = 2000\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    for mode in ["fetch", "forward"] {
        // Ten chunks 100 ms apart: a second in all, three times the request timeout, but
        // never idle for long. It arrives whole.
        let (status, received, clean) = stream_through(&host, mode, &upstream_url(&upstream, "/slow?bytes=655360&pause_ms=100")).await?;
        assert_eq!((status, received, clean), (200, 655_360, true), "{mode}: a download that makes progress is not cut");

        // 1 MiB, then the upstream stalls: after the idle timeout the body is stopped, and
        // the client learns it is cut off (an error, not a clean end).
        let (status, received, clean) =
            stream_through(&host, mode, &upstream_url(&upstream, "/stall?bytes=4194304&stall_after=1048576")).await?;
        assert_eq!(status, 200, "{mode}: the head was sent");
        assert!(!clean, "{mode}: a cut-off body ended cleanly after {received} bytes");
        assert!(received <= 1_048_576, "{mode}: {received}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reused_instance_presents_exactly_the_named_certificate_300_times() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    world.add_cert("beta", "beta-client", &all_envs())?;
    let upstream = world.upstream(false).await?;
    // Instances stay warm for ten minutes: on a machine busy with other tests, a pause
    // between two of these requests must not let the idle reaper count as a second instance.
    let body = format!(
        "[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 1000\nidle_timeout_ms = 600000\n\n\
         [[routes]]\npath = \"/users/:id\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 1000\nidle_timeout_ms = 600000\n"
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let metrics = host.handle.app().metrics().clone();
    let target = upstream_url(&upstream, "/who");

    let names = [Some("alpha"), Some("beta"), None];
    for i in 0..300 {
        let name = names[i % 3];
        let reply = host.probe(&target, name).await?;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        let expected = match name {
            Some("alpha") => "alpha-client",
            Some(_) => "beta-client",
            None => "",
        };
        assert_eq!(reply.headers["x-upstream-cn"], expected, "request {i} named {name:?}");
    }
    assert_eq!(metrics.instances_created("/probe"), 1, "300 sequential requests, one instance");
    let seen = upstream.log().requests();
    assert_eq!(seen.len(), 300);
    for (i, request) in seen.iter().enumerate() {
        let expected = names[i % 3].map(|n| format!("{n}-client"));
        assert_eq!(request.client_cn, expected, "upstream request {i}");
    }

    // Route parameters belong to their request only.
    let first = host.get("/users/7", &[("x-mode", "env"), ("x-var", "HOME")]).await?;
    assert_eq!(first.status, 200);
    for id in ["8", "9"] {
        let reply = host.get(&format!("/users/{id}"), &[("x-mode", "param"), ("x-param", "id")]).await?;
        assert_eq!(reply.body, id, "the parameter of an earlier request leaked");
    }
    assert_eq!(metrics.instances_created("/users/:id"), 1);
    Ok(())
}

#[tokio::test]
async fn idle_instances_make_room_for_requests_to_other_routes() -> anyhow::Result<()> {
    let world = World::new()?;
    let body = format!(
        "[limits]\nmax_instances = 1\n\n[[routes]]\npath = \"/a\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 100\n\n\
         [[routes]]\npath = \"/b\"\nhandler = \"{PROBE}\"\nmax_requests_per_instance = 100\n"
    );
    let config = world.config_raw(&body)?;
    let host = world.serve(&config, Environment::Development).await?;
    // /a keeps its instance warm, which takes the only slot; /b still gets served.
    for path in ["/a", "/b", "/a"] {
        let reply = host.get(path, &[("x-mode", "env"), ("x-var", "HOME")]).await?;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_answer_goes_out_while_its_guest_runs_on() -> anyhow::Result<()> {
    let world = World::new()?;
    let guest = edgemtls_e2e::guests::WASI_AFTER_FINISH;
    let body = format!("[limits]\nrequest_timeout_ms = 60000\n\n[[routes]]\npath = \"/after\"\nhandler = \"{guest}\"\n");
    let config = world.config_raw(&body)?;
    let host = world.serve(&config, Environment::Development).await?;
    // A standard wasi:http guest that finishes its body, then computes or waits on a timer
    // until its deadline (a minute): curl has its whole answer long before, over HTTP/1.1
    // and HTTP/2 alike (before: the headers, then nothing until the connection was cut).
    for after in ["spin", "sleep"] {
        for protocol in ["--http1.1", "--http2-prior-knowledge"] {
            let output = tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", protocol, "-H", &format!("x-after: {after}")])
                .arg(format!("http://{}/after", host.addr))
                .output()
                .await?;
            let case = format!("x-after: {after}, curl {protocol}: {}", String::from_utf8_lossy(&output.stderr));
            assert_eq!(output.status.code(), Some(0), "{case}");
            assert_eq!(String::from_utf8_lossy(&output.stdout), "answered\n", "{case}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_frees_its_instance_at_once() -> anyhow::Result<()> {
    let world = World::new()?;
    // The deadline is a minute away: what frees the slots must be the callers leaving.
    let body = format!("[limits]\nrequest_timeout_ms = 60000\nmax_instances = 2\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n");
    let config = world.config_raw(&body)?;
    let host = std::sync::Arc::new(world.serve(&config, Environment::Development).await?);
    let metrics = host.handle.app().metrics().clone();
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());

    // Each round: one spinning guest whose caller closes its HTTP/1.1 connection, one whose
    // caller resets its HTTP/2 stream. Both slots are taken, so others are told 503.
    for round in 1..=2 {
        let before = metrics.instances_created("/probe");
        let http1 = {
            let host = host.clone();
            tokio::spawn(async move { host.get("/probe", &[("x-mode", "spin")]).await })
        };
        let http2 = {
            let request =
                hyper::Request::get(format!("http://{}/probe", host.addr)).header("x-mode", "spin").body(http_body_util::Empty::new())?;
            let pending = h2.request(request);
            tokio::spawn(pending)
        };
        wait_until("both slots are taken", || metrics.instances_created("/probe") == before + 2).await;
        let busy = host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?;
        assert_eq!(busy.status, 503, "{}", busy.body);

        http1.abort();
        http2.abort();
        let freed = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = host.get("/probe", &[("x-mode", "env"), ("x-var", "HOME")]).await?;
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 503, "{}", reply.body);
            assert!(Instant::now() < freed, "round {round}: the departed callers' guests kept their slots");
        }
    }
    Ok(())
}
