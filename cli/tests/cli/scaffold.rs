//! `edgemtls new` projects, served: the certificates they present are protected like the
//! built-ins' (every language), and their README says how to add more.

use anyhow::{Result, ensure};

use super::common::*;

#[test]
fn a_served_scaffold_of_every_language_protects_the_certificate_it_presents() -> Result<()> {
    for (lang, wasm) in [("ts", "handler.wasm"), ("js", "handler.wasm"), ("rust", "target/wasm32-wasip2/release/hello_rust.wasm")] {
        // A store of its own per language: a killed host's deployment record outlives it.
        let sandbox = Sandbox::new()?;
        let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["billing-dev"])?;
        sandbox.ok([
            "cert",
            "create",
            "--name",
            "billing_dev",
            "--cert",
            &format!("{pki}/billing-dev.pem"),
            "--key",
            &format!("{pki}/billing-dev.key"),
            "--env",
            "development",
        ])?;
        let name = format!("hello-{lang}");
        sandbox.ok(["new", &name, "--lang", lang])?;
        let project = sandbox.path(&name);
        let readme = std::fs::read_to_string(project.join("README.md"))?;
        ensure!(readme.contains("certificates = [\"$env(BACKEND_MTLS_CERT)\", \"$env(REPORTS_MTLS_CERT)\"]"), "{lang}: {readme}");
        // Building needs Node.js or a wasm32 toolchain, and what is tested here is the config
        // the scaffold wrote: the built-in hello-mtls does what the scaffold's handler does
        // (fetch `url` with BACKEND_MTLS_CERT's certificate), so it stands in for the build.
        let handler = project.join(wasm);
        std::fs::create_dir_all(handler.parent().unwrap_or(&project))?;
        std::fs::copy(edgemtls_plugins::paths::HELLO_MTLS, &handler)?;
        // Point the scaffold at this test's upstream, as its comments tell a user to.
        let config = std::fs::read_to_string(project.join("edgemtls.toml"))?
            .replace("https://localhost:8443/", &format!("https://localhost:{upstream_port}/"))
            .replace("# [[upstreams]]", "[[upstreams]]")
            .replace("# hosts = [\"localhost:8443\"]", &format!("hosts = [\"localhost:{upstream_port}\"]"))
            .replace("# ca_bundle = \"pki/ca.pem\"", &format!("ca_bundle = \"{pki}/ca.pem\""));
        std::fs::write(project.join("edgemtls.toml"), config)?;

        let (serve, port, log) = serve_logged(&sandbox, &project.join("edgemtls.toml"), false)?;
        let (status, body) = http_get(port, "/hello")?;
        ensure!(status == 200 && body.contains("\"client_cn\":\"billing-dev\""), "{lang}: {status} {body}");
        // The certificate the handler presents cannot be disabled while it serves.
        let stderr = sandbox.fails(["cert", "disable", "billing_dev"], "disabling certificate 'billing_dev' would cut off deployment")?;
        ensure!(stderr.contains("hello-"), "{lang}: {stderr}");
        let shown = sandbox.ok(["cert", "show", "billing_dev", "--offline"])?;
        ensure!(!shown.contains("used by:      -") && shown.contains("hello-"), "{lang}: cert show sees no user:\n{shown}");
        let (status, body) = http_get(port, "/hello")?;
        ensure!(
            status == 200 && body.contains("\"client_cn\":\"billing-dev\""),
            "{lang}: after the refused disable: {status} {body}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        drop(serve);
    }
    Ok(())
}
