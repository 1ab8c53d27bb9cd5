//! Connection pools never mix identities, and connections are reused within one.

use std::collections::HashMap;
use std::sync::Arc;

use edgemtls_host::Environment;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_identities_never_share_a_connection() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("ident_a", "client-a", &all_envs())?;
    world.add_cert("ident_b", "client-b", &all_envs())?;
    // The upstream asks for a certificate but accepts none, so it can report "none" too.
    let upstream = world.upstream(false).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = Arc::new(world.serve(&config, Environment::Development).await?);
    let target = upstream_url(&upstream, "/isolation");

    let identities = [(Some("ident_a"), "client-a"), (Some("ident_b"), "client-b"), (None, "none")];
    let mut tasks = Vec::new();
    // 200 requests, interleaved, 8 at a time over keep-alive.
    for worker in 0..8 {
        let host = host.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let (name, expect) = identities[(worker + i) % 3];
                let mut headers = vec![("x-target", target.as_str()), ("x-expect-cn", expect)];
                if let Some(name) = name {
                    headers.push(("x-certificate", name));
                }
                let reply = host.get("/probe", &headers).await?;
                anyhow::ensure!(reply.status == 200, "request {worker}/{i}: {}", reply.body);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    let seen = upstream.log().requests();
    assert_eq!(seen.len(), 200);
    let mut by_connection: HashMap<usize, &str> = HashMap::new();
    for request in &seen {
        let actual = request.client_cn.as_deref().unwrap_or("none");
        assert_eq!(Some(actual), request.expected_cn.as_deref(), "a request was sent with another identity's certificate");
        let first = by_connection.entry(request.connection).or_insert(actual);
        assert_eq!(*first, actual, "connection {} carried two identities", request.connection);
    }
    // Keep-alive: far fewer connections than requests (at most one per identity per
    // concurrent request).
    let connections = upstream.log().handshakes();
    assert!(connections <= 3 * 8, "{connections} handshakes for 200 requests: connections are not reused");
    assert!(connections >= 3, "each identity needs its own connection");
    Ok(())
}

/// An identity opens many new connections to one upstream at once (here the upstream closes
/// each after one response, as many do): every one resumes its TLS session, and a resumed
/// session still presents the certificate of the identity that made it.
///
/// TLS 1.3 tickets are single-use. With rustls' own cache (8 tickets per server), the
/// second burst below resumed 8 of 12 connections per identity and made full handshakes
/// for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_new_connections_resume_and_keep_their_identity() -> anyhow::Result<()> {
    const PER_IDENTITY: usize = 12;
    let world = World::new()?;
    world.add_cert("ident_a", "client-a", &all_envs())?;
    world.add_cert("ident_b", "client-b", &all_envs())?;
    let upstream = world.closing_upstream(true).await?;
    let config = world.config(&probe_routes("https://unused.invalid/"), upstream.addr())?;
    let host = Arc::new(world.serve(&config, Environment::Development).await?);
    let target = upstream_url(&upstream, "/resumption");

    // All requests of a burst at once, the two identities interleaved.
    let burst = || async {
        let mut tasks = Vec::new();
        for i in 0..2 * PER_IDENTITY {
            let (name, expect) = if i % 2 == 0 { ("ident_a", "client-a") } else { ("ident_b", "client-b") };
            let host = host.clone();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let headers = [("x-target", target.as_str()), ("x-expect-cn", expect), ("x-certificate", name)];
                let reply = host.get("/probe", &headers).await?;
                anyhow::ensure!(reply.status == 200, "request {i}: {}", reply.body);
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    };

    // The first burst finds no tickets: full handshakes, each leaving tickets behind.
    burst().await?;
    let log = upstream.log();
    anyhow::ensure!(log.handshakes() == 2 * PER_IDENTITY, "{} handshakes for {} requests", log.handshakes(), 2 * PER_IDENTITY);
    let resumed_before = log.resumed_handshakes();
    burst().await?;
    let resumed = log.resumed_handshakes() - resumed_before;
    anyhow::ensure!(
        resumed == 2 * PER_IDENTITY,
        "{resumed} of {} new connections resumed their session; the rest made full handshakes",
        2 * PER_IDENTITY
    );
    for request in log.requests() {
        let actual = request.client_cn.as_deref().unwrap_or("none");
        anyhow::ensure!(
            Some(actual) == request.expected_cn.as_deref(),
            "a request named {:?} but the upstream saw {actual}: a session crossed identities",
            request.expected_cn
        );
    }
    anyhow::ensure!(log.mismatched() == 0 && log.requests().len() == 4 * PER_IDENTITY, "{} requests seen", log.requests().len());
    Ok(())
}
