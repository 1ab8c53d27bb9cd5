//! What only a shared store has: announcements of changes, and TLS to its server.

use super::*;

#[test]
fn a_write_on_one_node_is_announced_to_the_others() -> anyhow::Result<()> {
    let Some(fixture) = Fixture::postgres()? else { return Ok(()) };
    let ca = DevCa::generate("test ca", 30)?;
    let mut writer = fixture.open()?;
    let watcher = fixture.open()?;
    let feed = watcher.change_feed().ok_or_else(|| anyhow::anyhow!("a shared store has a change feed"))?;
    // The feed announces itself once it listens (it catches up after every reconnect).
    assert!(feed.wait(std::time::Duration::from_secs(10)), "the feed started listening");
    let before = watcher.generation()?;
    writer.create(new_cert(fixture.scratch(), &ca, "announced")?)?;
    assert!(feed.wait(std::time::Duration::from_secs(10)), "the write was announced");
    assert!(watcher.generation()? > before);
    // Deployment heartbeats are not certificate changes: no announcement.
    writer.heartbeat("dep_none", &[])?;
    assert!(!feed.wait(std::time::Duration::from_millis(300)), "a heartbeat is not announced");
    Ok(())
}

#[test]
fn a_shared_store_speaks_tls_when_the_url_asks_and_checks_the_server() -> anyhow::Result<()> {
    let Some(fixture) = Fixture::postgres()? else { return Ok(()) };
    let Some((cluster, key)) = &fixture.postgres else { anyhow::bail!("a PostgreSQL fixture") };
    let ca = DevCa::generate("database ca", 30)?;
    let options =
        IssueOptions { common_name: "database".into(), server: true, sans: vec!["127.0.0.1".into()], days: 30, ..Default::default() };
    let files = ca.issue_to(&options, fixture.scratch())?;
    cluster.enable_tls(&std::fs::read_to_string(&files.cert)?, &std::fs::read_to_string(&files.key)?).map_err(anyhow::Error::msg)?;
    let ca_file = fixture.scratch().join("database-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let other = DevCa::generate("another ca", 30)?;
    let other_file = fixture.scratch().join("other-ca.pem");
    std::fs::write(&other_file, other.cert_pem())?;
    let StoreLocation::Postgres(base) = &fixture.location else { anyhow::bail!("a URL") };
    let open = |query: &str| {
        let url = format!("{}?{query}", base.secret());
        Store::open_with_key(&StoreLocation::parse(url.as_ref()), Some((key.clone(), KeySource::Environment)))
    };

    // verify-full against the right CA: the store opens, over TLS (the server says so).
    let store = open(&format!("sslmode=verify-full&sslrootcert={}", ca_file.display()))?;
    store.generation()?;
    let tls_sessions = cluster
        .sql(
            &fixture.database(),
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND application_name = 'edgemtls'",
        )
        .map_err(anyhow::Error::msg)?;
    assert_eq!(tls_sessions, "1", "the store's connection is encrypted");
    drop(store);

    // A server certificate from another CA is refused, and the error says it was the certificate.
    let error = open(&format!("sslmode=require&sslrootcert={}", other_file.display())).unwrap_err();
    assert!(matches!(error, StoreError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("the server's certificate was refused: it is signed by a CA the URL does not trust"), "{error}");
    // A CA file that is not there is named.
    let error = open("sslmode=require&sslrootcert=/nonexistent/ca.pem").unwrap_err();
    assert!(error.to_string().contains("sslrootcert '/nonexistent/ca.pem'"), "{error}");
    Ok(())
}
