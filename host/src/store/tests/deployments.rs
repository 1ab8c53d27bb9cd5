//! Live deployments in both backends: the changes and deletes they refuse.

use super::*;

store_suite!(live_deployments_guard_changes_and_deletes);

fn live_deployments_guard_changes_and_deletes(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    store.create(new_cert(fixture.scratch(), &ca, "billing")?)?;
    // Node B registers through its own connection, as a second machine would.
    let mut node_b = fixture.open()?;
    let now = OffsetDateTime::now_utc();
    let deployment = Deployment {
        id: "dep_b".into(),
        hostname: "node-b".into(),
        pid: 42,
        config_path: "/etc/edgemtls.toml".into(),
        environment: Environment::Development,
        listen: "127.0.0.1:8080".into(),
        certificates: vec!["billing".into()],
        started_at: now,
        heartbeat_at: now,
    };
    node_b.register_deployment(&deployment)?;
    let live = store.live_deployments()?;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].certificates, vec!["billing".to_string()]);

    let error = store.disable("billing", false).unwrap_err();
    assert!(matches!(error, StoreError::WouldCutOff { .. }), "{error}");
    assert!(error.to_string().contains("node-b"), "names the node: {error}");
    assert!(store.find("billing")?.enabled, "nothing changed");
    store.disable("billing", true)?;
    let error = store.delete("billing").unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    assert!(error.to_string().contains("node-b"), "names the node: {error}");

    // Node B stops using it: the delete goes through.
    node_b.heartbeat("dep_b", &[])?;
    store.delete("billing")?;
    node_b.remove_deployment("dep_b")?;
    assert!(store.live_deployments()?.is_empty());
    Ok(())
}
