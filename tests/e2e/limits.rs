//! A misbehaving guest costs its request, never the host.

use edgemtls_host::Environment;

use crate::harness::*;

#[tokio::test]
async fn traps_timeouts_memory_and_outbound_caps() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha", &all_envs())?;
    let upstream = world.upstream(true).await?;
    let body = format!(
        "[limits]\nrequest_timeout_ms = 1500\nmemory_mib = 32\nmax_outbound_requests = 5\n{}",
        probe_routes("https://unused.invalid/")
    );
    let config = world.config(&body, upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    let trap = host.get("/probe", &[("x-mode", "trap")]).await?;
    assert_eq!(trap.status, 500, "{}", trap.body);
    assert_eq!(trap.headers["content-type"], "application/problem+json");
    assert_eq!(trap.json()?["type"], "urn:edgemtls:problem:handler-failed");
    // The trap's text and backtrace go to the log, not to the caller.
    assert!(!trap.body.contains("probe asked to trap") && !trap.body.contains("wasm"), "{}", trap.body);

    let spin = host.get("/probe", &[("x-mode", "spin")]).await?;
    assert_eq!(spin.status, 504, "{}", spin.body);
    assert_eq!(spin.json()?["type"], "urn:edgemtls:problem:handler-timeout");

    let oom = host.get("/probe", &[("x-mode", "oom")]).await?;
    assert_eq!(oom.status, 500, "{}", oom.body);
    // Told apart by the limiter's record, not by the trap's message.
    assert_eq!(oom.json()?["type"], "urn:edgemtls:problem:handler-memory-limit", "{}", oom.body);

    let target = upstream_url(&upstream, "/flood");
    let flood = host.get("/probe", &[("x-mode", "flood"), ("x-target", &target), ("x-certificate", "alpha")]).await?;
    assert_eq!(flood.status, 502, "{}", flood.body);
    assert_eq!(flood.json()?["reason"], "outbound-limit", "{}", flood.body);
    assert!(flood.body.contains("at most 5 outbound requests"), "{}", flood.body);
    assert_eq!(upstream.log().requests().len(), 5);

    // The host is still fine.
    let ok = host.probe(&upstream_url(&upstream, "/after"), Some("alpha")).await?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    Ok(())
}

#[tokio::test]
async fn unknown_route_is_a_problem_404() -> anyhow::Result<()> {
    let world = World::new()?;
    let upstream = world.upstream(true).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = world.serve(&config, Environment::Development).await?;
    let reply = host.get("/nowhere", &[]).await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:no-route");
    Ok(())
}
