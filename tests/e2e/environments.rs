//! The same config picks a different certificate per environment.

use edgemtls_host::Environment;

use crate::harness::*;

#[tokio::test]
async fn the_environment_variable_selects_the_certificate() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &[Environment::Production])?;
    world.add_cert("billing_staging", "billing-staging", &[Environment::Preview])?;
    world.add_cert("dev_only", "dev-only", &[Environment::Development])?;
    let upstream = world.upstream(true).await?;
    let routes = probe_routes(&upstream_url(&upstream, "/billing"));
    let body = format!(
        "[environments.production.vars]\nBACKEND_MTLS_CERT = \"billing_prod\"\n[environments.preview.vars]\nBACKEND_MTLS_CERT = \"billing_staging\"\n{routes}"
    );
    let config = world.config(&body, upstream.addr())?;

    for (environment, cn) in [(Environment::Production, "billing-prod"), (Environment::Preview, "billing-staging")] {
        let host = world.serve(&config, environment).await?;
        let reply = host.get("/hello", &[]).await?;
        assert_eq!(reply.status, 200, "{environment}: {}", reply.body);
        assert_eq!(reply.json()?["client_cn"], cn, "{environment}");
        // The guest sees the environment's variables through wasi:cli/environment.
        let var = host.get("/probe", &[("x-mode", "env"), ("x-var", "BACKEND_MTLS_CERT")]).await?;
        assert_eq!(var.body, if environment == Environment::Production { "billing_prod" } else { "billing_staging" });
    }

    // A development-only certificate is refused in production, by name, at request time.
    let host = world.serve(&config, Environment::Production).await?;
    let reply = host.probe(&upstream_url(&upstream, "/"), Some("dev_only")).await?;
    assert_eq!(reply.json()?["type"], "urn:edgemtls:problem:certificate-not-in-environment");
    assert!(upstream.log().requests().iter().all(|r| r.client_cn.as_deref() != Some("dev-only")));
    Ok(())
}

#[tokio::test]
async fn startup_refuses_a_config_whose_certificate_is_missing_in_the_environment() -> anyhow::Result<()> {
    let world = World::new()?;
    world.add_cert("billing_prod", "billing-prod", &[Environment::Production])?;
    let upstream = world.upstream(true).await?;
    // hello-mtls declares that it reads BACKEND_MTLS_CERT as a certificate name.
    let body = format!(
        "[environments.development.vars]\nBACKEND_MTLS_CERT = \"billing_prod\"\n\n[[routes]]\npath = \"/hello\"\nhandler = \"hello-mtls\"\n[routes.options]\nurl = \"{}\"\n",
        upstream_url(&upstream, "/")
    );
    let config = world.config(&body, upstream.addr())?;
    let Err(error) = world.serve(&config, Environment::Development).await else {
        anyhow::bail!("served a config whose certificate is not available in development");
    };
    let text = error.to_string();
    assert!(text.contains("route '/hello' (hello-mtls reads variable BACKEND_MTLS_CERT)"), "{text}");
    assert!(text.contains("certificate 'billing_prod' is not available in environment development"), "{text}");
    Ok(())
}
