//! What an upstream sees through the host, and the five ways a name can fail.

use edgemtls_host::Environment;
use time::{Duration, OffsetDateTime};

use crate::harness::*;

#[tokio::test]
async fn named_certificate_reaches_the_upstream_and_none_is_refused() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let target = upstream_url(&upstream, "/named");

    let reply = host.probe(&target, Some("alpha")).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], "alpha-client");
    let seen = upstream.log().requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].client_cn.as_deref(), Some("alpha-client"));

    let refused_before = upstream.log().refused_handshakes();
    let reply = host.probe(&target, None).await?;
    assert_eq!(reply.status, 502, "{}", reply.body);
    // The guest learns why, over HTTP/2 too (where the alert arrives as text; see
    // `upstream::failure`): the upstream wants a certificate and none was presented.
    assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:client-certificate-required");
    let detail = reply.json()?["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("requires a client certificate") && detail.contains("certificate_required"), "{detail}");
    assert_eq!(upstream.log().requests().len(), 1, "the upstream must not have served a request without a certificate");
    assert!(upstream.log().refused_handshakes() > refused_before, "the upstream refused the handshake");
    Ok(())
}

#[tokio::test]
async fn each_certificate_failure_reaches_the_guest_as_its_own_variant() -> anyhow::Result<()> {
    let world = World::new()?;
    let now = OffsetDateTime::now_utc();
    world.add_cert("disabled_cert", "disabled", &all_envs())?;
    world.store()?.disable("disabled_cert", false)?;
    world.add_cert("prod_only", "prod-only", &[Environment::Production])?;
    world.add_cert_with_validity("old_cert", "old", &all_envs(), now - Duration::days(10), now - Duration::days(1))?;
    world.add_cert_with_validity("future_cert", "future", &all_envs(), now + Duration::days(1), now + Duration::days(10))?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let target = upstream_url(&upstream, "/");

    for (name, kind) in [
        ("ghost", "not-found"),
        ("disabled_cert", "disabled"),
        ("prod_only", "not-in-environment"),
        ("old_cert", "expired"),
        ("future_cert", "not-yet-valid"),
    ] {
        let reply = host.probe(&target, Some(name)).await?;
        assert_eq!(reply.status, 500, "{name}: {}", reply.body);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        let problem = reply.json()?;
        assert_eq!(problem["type"], format!("urn:edgemtls:problem:certificate-{kind}"), "{name}");
        assert_eq!(problem["certificate"], name);
        // Nothing was sent: not an upstream failure.
        assert_eq!(problem["title"], "Client certificate cannot be used", "{name}");
    }
    assert_eq!(upstream.log().connections(), 0, "nothing may be sent for a refused name");
    Ok(())
}

#[tokio::test]
async fn disabling_a_certificate_takes_effect_without_restart() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("rotating", "rotating-client", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let target = upstream_url(&upstream, "/");
    assert_eq!(host.probe(&target, Some("rotating")).await?.status, 200);

    // Another process (the CLI) disables it.
    world.store()?.disable("rotating", false)?;
    // The store is polled every 250 ms; the deadline is generous for a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = host.probe(&target, Some("rotating")).await?;
        if reply.status == 500 {
            assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:certificate-disabled");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still served 10 s after `cert disable`");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And enabling it again brings it back.
    world.store()?.enable("rotating")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.probe(&target, Some("rotating")).await?.status != 200 {
        assert!(std::time::Instant::now() < deadline, "still refused 10 s after `cert enable`");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
