//! The CLI on a shared PostgreSQL store: bad URLs, logins, databases and keys each get a
//! plain error and write nothing; `store copy` seeds a shared store from a local one.

use std::process::Command;

use anyhow::{Result, ensure};

use super::common::{Sandbox, TestCa, expect_failure, expect_success};

pub use edgemtls_test_support::postgres as postgres_server;

use postgres_server::Cluster;

/// A fresh key, base64, as `EDGEMTLS_MASTER_KEY` takes it.
pub fn new_key() -> Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The binary on the store at `url` with `key` as the master key (or none).
pub fn edgemtls(sandbox: &Sandbox, url: &str, key: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgemtls"));
    command
        .arg("--store")
        .arg(url)
        .args(args)
        .current_dir(sandbox.dir())
        .env_remove("EDGEMTLS_MASTER_KEY")
        .env_remove("EDGEMTLS_STORE")
        .env("HOME", sandbox.dir())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    if let Some(key) = key {
        command.env("EDGEMTLS_MASTER_KEY", key);
    }
    command
}

/// `cert create` args for a new client certificate `name` (CN = name).
fn create(sandbox: &Sandbox, ca: &TestCa, name: &str) -> Result<Vec<String>> {
    let leaf = ca.client(name)?;
    let (cert, key) = leaf.write_pem_split(sandbox, name)?;
    Ok(sandbox.create_args(name, &cert, Some(&key), &[]))
}

fn args(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

/// Whether the database has the edgemtls schema (anything written at all).
fn has_schema(cluster: &Cluster, database: &str) -> Result<bool> {
    let found = cluster
        .sql(database, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'edgemtls'")
        .map_err(anyhow::Error::msg)?;
    Ok(found == "1")
}

fn database_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

#[test]
fn bad_urls_logins_databases_and_keys_are_plain_errors_that_write_nothing() -> Result<()> {
    let Some(cluster) = Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(()) };
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("shared store test ca")?;
    let key = new_key()?;
    let creating = create(&sandbox, &ca, "billing")?;

    // Nothing listens there: the CLI says it cannot reach the store, without the password.
    let dead = "postgres://edge:hunter2@127.0.0.1:1/edgemtls";
    let stderr = expect_failure(
        edgemtls(&sandbox, dead, Some(&key), &args(&creating)),
        "cannot reach the store at postgres://edge:***@127.0.0.1:1/edgemtls",
    )?;
    ensure!(!stderr.contains("hunter2"), "the password is never printed: {stderr}");

    // A wrong password.
    let empty = cluster.create_database().map_err(anyhow::Error::msg)?;
    let wrong = empty.replace(postgres_server::PASSWORD, "not-the-password");
    let stderr = expect_failure(edgemtls(&sandbox, &wrong, Some(&key), &args(&creating)), "refused the login")?;
    ensure!(stderr.contains("check the user and password"), "{stderr}");
    ensure!(!stderr.contains("not-the-password"), "the password is never printed: {stderr}");
    ensure!(!has_schema(&cluster, database_of(&empty))?, "a refused login wrote nothing");

    // A database that does not exist.
    let missing = format!("postgres://postgres:{}@127.0.0.1:{}/no_such_db", postgres_server::PASSWORD, cluster.port());
    expect_failure(edgemtls(&sandbox, &missing, Some(&key), &args(&creating)), "create it first")?;

    // No master key for a shared store: say where it comes from; write nothing.
    let stderr = expect_failure(edgemtls(&sandbox, &empty, None, &args(&creating)), "set EDGEMTLS_MASTER_KEY")?;
    ensure!(stderr.contains("every node"), "{stderr}");
    ensure!(!has_schema(&cluster, database_of(&empty))?, "no key, nothing written");

    // Another application's database.
    let foreign = cluster.create_database().map_err(anyhow::Error::msg)?;
    cluster.sql(database_of(&foreign), "CREATE TABLE orders (id integer)").map_err(anyhow::Error::msg)?;
    expect_failure(edgemtls(&sandbox, &foreign, Some(&key), &args(&creating)), "holds tables of another application (public.orders)")?;
    ensure!(!has_schema(&cluster, database_of(&foreign))?, "another application's database is left alone");

    // Reading commands never create a store.
    let listed = expect_success(edgemtls(&sandbox, &empty, Some(&key), &["cert", "list"]))?;
    ensure!(listed.contains("no certificates"), "{listed}");
    expect_failure(edgemtls(&sandbox, &empty, Some(&key), &["cert", "show", "billing"]), "no edgemtls store in the database")?;
    ensure!(!has_schema(&cluster, database_of(&empty))?, "cert list created nothing");

    // A store made with one key refuses another, and keeps what it has.
    expect_success(edgemtls(&sandbox, &empty, Some(&key), &args(&creating)))?;
    let other = new_key()?;
    ensure!(other != key);
    let second = create(&sandbox, &ca, "second")?;
    expect_failure(edgemtls(&sandbox, &empty, Some(&other), &args(&second)), "does not match the store")?;
    let count = cluster.sql(database_of(&empty), "SELECT count(*) FROM edgemtls.certificates").map_err(anyhow::Error::msg)?;
    ensure!(count == "1", "the wrong key wrote nothing: {count} certificates");
    Ok(())
}

#[test]
fn store_copy_seeds_a_shared_store_from_a_local_one() -> Result<()> {
    let Some(cluster) = Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(()) };
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("copy test ca")?;
    // A developer's local store: one enabled certificate for preview, one disabled.
    sandbox.ok(create(&sandbox, &ca, "billing")?.iter().chain(["--env".to_string(), "preview".to_string()].iter()))?;
    sandbox.ok(create(&sandbox, &ca, "legacy")?)?;
    sandbox.ok(["cert", "disable", "legacy"])?;
    let url = cluster.create_database().map_err(anyhow::Error::msg)?;
    let fleet_key = new_key()?;
    let store = sandbox.store.to_string_lossy().into_owned();

    // The fleet's key is in EDGEMTLS_MASTER_KEY; the local store keeps its own key file.
    let out = expect_success(edgemtls(&sandbox, &url, Some(&fleet_key), &["store", "copy", "--from", &store, "--to", &url]))?;
    ensure!(out.contains("copied 2 certificates"), "{out}");
    ensure!(!out.contains(postgres_server::PASSWORD), "the URL is shown without its password: {out}");
    let listing = expect_success(edgemtls(&sandbox, &url, Some(&fleet_key), &["cert", "list", "--json"]))?;
    let listing: serde_json::Value = serde_json::from_str(&listing)?;
    let local: serde_json::Value = serde_json::from_str(&sandbox.ok(["cert", "list", "--json"])?)?;
    let summary = |list: &serde_json::Value| -> Vec<(String, String, String, bool, String)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_string(),
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["environments"].to_string(),
                    c["enabled"].as_bool().unwrap_or_default(),
                    c["fingerprint_sha256"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    ensure!(summary(&listing) == summary(&local), "copied as they were, ids too:\n{listing}\n{local}");
    // The keys were re-sealed with the fleet's key: the shared store's keys open with it.
    let checked = expect_success(edgemtls(&sandbox, &url, Some(&fleet_key), &["cert", "status", "--offline"]))?;
    ensure!(checked.contains("billing"), "{checked}");
    ensure!(!checked.to_lowercase().contains("damaged"), "every key unseals: {checked}");

    // Running it again copies nothing new.
    let out = expect_success(edgemtls(&sandbox, &url, Some(&fleet_key), &["store", "copy", "--from", &store, "--to", &url]))?;
    ensure!(out.contains("copied 0 certificates") && out.contains("2 already there"), "{out}");

    // Another certificate under a name the destination has: refused, nothing copied.
    let other = Sandbox::new()?;
    other.ok(create(&other, &ca, "billing")?)?;
    other.ok(create(&other, &ca, "fresh")?)?;
    let other_store = other.store.to_string_lossy().into_owned();
    expect_failure(
        edgemtls(&sandbox, &url, Some(&fleet_key), &["store", "copy", "--from", &other_store, "--to", &url]),
        "already has other certificates under these names or ids: 'billing'",
    )?;
    let count = cluster.sql(database_of(&url), "SELECT count(*) FROM edgemtls.certificates").map_err(anyhow::Error::msg)?;
    ensure!(count == "2", "nothing copied: {count}");

    // A source whose key is gone cannot be copied.
    std::fs::remove_file(other.store.join("master.key"))?;
    expect_failure(
        edgemtls(&sandbox, &url, Some(&fleet_key), &["store", "copy", "--from", &other_store, "--to", &url]),
        // The local key file is gone, so the variable's key is tried: the fleet's, not this store's.
        "does not match the store",
    )?;
    Ok(())
}

#[test]
fn commands_on_a_shared_store_print_no_postgresql_notices() -> Result<()> {
    let Some(cluster) = Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(()) };
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("quiet test ca")?;
    let url = cluster.create_database().map_err(anyhow::Error::msg)?;
    let key = new_key()?;
    let creating = create(&sandbox, &ca, "billing")?;
    // The first command makes the schema; the ones after find it there (IF NOT EXISTS).
    let commands: [Vec<&str>; 4] =
        [args(&creating), vec!["cert", "list"], vec!["cert", "show", "billing"], vec!["cert", "disable", "billing"]];
    for command in commands {
        let mut run = edgemtls(&sandbox, &url, Some(&key), &command);
        run.env_remove("RUST_LOG");
        let output = run.output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "{command:?}: {stderr}");
        ensure!(!stderr.contains("NOTICE") && !stderr.contains("tokio_postgres"), "{command:?} printed:\n{stderr}");
    }
    Ok(())
}
