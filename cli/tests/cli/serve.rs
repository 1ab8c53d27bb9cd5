//! `edgemtls serve` as an operator runs it: the built-in hello-mtls handler against
//! `edgemtls dev-upstream`, a config reload on SIGHUP, and `cert delete` refused while the
//! running deployment references the certificate.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::common::*;

/// A plain HTTP/1.1 GET; returns the body.
fn get(port: u16, path: &str) -> Result<String> {
    Ok(http_get(port, path)?.1)
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status()?;
    ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

fn write_config(path: &std::path::Path, certificate: &str, upstream_port: u16) -> Result<()> {
    std::fs::write(path, hello_mtls_config(certificate, upstream_port))?;
    Ok(())
}

#[test]
fn serve_reloads_on_sighup_and_protects_referenced_certificates() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["old-client", "new-client"])?;
    for (name, cn) in [("old_cert", "old-client"), ("new_cert", "new-client")] {
        let cert = format!("{pki}/{cn}.pem");
        let key = format!("{pki}/{cn}.key");
        sandbox.ok(["cert", "create", "--name", name, "--cert", &cert, "--key", &key, "--env", "development"])?;
    }

    let config = sandbox.path("edgemtls.toml");
    write_config(&config, "old_cert", upstream_port)?;
    let port = free_port()?;
    sandbox.fails(["serve", "--config", &text(&config), "--workers", "0"], "invalid value '0' for '--workers <N>'")?;
    // One worker thread: serving, reloading and the store's polling share it.
    let serve = sandbox
        .command(["serve", "--config", &text(&config), "--env", "development", "--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let serve = Running(serve);
    wait_for(port)?;
    let body = get(port, "/hello")?;
    ensure!(body.contains("\"client_cn\":\"old-client\""), "{body}");

    // The running deployment references old_cert: disable is refused, and delete too even
    // after a forced disable, naming it.
    sandbox.fails(["cert", "disable", "old_cert"], "would cut off deployment")?;
    sandbox.ok(["cert", "disable", "old_cert", "--force"])?;
    sandbox.fails(["cert", "delete", "old_cert", "--yes"], "is in use by deployment")?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
    let old = list.iter().find(|c| c["name"] == "old_cert").context("old_cert listed")?;
    ensure!(old["used_by"].as_array().is_some_and(|u| u.len() == 1), "{old}");
    sandbox.ok(["cert", "enable", "old_cert"])?;

    // Point the variable at the new certificate and reload with SIGHUP, which reports
    // nothing: wait until the deployment no longer lists the old certificate.
    write_config(&config, "new_cert", upstream_port)?;
    signal(&serve.0, "HUP")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Vec<serde_json::Value> = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
        let old = list.iter().find(|c| c["name"] == "old_cert").context("old_cert listed")?;
        if old["used_by"].as_array().is_some_and(|u| u.is_empty()) {
            break;
        }
        ensure!(Instant::now() < deadline, "old_cert still in use 30 s after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = get(port, "/hello")?;
    ensure!(body.contains("\"client_cn\":\"new-client\""), "{body}");

    // The old certificate is no longer referenced: disable and delete it.
    sandbox.ok(["cert", "disable", "old_cert"])?;
    sandbox.ok(["cert", "delete", "old_cert", "--yes"])?;
    ensure!(get(port, "/hello")?.contains("new-client"));

    // A graceful stop removes the deployment.
    signal(&serve.0, "INT")?;
    let mut serve = serve;
    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.0.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "serve did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
    ensure!(list.iter().all(|c| c["used_by"].as_array().is_some_and(|u| u.is_empty())), "{list:?}");
    Ok(())
}

/// The README's rotation runbook, command for command, against a `serve` kept busy by four
/// clients: no request fails, and disabling the old certificate too early is refused.
#[test]
fn readme_rotation_runbook_under_load_drops_nothing() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["billing-2025", "billing-2026"])?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "billing_2025",
        "--cert",
        &format!("{pki}/billing-2025.pem"),
        "--key",
        &format!("{pki}/billing-2025.key"),
        "--env",
        "production",
    ])?;

    let config = sandbox.path("edgemtls.toml");
    let config_arg = text(&config);
    let admin_port = free_port()?;
    rotation_config(&config, "billing_2025", upstream_port, admin_port)?;
    let port = free_port()?;
    let serve = sandbox
        .command(["serve", "--config", &config_arg, "--env", "production", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut serve = Running(serve);
    wait_for(port)?;
    let load = Load::start(port, "/api/charge", 4);

    // 1. Create the new certificate under a new name, scoped to production.
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "billing_2026",
        "--cert",
        &format!("{pki}/billing-2026.pem"),
        "--key",
        &format!("{pki}/billing-2026.key"),
        "--env",
        "production",
    ])?;
    // 2. Test it against the upstream before switching.
    let test = sandbox.ok([
        "cert",
        "test",
        "billing_2026",
        &format!("https://localhost:{upstream_port}/health"),
        "--env",
        "production",
        "--config",
        &config_arg,
    ])?;
    ensure!(test.contains("200"), "{test}");
    // Too early: the running deployment still uses the old certificate.
    let refused = sandbox.fails(["cert", "disable", "billing_2025"], "would cut off deployment")?;
    ensure!(refused.contains("edgemtls reload"), "{refused}");
    // 3. Point the variable at it, check, reload (returns once the new config serves).
    rotation_config(&config, "billing_2026", upstream_port, admin_port)?;
    sandbox.ok(["check", "--config", &config_arg, "--env", "production"])?;
    let reloaded = sandbox.ok(["reload", "--config", &config_arg])?;
    ensure!(reloaded.contains("certificates in use: billing_2026"), "{reloaded}");
    // 4. Disable the old certificate, 5. delete it.
    sandbox.ok(["cert", "disable", "billing_2025"])?;
    sandbox.ok(["cert", "delete", "billing_2025", "--yes"])?;
    // Keep the load on the new certificate for a while: every client gets answers.
    let after: usize = (0..20).map(|_| http_get(port, "/api/charge").map(|(s, _)| usize::from(s == 200))).sum::<Result<_>>()?;
    ensure!(after == 20, "requests failed after the rotation");

    let outcomes = load.finish();
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), outcomes.len(), &failures[..failures.len().min(5)]);
    ensure!(outcomes.len() >= 20, "too little load to mean anything ({} requests)", outcomes.len());
    ensure!(outcomes.iter().flatten().all(|cn| cn == "billing-2025" || cn == "billing-2026"), "{outcomes:?}");

    // SIGTERM (systemd, docker) stops the host and unregisters the deployment at once.
    signal(&serve.0, "TERM")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.0.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    sandbox.ok(["cert", "disable", "billing_2026"])?;
    sandbox.ok(["cert", "delete", "billing_2026", "--yes"])?;
    Ok(())
}

#[test]
fn reload_explains_what_is_missing() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let config = sandbox.write("edgemtls.toml", "")?;
    sandbox.fails(["reload", "--config", &text(&config)], "has no admin_listen")?;
    let port = free_port()?;
    sandbox.write("edgemtls.toml", format!("admin_listen = \"127.0.0.1:{port}\"\n"))?;
    sandbox.fails(["reload", "--config", &text(&config)], &format!("cannot reach the admin endpoint at 127.0.0.1:{port}"))?;
    Ok(())
}

/// The files of the compile cache (wasmtime keeps one per compiled component, plus its own).
fn cached_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn compiled_components_are_kept_in_a_private_cache_between_starts() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let config = sandbox.path("edgemtls.toml");
    std::fs::write(&config, format!("[[routes]]\npath = \"/\"\nhandler = \"{}\"\n", edgemtls_e2e::guests::MTLS_PROBE))?;
    let cache = sandbox.path("compiled");
    let check = |dir: &std::path::Path| {
        let mut command = sandbox.command(["check", "--config", &text(&config)]);
        command.env("EDGEMTLS_COMPILE_CACHE", dir);
        command
    };
    expect_success(check(&cache))?;
    ensure!(mode(&cache)? & 0o777 == 0o700, "the cache holds native code: private to its user");
    let first = cached_files(&cache)?;
    ensure!(!first.is_empty(), "the compiled component was kept");
    // The second start finds it: nothing new is compiled or written.
    expect_success(check(&cache))?;
    ensure!(cached_files(&cache)? == first, "the second start compiled again");

    // A directory others can write would let them hand this host native code: not used.
    let shared = sandbox.path("shared");
    std::fs::create_dir(&shared)?;
    set_mode(&shared, 0o777)?;
    let output = output(check(&shared))?;
    ensure!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("not caching compiled components") && stderr.contains("writable by others"), "{stderr}");
    ensure!(cached_files(&shared)?.is_empty(), "nothing was written there");
    Ok(())
}

/// A reload applies routes and trust, but the listeners are bound and the limits set at
/// start: a config that changes them is reloaded with a warning, in `edgemtls reload`'s
/// output and in the host's log, and the host keeps serving where it started.
#[test]
fn a_reload_that_changes_listen_admin_listen_or_limits_says_they_need_a_restart() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let [port, admin, new_port, new_admin] = [free_port()?, free_port()?, free_port()?, free_port()?];
    let config = sandbox.path("edgemtls.toml");
    let write = |listen: u16, admin: u16, limits: &str| {
        std::fs::write(&config, format!("listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\n[limits]\n{limits}\n"))
    };
    write(port, admin, "max_instances = 100")?;
    let log = sandbox.path("serve.log");
    let serve = sandbox
        .command(["serve", "--config", &text(&config), "--env", "development"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let _serve = Running(serve);
    wait_for(port)?;
    wait_for(admin)?;

    // Routes and trust reload as before; these three do not.
    write(new_port, new_admin, "max_instances = 50\nrequest_timeout_ms = 5000")?;
    let said = sandbox.ok(["reload", "--config", &text(&config), "--admin", &format!("127.0.0.1:{admin}")])?;
    let expected = [
        format!(
            "listen changed from 127.0.0.1:{port} to 127.0.0.1:{new_port}, which needs a restart: until then the server keeps \
             listening where it started"
        ),
        format!(
            "admin_listen changed from 127.0.0.1:{admin} to 127.0.0.1:{new_admin}, which needs a restart: until then /healthz, \
             /metrics and /reload stay where they started"
        ),
        "[limits] request_timeout_ms, max_instances changed, which needs a restart: until then the server keeps the limits it \
         started with"
            .to_string(),
    ];
    for warning in &expected {
        ensure!(said.contains(&format!("warning: {warning}")), "reload did not say '{warning}':\n{said}");
    }
    // The host's log says the same at WARN (the log is written as the reload answers).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged = std::fs::read_to_string(&log)?;
        let warned = |words: &str| logged.lines().any(|line| line.contains(" WARN ") && line.contains(words));
        if expected.iter().all(|warning| warned(warning)) {
            break;
        }
        ensure!(Instant::now() < deadline, "the log has no WARN line for each change:\n{logged}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it still serves where it started.
    ensure!(http_get(admin, "/healthz")?.0 == 200, "the admin endpoint moved");
    ensure!(http_get(port, "/nothing-here")?.0 == 404, "the listener moved");
    Ok(())
}
