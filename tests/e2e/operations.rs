//! The admin listener: health and Prometheus metrics, including certificate expiry.

use edgemtls_host::Environment;
use http_body_util::BodyExt;

use crate::harness::*;

#[tokio::test]
async fn healthz_and_metrics() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let body = format!("admin_listen = \"127.0.0.1:{admin_port}\"\n{}", probe_routes("https://unused.invalid/"));
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    assert_eq!(host.probe(&upstream_url(&upstream, "/m"), Some("alpha")).await?.status, 200);
    assert_eq!(host.probe(&upstream_url(&upstream, "/m"), Some("ghost")).await?.status, 500);

    let client = client();
    let get = |path: &str| {
        let request = hyper::Request::get(format!("http://127.0.0.1:{admin_port}{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()).boxed_unsync());
        let client = client.clone();
        async move {
            let response = client.request(request?).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };
    // The admin listener is bound before the server is handed back.
    let (status, body) = get("/healthz").await?;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["status"], "ok");
    assert_eq!(json["environment"], "development");

    let (status, metrics) = get("/metrics").await?;
    assert_eq!(status, 200);
    for expected in [
        "edgemtls_requests_total{route=\"/probe\",status=\"200\"} 1",
        "edgemtls_requests_total{route=\"/probe\",status=\"500\"} 1",
        "edgemtls_outbound_requests_total{certificate=\"alpha\",outcome=\"200\"} 1",
        "edgemtls_outbound_requests_total{certificate=\"(unknown)\",outcome=\"certificate-not-found\"} 1",
        "edgemtls_request_duration_seconds_count{route=\"/probe\"} 2",
        "edgemtls_certificate_expiry_seconds{name=\"alpha\",environment=\"development\"}",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in:\n{metrics}");
    }
    // A name the guest made up is not a label of its own.
    assert!(!metrics.contains("ghost"), "{metrics}");
    let expiry: f64 = metrics
        .lines()
        .find(|l| l.starts_with("edgemtls_certificate_expiry_seconds{name=\"alpha\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no expiry value"))?;
    // add_cert makes 30-day certificates.
    assert!((29.0 * 86400.0..=30.0 * 86400.0).contains(&expiry), "{expiry}");
    Ok(())
}
