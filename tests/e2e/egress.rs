//! Where handlers may send requests: what their route names, what `allowed_outbound_hosts`
//! adds, and never link-local addresses or the host's own listeners (admin and routes).

use edgemtls_host::Environment;

use crate::harness::*;

#[tokio::test]
async fn a_route_calls_what_its_config_names_and_nothing_else() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("alpha", "alpha-client", &all_envs())?;
    let named = world.upstream(true).await?;
    let other = world.upstream(true).await?;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let other_port = other.addr().port();
    let body = format!(
        "admin_listen = \"127.0.0.1:{admin_port}\"\n\n\
         [[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n\n\
         [[routes]]\npath = \"/open\"\nhandler = \"{PROBE}\"\nallowed_outbound_hosts = [\"https://localhost:{other_port}\", \"*\"]\n"
    );
    // `world.config` adds an [[upstreams]] entry for `named` only.
    let config = world.config(&body, named.addr())?;
    let host = world.serve(&config, Environment::Development).await?;

    // The [[upstreams]] host is allowed by default; another one is not, and is never contacted.
    assert_eq!(host.probe(&upstream_url(&named, "/ok"), Some("alpha")).await?.status, 200);
    let refused = host.probe(&upstream_url(&other, "/no"), Some("alpha")).await?;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(refused.json()?["reason"], "egress-denied");
    assert!(refused.json()?["detail"].as_str().unwrap_or_default().contains("allowed_outbound_hosts"), "{}", refused.body);
    assert_eq!(other.log().connections(), 0, "a denied upstream must not be contacted");

    // A route that lists it may call it (trusted through ca_bundle only for `named`, so the
    // TLS failure, not the egress check, is what stops this one).
    let listed = host.get("/open", &[("x-target", &upstream_url(&other, "/yes")), ("x-certificate", "alpha")]).await?;
    assert_ne!(listed.json()?["reason"], "egress-denied", "{}", listed.body);

    // Even with "*": never link-local, never the admin listener (by address or by name).
    for target in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://127.0.0.1:{admin_port}/healthz"),
        format!("http://localhost:{admin_port}/healthz"),
    ] {
        let reply = host.get("/open", &[("x-target", &target)]).await?;
        assert_eq!(reply.status, 502, "{target}: {}", reply.body);
        assert_eq!(reply.json()?["reason"], "egress-denied", "{target}: {}", reply.body);
    }
    Ok(())
}

/// Requests the host has answered, over every route and status.
fn requests_served(host: &Served) -> u64 {
    let metrics = host.handle.app().metrics().encode();
    metrics
        .lines()
        .filter(|line| line.starts_with("edgemtls_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_route_that_forwards_to_its_own_host_is_refused_not_looped() -> anyhow::Result<()> {
    let world = World::new()?;
    // The host's port must be in its config, so it is chosen before the host listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let body = format!(
        "[[routes]]\npath = \"/by-address\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"http://127.0.0.1:{port}\"\n\n\
         [[routes]]\npath = \"/by-name\"\nhandler = \"url-forward\"\n[routes.options]\nbaseUrl = \"http://localhost:{port}\"\n"
    );
    let config = world.config_raw(&body)?;
    let host = world.serve_on(&config, Environment::Development, format!("127.0.0.1:{port}").parse()?).await?;

    // By address the connector refuses before connecting; by name, after connecting and
    // before sending: either way the host answers the one request it was sent.
    for (served, path) in [(1, "/by-address"), (2, "/by-name")] {
        let reply = host.get(path, &[]).await?;
        assert_eq!(reply.status, 502, "{path}: {}", reply.body);
        assert_eq!(reply.json()?["reason"], "egress-denied", "{path}: {}", reply.body);
        let detail = reply.json()?["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("this host's own listener") && detail.contains(&port.to_string()), "{path}: {detail}");
        assert_eq!(requests_served(&host), served, "{path}: the host saw a request other than the caller's");
    }
    Ok(())
}
