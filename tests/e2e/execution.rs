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
    assert_eq!(metrics.instances_created("/reused"), 2, "max_requests_per_instance = 5");

    // Per-request limits start over on a reused instance: each flood sends exactly 5.
    let target = upstream_url(&upstream, "/flood");
    for round in 1..=2 {
        let flood = host.get("/reused", &[("x-mode", "flood"), ("x-target", &target), ("x-certificate", "alpha")]).await?;
        assert_eq!(flood.json()?["reason"], "outbound-limit", "{}", flood.body);
        let flooded = upstream.log().requests().iter().filter(|r| r.path == "/flood").count();
        assert_eq!(flooded, 5 * round, "round {round}: the outbound count must restart with each request");
    }

    // An instance that trapped is never reused.
    let before = metrics.instances_created("/reused");
    assert_eq!(host.get("/reused", &[("x-mode", "trap")]).await?.status, 500);
    assert_eq!(host.get("/reused", &[("x-mode", "env"), ("x-var", "HOME")]).await?.status, 200);
    assert_eq!(metrics.instances_created("/reused"), before + 1, "the trapped instance was replaced");
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
    let body = format!(
        "[limits]\nrequest_timeout_ms = 20000\nmax_instances = 2\n\n[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n"
    );
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
