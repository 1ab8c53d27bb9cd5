//! Two `edgemtls serve` nodes on one PostgreSQL store, with the CLI as a third client: changes
//! reach both nodes within a second, a rotation under load on both loses nothing, `cert
//! delete` names the node that still uses a certificate, and the nodes serve through a
//! database outage and catch up when it returns.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::common::*;
use super::shared_store::{edgemtls, new_key, postgres_server::Cluster};

/// One serving node: its process, ports and config file.
struct Node {
    name: &'static str,
    port: u16,
    admin: u16,
    config: std::path::PathBuf,
    upstream_port: u16,
    _process: Running,
}

impl Node {
    fn start(sandbox: &Sandbox, url: &str, key: &str, name: &'static str, certificate: &str, upstream_port: u16) -> Result<Self> {
        let port = free_port()?;
        let admin = free_port()?;
        let config = sandbox.path(&format!("{name}.toml"));
        let log = sandbox.path(&format!("{name}.log"));
        rotation_config(&config, certificate, upstream_port, admin)?;
        let process = edgemtls(
            sandbox,
            url,
            Some(key),
            &["serve", "--config", &text(&config), "--env", "production", "--listen", &format!("127.0.0.1:{port}")],
        )
        .env("EDGEMTLS_NODE_NAME", name)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
        let mut process = Running(process);
        process.wait_until_listening(port, &log).with_context(|| format!("{name} did not start"))?;
        process.wait_until_listening(admin, &log).with_context(|| format!("{name}'s admin listener did not start"))?;
        Ok(Self { name, port, admin, config, upstream_port, _process: process })
    }

    /// Points the node's config at `certificate` and reloads it (returns once it serves).
    fn switch_to(&self, sandbox: &Sandbox, certificate: &str) -> Result<()> {
        rotation_config(&self.config, certificate, self.upstream_port, self.admin)?;
        let reloaded = sandbox.ok(["reload", "--config", &text(&self.config)])?;
        ensure!(reloaded.contains(&format!("certificates in use: {certificate}")), "{}: {reloaded}", self.name);
        Ok(())
    }

    fn health(&self) -> Result<serde_json::Value> {
        let (status, body) = http_get(self.admin, "/healthz")?;
        ensure!(status == 200, "{}: /healthz {status} {body}", self.name);
        Ok(serde_json::from_str(&body)?)
    }

    fn certificate_count(&self) -> Result<u64> {
        self.health()?["certificates"].as_u64().context("certificates in /healthz")
    }

    /// The client certificate's CN the upstream saw, or `None` when the request failed.
    fn served_cn(&self) -> Result<Option<String>> {
        let (status, body) = http_get(self.port, "/api/charge")?;
        if status != 200 {
            return Ok(None);
        }
        let json: serde_json::Value = serde_json::from_str(&body)?;
        Ok(json["client_cn"].as_str().map(str::to_string))
    }
}

/// Waits until `seen` holds on both nodes; returns how long after `since` each first did.
fn until_both(nodes: &[&Node], since: Instant, seen: impl Fn(&Node) -> Result<bool>) -> Result<Vec<Duration>> {
    let deadline = since + Duration::from_secs(10);
    let mut at: Vec<Option<Duration>> = vec![None; nodes.len()];
    while at.iter().any(Option::is_none) {
        for (node, at) in nodes.iter().zip(at.iter_mut()) {
            if at.is_none() && seen(node)? {
                *at = Some(since.elapsed());
            }
        }
        ensure!(Instant::now() < deadline, "a change did not reach every node within 10 s");
    }
    Ok(at.into_iter().flatten().collect())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[test]
fn two_nodes_share_one_store() -> Result<()> {
    let Some(cluster) = Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(()) };
    let sandbox = Sandbox::new()?;
    let url = cluster.create_database().map_err(anyhow::Error::msg)?;
    let key = new_key()?;
    let cns = ["billing-1", "billing-2", "billing-3", "after-outage"];
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &cns)?;
    let cli = |args: &[&str]| expect_success(edgemtls(&sandbox, &url, Some(&key), args));
    let create = |name: &str, cn: &str| {
        cli(&[
            "cert",
            "create",
            "--name",
            name,
            "--cert",
            &format!("{pki}/{cn}.pem"),
            "--key",
            &format!("{pki}/{cn}.key"),
            "--env",
            "production",
        ])
    };
    create("billing_1", "billing-1")?;

    let a = Node::start(&sandbox, &url, &key, "node-a", "billing_1", upstream_port)?;
    let b = Node::start(&sandbox, &url, &key, "node-b", "billing_1", upstream_port)?;
    let both = [&a, &b];
    for node in both {
        ensure!(node.served_cn()?.as_deref() == Some("billing-1"), "{} serves billing_1", node.name);
    }

    // 1. Propagation: 20 changes from the CLI, each seen by both nodes. Creates show in
    // /healthz; disabling and enabling the certificate in use show in what is served.
    let mut delays = Vec::new();
    for round in 0..10 {
        let count = a.certificate_count()?;
        let started = Instant::now();
        create(&format!("extra_{round}"), "billing-2")?;
        let committed = Instant::now();
        let seen = until_both(&both, committed, |node| Ok(node.certificate_count()? > count))?;
        delays.extend(seen.iter().map(|d| (*d, committed - started)));

        let disabling = round % 2 == 0;
        let started = Instant::now();
        if disabling {
            cli(&["cert", "disable", "billing_1", "--force"])?;
        } else {
            cli(&["cert", "enable", "billing_1"])?;
        }
        let committed = Instant::now();
        let seen = until_both(&both, committed, |node| Ok(node.served_cn()?.is_some() != disabling))?;
        delays.extend(seen.iter().map(|d| (*d, committed - started)));
    }
    cli(&["cert", "enable", "billing_1"])?;
    until_both(&both, Instant::now(), |node| Ok(node.served_cn()?.is_some()))?;
    let mut propagation: Vec<Duration> = delays.iter().map(|(d, _)| *d).collect();
    propagation.sort();
    let mut command: Vec<Duration> = delays.iter().map(|(_, c)| *c).collect();
    command.sort();
    eprintln!(
        "propagation from the CLI's commit to the first answer with the change, both nodes, 20 changes: p50 {:?}, max {:?} (the CLI command itself: p50 {:?}, max {:?})",
        percentile(&propagation, 0.5),
        propagation.last().copied().unwrap_or_default(),
        percentile(&command, 0.5),
        command.last().copied().unwrap_or_default(),
    );
    ensure!(
        propagation.last().copied().unwrap_or_default() <= Duration::from_secs(1),
        "every change reached both nodes within 1 s: {propagation:?}"
    );

    // 2. Rotation under steady load on both nodes loses no request.
    let load_a = Load::start(a.port, "/api/charge", 2);
    let load_b = Load::start(b.port, "/api/charge", 2);
    let count = a.certificate_count()?;
    create("billing_2", "billing-2")?;
    until_both(&both, Instant::now(), |node| Ok(node.certificate_count()? > count))?;
    a.switch_to(&sandbox, "billing_2")?;
    // 3. Too early: node B still uses billing_1, and the refusal names it (not node A).
    let refused = expect_failure(edgemtls(&sandbox, &url, Some(&key), &["cert", "disable", "billing_1"]), "would cut off deployment")?;
    ensure!(refused.contains("node-b") && !refused.contains("node-a"), "names node B alone: {refused}");
    b.switch_to(&sandbox, "billing_2")?;
    cli(&["cert", "disable", "billing_1"])?;
    cli(&["cert", "delete", "billing_1", "--yes"])?;
    until_both(&both, Instant::now(), |node| Ok(node.served_cn()?.as_deref() == Some("billing-2")))?;
    let outcomes: Vec<_> = load_a.finish().into_iter().chain(load_b.finish()).collect();
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed in the rotation: {:?}",
        failures.len(),
        outcomes.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(outcomes.len() >= 40, "too little load to mean anything ({} requests)", outcomes.len());

    // `cert delete` while node B alone still references a certificate: refused, naming node B.
    let count = a.certificate_count()?;
    create("billing_3", "billing-3")?;
    until_both(&both, Instant::now(), |node| Ok(node.certificate_count()? > count))?;
    a.switch_to(&sandbox, "billing_3")?;
    cli(&["cert", "disable", "billing_2", "--force"])?;
    let refused =
        expect_failure(edgemtls(&sandbox, &url, Some(&key), &["cert", "delete", "billing_2", "--yes"]), "is in use by deployment")?;
    ensure!(refused.contains("node-b") && !refused.contains("node-a"), "names node B alone: {refused}");
    cli(&["cert", "enable", "billing_2"])?;
    until_both(&both, Instant::now(), |node| Ok(node.served_cn()?.is_some()))?;

    // 4. PostgreSQL stops for 10 s under load: no request fails, both nodes say they serve
    // from their last snapshot, and a change made right after it returns reaches both.
    let load_a = Load::start(a.port, "/api/charge", 2);
    let load_b = Load::start(b.port, "/api/charge", 2);
    cluster.pause().map_err(anyhow::Error::msg)?;
    let stopped = Instant::now();
    until_both(&both, Instant::now(), |node| Ok(node.health()?["store"]["reachable"] == false))?;
    for node in both {
        let health = node.health()?;
        ensure!(health["status"] == "degraded" && health["store"]["serving"] == "the last snapshot", "{}: {health}", node.name);
        let (_, metrics) = http_get(node.admin, "/metrics")?;
        ensure!(metrics.contains("edgemtls_store_reachable 0"), "{}: {metrics}", node.name);
    }
    // The outage lasts 10 s by design, not to wait for anything.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    cluster.resume().map_err(anyhow::Error::msg)?;
    let back = Instant::now();
    let count = a.certificate_count()?;
    create("after_outage", "after-outage")?;
    let seen = until_both(&both, back, |node| Ok(node.certificate_count()? > count && node.health()?["store"]["reachable"] == true))?;
    eprintln!("after the outage, the change reached the nodes {seen:?} after PostgreSQL was back");
    let outcomes: Vec<_> = load_a.finish().into_iter().chain(load_b.finish()).collect();
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed during the outage: {:?}",
        failures.len(),
        outcomes.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(outcomes.len() >= 40, "too little load to mean anything ({} requests)", outcomes.len());
    for node in both {
        ensure!(node.health()?["status"] == "ok", "{} healthy again", node.name);
    }
    Ok(())
}
