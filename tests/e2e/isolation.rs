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
