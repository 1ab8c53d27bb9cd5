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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zuplo_rotation_under_load_has_zero_failures() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_2025", "billing-2025", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "billing_2025"), upstream.addr())?;
    let host = Arc::new(world.serve(&config_path, Environment::Production).await?);

    // Load: 4 workers, back to back, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (host, stop, failures, served) = (host.clone(), stop.clone(), failures.clone(), served.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match host.get("/api/charge", &[]).await {
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
        }));
    }
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(300).await;

    // 1. Create the new certificate under a new name.
    world.add_cert("billing_2026", "billing-2026", &[Environment::Production])?;
    pause(300).await;
    // 2. Point the environment variable at it, 3. reload (what SIGHUP / --watch do).
    std::fs::write(&config_path, format!(
        "{}\n[[upstreams]]\nhosts = [\"localhost:{port}\"]\nca_bundle = \"pki/ca.pem\"\n",
        config_text(port, "billing_2026")
    ))?;
    let warnings = host.handle.app().reload(&Config::load(&config_path)?).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert!(warnings.is_empty(), "{warnings:?}");
    let switched_at = upstream.log().requests().len();
    // Let requests that started on the old config finish.
    pause(1000).await;
    // 4. Disable the old certificate, 5. delete it.
    let mut store = world.store()?;
    store.set_enabled("billing_2025", false)?;
    pause(500).await;
    store.delete("billing_2025")?;
    pause(500).await;

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await?;
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "requests failed during the rotation");
    let seen = upstream.log().requests();
    assert!(served.load(Ordering::SeqCst) >= 20, "too little load to mean anything");
    for request in &seen {
        let cn = request.client_cn.as_deref();
        assert!(matches!(cn, Some("billing-2025" | "billing-2026")), "a request presented {cn:?}");
    }
    assert!(seen[..switched_at].iter().any(|r| r.client_cn.as_deref() == Some("billing-2025")));
    // After the switch settled, only the new certificate is presented.
    let settled = switched_at + 8;
    assert!(seen.len() > settled, "no load after the switch");
    assert!(
        seen[settled..].iter().all(|r| r.client_cn.as_deref() == Some("billing-2026")),
        "the old certificate was still presented after the reload"
    );
    Ok(())
}

#[tokio::test]
async fn delete_is_refused_while_a_live_deployment_references_the_certificate() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("pinned", "pinned", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    let port = upstream.addr().port();
    let config_path = world.config(&config_text(port, "pinned"), upstream.addr())?;
    let host = world.serve(&config_path, Environment::Production).await?;

    let mut store = world.store()?;
    let deployments = store.live_deployments()?;
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].certificates, vec!["pinned".to_string()]);
    assert_eq!(deployments[0].environment, Environment::Production);

    store.set_enabled("pinned", false)?;
    let err = store.delete("pinned").unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&deployments[0].id) && text.contains("production"), "{text}");
    assert!(store.find("pinned").is_ok(), "the certificate must still be there");

    // The deployment stops referencing it: reload a config without it.
    store.set_enabled("pinned", true)?;
    world.add_cert("replacement", "replacement", &[Environment::Production])?;
    std::fs::write(&config_path, format!(
        "{}\n[[upstreams]]\nhosts = [\"localhost:{port}\"]\nca_bundle = \"pki/ca.pem\"\n",
        config_text(port, "replacement")
    ))?;
    host.handle.app().reload(&Config::load(&config_path)?).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    store.set_enabled("pinned", false)?;
    store.delete("pinned")?;

    // A stopped host no longer holds anything.
    drop(host);
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let problems = host.handle.app().reload(&Config::load(&config_path)?).unwrap_err();
    assert!(problems.iter().any(|p| p.0.contains("certificate 'no_such_cert' not found")), "{problems:?}");
    let reply = host.get("/api/still", &[]).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], "current");
    Ok(())
}
