//! The built-in handlers: url-forward and url-rewrite, `$env()` per environment, and bodies
//! that stream both ways.

use bytes::Bytes;
use edgemtls_host::Environment;
use http_body_util::BodyExt;

use crate::harness::*;

fn forward_config(upstream_port: u16, extra: &str) -> String {
    format!(
        r#"[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"
[environments.preview.vars]
BACKEND_MTLS_CERT = "billing_staging"

[[routes]]
path = "/api"
handler = "url-forward"
[routes.options]
baseUrl = "https://localhost:{upstream_port}"
mtlsCertificate = "$env(BACKEND_MTLS_CERT)"
{extra}
"#
    )
}

#[tokio::test]
async fn url_forward_picks_the_certificate_per_environment() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &[Environment::Production])?;
    world.add_cert("billing_staging", "billing-staging", &[Environment::Preview])?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&forward_config(upstream.addr().port(), ""), upstream.addr())?;

    for (environment, cn) in [(Environment::Production, "billing-prod"), (Environment::Preview, "billing-staging")] {
        let host = world.serve(&config, environment).await?;
        let reply = host.get("/api/items?page=2", &[("x-expect-cn", cn), ("connection", "keep-alive")]).await?;
        assert_eq!(reply.status, 200, "{environment}: {}", reply.body);
        assert_eq!(reply.json()?["client_cn"], cn);
        let seen = upstream.log().requests().pop().ok_or_else(|| anyhow::anyhow!("nothing reached the upstream"))?;
        assert_eq!(seen.path, "/api/items?page=2", "path and query are forwarded");
        assert_eq!(seen.expected_cn.as_deref(), Some(cn), "headers are forwarded");
        assert_eq!(seen.method, "GET");
    }
    Ok(())
}

/// Empty path segments are dropped before routing, so the upstream gets the path the route
/// matched (issue 30, item 8): `//api/x` reaches `/prefix/api/x`, not `/prefix//api/x`.
#[tokio::test]
async fn url_forward_sends_a_path_without_empty_segments() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let body = format!(
        r#"[[routes]]
path = "/api"
handler = "url-forward"
[routes.options]
baseUrl = "https://localhost:{}/prefix"
mtlsCertificate = "billing_prod"
"#,
        upstream.addr().port()
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    for (path, expected) in [("//api/x?y=1", "/prefix/api/x?y=1"), ("/api//x//", "/prefix/api/x/")] {
        let reply = host.get(path, &[]).await?;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let seen = upstream.log().requests().pop().ok_or_else(|| anyhow::anyhow!("nothing reached the upstream"))?;
        assert_eq!(seen.path, expected, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn url_forward_without_search_and_with_a_body() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&forward_config(upstream.addr().port(), "forwardSearch = false"), upstream.addr())?;
    let host = world.serve(&config, Environment::Production).await?;
    let reply = host.request("POST", "/api/orders?debug=1", &[], Bytes::from_static(b"{\"qty\":3}")).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = upstream.log().requests().pop().ok_or_else(|| anyhow::anyhow!("nothing reached the upstream"))?;
    assert_eq!(seen.path, "/api/orders");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.received_bytes, 9);
    Ok(())
}

#[tokio::test]
async fn url_rewrite_builds_the_url_from_route_parameters() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("users_api", "users-api", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let body = format!(
        r#"[environments.development.vars]
USERS_CERT = "users_api"

[[routes]]
path = "/users/:id"
handler = "url-rewrite"
[routes.options]
rewritePattern = "https://localhost:{port}/v2/accounts/${{params.id}}?${{query}}"
mtlsCertificate = "$env(USERS_CERT)"
"#
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    let reply = host.get("/users/42?fields=name", &[]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], "users-api");
    assert_eq!(reply.json()?["path"], "/v2/accounts/42?fields=name");

    let reply = host.get("/users/7", &[]).await?;
    assert_eq!(reply.json()?["path"], "/v2/accounts/7", "an empty query leaves no '?'");
    Ok(())
}

/// A caller's header value stays one path segment or one query value: what the upstream saw
/// for hostile values (issue 30, item 4), and no request at all for a climbing `..`.
#[tokio::test]
async fn url_rewrite_keeps_caller_values_inside_their_segment_or_query_value() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("users_api", "users-api", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let body = format!(
        r#"[[routes]]
path = "/u/:id"
handler = "url-rewrite"
[routes.options]
rewritePattern = "https://localhost:{port}/u/${{params.id}}/t/${{headers.x-tenant}}${{search}}"
mtlsCertificate = "users_api"

[[routes]]
path = "/lookup/:id"
handler = "url-rewrite"
[routes.options]
rewritePattern = "https://localhost:{port}/lookup?id=${{params.id}}&tenant=${{headers.x-tenant}}${{search}}"
mtlsCertificate = "users_api"
"#
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    let cases = [
        ("/u/42?q=1", "acme", "/u/42/t/acme?q=1"),
        ("/u/42?q=1", "a?admin=1", "/u/42/t/a%3Fadmin%3D1?q=1"),
        ("/u/42?q=1", "a#frag", "/u/42/t/a%23frag?q=1"),
        ("/u/42?q=1", "a/b", "/u/42/t/a%2Fb?q=1"),
        ("/u/42?q=1", "%2E%2E", "/u/42/t/%252E%252E?q=1"),
        ("/lookup/42?q=1", "a&admin=1", "/lookup?id=42&tenant=a%26admin%3D1&q=1"),
        ("/lookup/42?q=1", "../../admin", "/lookup?id=42&tenant=..%2F..%2Fadmin&q=1"),
    ];
    for (path, tenant, expected) in cases {
        let reply = host.get(path, &[("x-tenant", tenant)]).await?;
        assert_eq!(reply.status, 200, "{tenant}: {}", reply.body);
        let seen = upstream.log().requests().pop().ok_or_else(|| anyhow::anyhow!("nothing reached the upstream"))?;
        assert_eq!(seen.path, expected, "x-tenant: {tenant}");
    }

    // In the path, `..` is refused rather than escaped: nginx reads `%2E%2E` and `..%2F` as `..`.
    let served = upstream.log().served();
    for tenant in ["../../admin", "..", ".", "%2E%2E/..", "..;x"] {
        let reply = host.get("/u/42?q=1", &[("x-tenant", tenant)]).await?;
        assert_eq!(reply.status, 400, "{tenant}: {}", reply.body);
        assert!(reply.body.contains("${headers.x-tenant}"), "{tenant}: {}", reply.body);
    }
    assert_eq!(upstream.log().served(), served, "a refused value sends nothing");
    Ok(())
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_stream_each_way_in_bounded_memory() -> anyhow::Result<()> {
    const SIZE: u64 = 50 << 20;
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&forward_config(upstream.addr().port(), ""), upstream.addr())?;
    let host = world.serve(&config, Environment::Production).await?;
    // Warm up: compile, connect, and allocate what a request needs.
    assert_eq!(host.get("/api/warm?bytes=1024", &[]).await?.status, 200);

    // Reset the peak-RSS counter so it measures the transfers alone (Linux: clear_refs 5).
    let can_measure = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let baseline = rss_kib();

    // Upload: a body generated chunk by chunk, never held whole by the test either.
    let chunks =
        (0..SIZE / (64 << 10)).map(|_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(&[b'u'; 64 << 10]))));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let reply = host.request_streaming("POST", "/api/upload", body).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["received_bytes"], SIZE);

    // Download: count the bytes as they arrive.
    let response = host.raw_get(&format!("/api/download?bytes={SIZE}")).await?;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        received += frame?.data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(received, SIZE);

    if let (true, Some(baseline), Some(peak)) = (can_measure, baseline, peak_rss_kib()) {
        let growth_mib = peak.saturating_sub(baseline) / 1024;
        // Buffering either body whole would add at least 50 MiB.
        eprintln!("peak RSS growth while streaming 2 x 50 MiB: {growth_mib} MiB");
        assert!(growth_mib < 40, "peak RSS grew by {growth_mib} MiB while streaming 2 x 50 MiB");
    } else {
        eprintln!("note: peak RSS not measurable here; only byte counts were checked");
    }
    Ok(())
}

#[tokio::test]
async fn url_forward_never_leaves_its_base_path_and_drops_connection_listed_headers() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let base = upstream_url(&upstream, "/base");
    let body = format!(
        "[[routes]]\npath = \"/hdr\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"{base}\"\nmtlsCertificate = \"alpha\"\n"
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    // Dot segments resolve before routing; the upstream sees a path under its base.
    let reply = host.get("/hdr/x/../y", &[]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["path"], "/base/hdr/y");

    // Climbing out, or hiding the climb in encodings, is refused before anything is sent.
    for path in ["/hdr/../../admin", "/hdr/..%2f..%2fadmin", "/hdr/%2e%2e/%2e%2e/admin", "/hdr/..%5c..%5cadmin"] {
        let reply = host.get(path, &[]).await?;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:bad-path", "{path}");
    }
    // A route's prefix cannot be borrowed by a path that leaves it.
    let reply = host.get("/hdr/../other", &[]).await?;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(upstream.log().requests().len(), 1, "only the first request may reach the upstream");

    // A header named in Connection is hop-by-hop: it is not forwarded.
    let reply = host.get("/hdr/h", &[("connection", "x-internal-token"), ("x-internal-token", "secret"), ("x-kept", "1")]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = reply.json()?["headers"].as_array().cloned().unwrap_or_default();
    assert!(seen.iter().any(|h| h == "x-kept"), "{seen:?}");
    assert!(!seen.iter().any(|h| h == "x-internal-token"), "a Connection-listed header was forwarded: {seen:?}");
    Ok(())
}
