//! Rotation without restart (Zuplo's procedure) under load, and delete protection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use edgemtls_host::Environment;
use edgemtls_host::config::Config;
use edgemtls_host::store::StoreError;

use crate::harness::*;

fn config_text(upstream_port: u16, certificate: &str) -> String {
    format!(
        r#"[environments.production.vars]
BACKEND_MTLS_CERT = "{certificate}"

[[routes]]
path = "/api"
handler = "url-forward"
[routes.options]
baseUrl = "https://localhost:{upstream_port}"
mtlsCertificate = "$env(BACKEND_MTLS_CERT)"
"#
    )
}

/// Load from `clients` tasks, back to back, until `stop` is set; counts what came back.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(host: &Arc<Served>, clients: usize, path: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let workers = (0..clients)
            .map(|_| {
                let (host, stop, served, failures) = (host.clone(), stop.clone(), served.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match host.get(path, &[]).await {
                            Ok(reply) if reply.status == 200 => served.fetch_add(1, Ordering::SeqCst),
                            Ok(reply) => {
                                eprintln!("failed: {} {}", reply.status, reply.body);
                                failures.fetch_add(1, Ordering::SeqCst)
                            }
                            Err(error) => {
                                eprintln!("failed: {error}");
                                failures.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Self { stop, served, failures, workers }
    }

    /// Waits until `more` further requests have been served (deadline: 60 s).
    async fn serve_more(&self, more: usize) -> anyhow::Result<()> {
        let target = self.served.load(Ordering::SeqCst) + more;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.served.load(Ordering::SeqCst) < target {
            anyhow::ensure!(self.failures.load(Ordering::SeqCst) == 0, "requests failed");
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the load made no progress");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the clients; returns (served, failed).
    async fn finish(self) -> anyhow::Result<(usize, usize)> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await?;
        }
        Ok((self.served.load(Ordering::SeqCst), self.failures.load(Ordering::SeqCst)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zuplo_rotation_under_load_has_zero_failures() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_2025", "billing-2025", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "billing_2025"), upstream.addr())?;
    let host = Arc::new(world.serve(&config_path, Environment::Production).await?);
    let load = Load::start(&host, 4, "/api/charge");
    load.serve_more(20).await?;

    // 1. Create the new certificate under a new name.
    world.add_cert("billing_2026", "billing-2026", &[Environment::Production])?;
    // Disabling the old one now, before the switch, is refused and names the deployment.
    let mut store = world.store()?;
    let refused = store.disable("billing_2025", false).unwrap_err();
    assert!(matches!(refused, StoreError::WouldCutOff { .. }), "{refused}");
    assert!(refused.to_string().contains("production"), "{refused}");
    assert!(store.find("billing_2025")?.enabled, "a refused disable changed the certificate");
    load.serve_more(20).await?;

    // 2. Point the variable at it, 3. reload, at once (what `edgemtls reload` does). It
    // returns when the new config serves and the requests on the old one have finished.
    world.config(&config_text(port, "billing_2026"), upstream.addr())?;
    let report = host.handle.app().reload(Config::load(&config_path)?).await.map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.drained, "requests on the old config did not finish");
    assert_eq!(report.certificates, vec!["billing_2026".to_string()]);
    let switched_at = upstream.log().requests().len();

    // 4. Disable the old certificate, 5. delete it: both allowed now, straight away.
    store.disable("billing_2025", false)?;
    store.delete("billing_2025")?;
    load.serve_more(40).await?;

    let (served, failed) = load.finish().await?;
    assert_eq!(failed, 0, "requests failed during the rotation");
    assert!(served >= 80, "too little load to mean anything");
    let seen = upstream.log().requests();
    for request in &seen {
        let cn = request.client_cn.as_deref();
        assert!(matches!(cn, Some("billing-2025" | "billing-2026")), "a request presented {cn:?}");
    }
    assert!(seen[..switched_at].iter().any(|r| r.client_cn.as_deref() == Some("billing-2025")));
    // Once the reload returned, nothing presented the old certificate any more.
    assert!(seen.len() > switched_at, "no load after the switch");
    assert!(
        seen[switched_at..].iter().all(|r| r.client_cn.as_deref() == Some("billing-2026")),
        "the old certificate was still presented after the reload returned"
    );
    Ok(())
}

#[tokio::test]
async fn a_reload_sees_a_certificate_created_just_before() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("first", "first", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "first"), upstream.addr())?;
    let host = world.serve(&config_path, Environment::Production).await?;

    // No wait for the store poll: the reload itself reads the store.
    world.add_cert("second", "second", &[Environment::Production])?;
    world.config(&config_text(port, "second"), upstream.addr())?;
    host.handle.app().reload(Config::load(&config_path)?).await.map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let reply = host.get("/api/x", &[]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], "second");
    Ok(())
}

#[tokio::test]
async fn disable_and_rescope_are_refused_while_a_live_deployment_uses_the_certificate() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("live", "live", &[Environment::Production, Environment::Preview])?;
    let upstream = world.upstream(true).await?;
    let config_path = world.config(&config_text(upstream.addr().port(), "live"), upstream.addr())?;
    let host = world.serve(&config_path, Environment::Production).await?;
    let deployment = world.store()?.live_deployments()?.remove(0);

    let mut store = world.store()?;
    let refused = store.rescope("live", &[Environment::Preview], false).unwrap_err();
    assert!(matches!(refused, StoreError::WouldCutOff { .. }), "{refused}");
    assert!(refused.to_string().contains(&deployment.id), "{refused}");
    // A scope that keeps production is fine.
    store.rescope("live", &[Environment::Production], false)?;
    let refused = store.disable("live", false).unwrap_err();
    assert!(refused.to_string().contains(&deployment.id), "{refused}");
    assert_eq!(host.get("/api/x", &[]).await?.status, 200, "a refused change cut the deployment off");
    // --force does it, and the deployment's requests then fail as they must.
    store.disable("live", true)?;
    assert!(!store.find("live")?.enabled);
    Ok(())
}

#[tokio::test]
async fn delete_is_refused_while_a_live_deployment_references_the_certificate() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("pinned", "pinned", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "pinned"), upstream.addr())?;
    let mut host = world.serve(&config_path, Environment::Production).await?;

    let mut store = world.store()?;
    let deployments = store.live_deployments()?;
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].certificates, vec!["pinned".to_string()]);
    assert_eq!(deployments[0].environment, Environment::Production);

    store.disable("pinned", true)?;
    let err = store.delete("pinned").unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&deployments[0].id) && text.contains("production"), "{text}");
    assert!(store.find("pinned").is_ok(), "the certificate must still be there");

    // The deployment stops referencing it: reload, at once, a config naming a new one.
    store.enable("pinned")?;
    world.add_cert("replacement", "replacement", &[Environment::Production])?;
    world.config(&config_text(port, "replacement"), upstream.addr())?;
    host.handle.app().reload(Config::load(&config_path)?).await.map_err(|p| anyhow::anyhow!("{p:?}"))?;
    store.disable("pinned", false)?;
    store.delete("pinned")?;

    // A stopped host no longer holds anything.
    host.handle.stop().await;
    assert!(store.live_deployments()?.is_empty(), "the deployment was not removed when the host stopped");
    Ok(())
}

#[tokio::test]
async fn a_reload_with_problems_changes_nothing() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("current", "current", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "current"), upstream.addr())?;
    let host = world.serve(&config_path, Environment::Production).await?;

    std::fs::write(&config_path, config_text(port, "no_such_cert"))?;
    let problems = host.handle.app().reload(Config::load(&config_path)?).await.unwrap_err();
    assert!(problems.iter().any(|p| p.0.contains("certificate 'no_such_cert' not found")), "{problems:?}");
    let reply = host.get("/api/still", &[]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], "current");
    Ok(())
}
