#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::path::Path;

use super::authenticity::KEY_CHECK_CONTEXT;
use super::*;
use crate::pki::{DevCa, ImportRequest, IssueOptions, load_identity, validate_client_identity};

fn identity(dir: &Path, ca: &DevCa, cn: &str) -> anyhow::Result<(Identity, CertificateMetadata)> {
    let files = ca.issue_to(&IssueOptions { common_name: cn.into(), server: false, sans: vec![], days: 30, ..Default::default() }, dir)?;
    let identity = load_identity(ImportRequest { cert_path: &files.cert, key_path: Some(&files.key), password: None })?;
    let metadata = validate_client_identity(&identity, OffsetDateTime::now_utc())?;
    Ok((identity, metadata))
}

fn new_cert(dir: &Path, ca: &DevCa, name: &str) -> anyhow::Result<NewCertificate> {
    let (identity, metadata) = identity(dir, ca, name)?;
    Ok(NewCertificate { name: name.into(), environments: vec![Environment::Development], identity, metadata })
}

use edgemtls_test_support::postgres as postgres_server;

/// The store suite runs every case against both backends: `store_suite!` makes one test per
/// case and backend; a backend that cannot run here (no PostgreSQL installed) skips, saying why.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() -> anyhow::Result<()> {
                super::$case(&super::Fixture::sqlite()?)
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() -> anyhow::Result<()> {
                match super::Fixture::postgres()? {
                    Some(fixture) => super::$case(&fixture),
                    None => Ok(()),
                }
            })*
        }
    };
}

store_suite!(
    create_find_update_delete_and_generation,
    private_key_round_trips_and_is_not_stored_in_clear,
    wrong_master_key_is_a_clear_error_and_changes_nothing,
    concurrent_first_use_of_a_new_store_loses_no_key,
    records_changed_without_the_master_key_are_refused,
    a_store_from_before_record_macs_gets_them_at_first_open,
    live_deployments_guard_changes_and_deletes,
    a_token_key_is_kept_as_its_uri,
);

/// Fresh stores of one backend, and raw access to their tables (to play the attacker).
struct Fixture {
    tmp: tempfile::TempDir,
    /// The PostgreSQL server, and the key its nodes share; `None` for SQLite.
    postgres: Option<(postgres_server::Cluster, MasterKey)>,
    location: StoreLocation,
}

impl Fixture {
    fn sqlite() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let location = StoreLocation::Directory(tmp.path().join("store"));
        Ok(Self { tmp, postgres: None, location })
    }

    fn postgres() -> anyhow::Result<Option<Self>> {
        let Some(cluster) = postgres_server::Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(None) };
        let location = StoreLocation::parse(cluster.create_database().map_err(anyhow::Error::msg)?.as_ref());
        let (key, _) = MasterKey::generate()?;
        Ok(Some(Self { tmp: tempfile::tempdir()?, postgres: Some((cluster, key)), location }))
    }

    fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// Another new, empty store on the same backend.
    fn fresh_location(&self, n: usize) -> anyhow::Result<StoreLocation> {
        Ok(match &self.postgres {
            None => StoreLocation::Directory(self.tmp.path().join(format!("store-{n}"))),
            Some((cluster, _)) => StoreLocation::parse(cluster.create_database().map_err(anyhow::Error::msg)?.as_ref()),
        })
    }

    /// Opens the store as a node normally would (SQLite: its key file; PostgreSQL: the key
    /// every node shares).
    fn open(&self) -> Result<Store, StoreError> {
        self.open_at(&self.location)
    }

    fn open_at(&self, location: &StoreLocation) -> Result<Store, StoreError> {
        match &self.postgres {
            None => Store::open(location),
            Some((_, key)) => Store::open_with_key(location, Some((key.clone(), KeySource::Environment))),
        }
    }

    fn open_with(&self, key: &MasterKey) -> Result<Store, StoreError> {
        Store::open_with_key(&self.location, Some((key.clone(), KeySource::Environment)))
    }

    /// The key the store was sealed with.
    fn key(&self) -> anyhow::Result<MasterKey> {
        match (&self.postgres, &self.location) {
            (Some((_, key)), _) => Ok(key.clone()),
            (None, StoreLocation::Directory(dir)) => {
                Ok(MasterKey::from_base64(&std::fs::read_to_string(dir.join(KEY_FILE))?, &KeySource::Environment)?)
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no key"),
        }
    }

    /// The database name of a PostgreSQL location.
    fn database(&self) -> String {
        self.location.to_string().rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Runs `sql` on the store's database behind the store's back; `{certificates}` and
    /// `{store_meta}` name the tables and `{true}` is true, in the backend's dialect.
    fn tamper(&self, sql: &str) -> anyhow::Result<()> {
        match (&self.postgres, &self.location) {
            (Some((cluster, _)), _) => {
                let sql = sql
                    .replace("{certificates}", "edgemtls.certificates")
                    .replace("{store_meta}", "edgemtls.store_meta")
                    .replace("{true}", "true");
                cluster.sql(&self.database(), &sql).map_err(anyhow::Error::msg)?;
            }
            (None, StoreLocation::Directory(dir)) => {
                let sql = sql.replace("{certificates}", "certificates").replace("{store_meta}", "store_meta").replace("{true}", "1");
                rusqlite::Connection::open(dir.join(DATABASE_FILE))?.execute_batch(&sql)?;
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no database"),
        }
        Ok(())
    }

    /// Bytes as an SQL literal in the backend's dialect.
    fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match &self.postgres {
            None => format!("X'{hex}'"),
            Some(_) => format!("'\\x{hex}'::bytea"),
        }
    }

    /// Whether the database holds `needle` anywhere (SQLite: the files; PostgreSQL: every
    /// column of every table, dumped).
    fn holds(&self, needle: &[u8]) -> anyhow::Result<bool> {
        match (&self.postgres, &self.location) {
            (Some((cluster, _)), _) => {
                let dump = cluster
                    .sql(&self.database(), "SELECT string_agg(t::text, ' ') FROM edgemtls.certificates t")
                    .map_err(anyhow::Error::msg)?;
                let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                Ok(dump.contains(&hex) || dump.as_bytes().windows(needle.len()).any(|w| w == needle))
            }
            (None, StoreLocation::Directory(dir)) => {
                let mut bytes = std::fs::read(dir.join(DATABASE_FILE))?;
                if let Ok(wal) = std::fs::read(dir.join("store.db-wal")) {
                    bytes.extend(wal);
                }
                Ok(bytes.windows(needle.len()).any(|w| w == needle))
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no database"),
        }
    }
}

fn create_find_update_delete_and_generation(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    let g0 = store.generation()?;

    let record = store.create(new_cert(fixture.scratch(), &ca, "billing_api")?)?;
    assert!(record.id.starts_with("cert_"));
    assert!(record.enabled);
    assert_eq!(store.find("billing_api")?.id, record.id);
    assert_eq!(store.find(&record.id)?.name, "billing_api");
    assert!(store.generation()? > g0);

    let err = store.create(new_cert(fixture.scratch(), &ca, "billing_api")?).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken(_)), "{err}");
    // Names differ by more than case; the error names the one that exists.
    let err = store.create(new_cert(fixture.scratch(), &ca, "Billing_API")?).unwrap_err();
    assert!(err.to_string().contains("'billing_api' already exists"), "{err}");

    // No deployment uses it yet, so the guard lets the change through.
    let updated = store.rescope("billing_api", &[Environment::Preview, Environment::Production], false)?;
    assert_eq!(updated.environments, vec![Environment::Preview, Environment::Production]);
    assert!(updated.version > record.version);
    // Another connection (another node) sees the change and can use the key.
    let other = fixture.open()?;
    assert_eq!(other.find("billing_api")?.environments, updated.environments);
    other.private_key(&other.find("billing_api")?)?;

    let err = store.delete("billing_api").unwrap_err();
    assert!(err.to_string().contains("disable it first"), "{err}");
    store.set_enabled("billing_api", false)?;
    let generation = store.generation()?;
    store.delete("billing_api")?;
    assert!(store.generation()? > generation);
    assert!(matches!(store.find("billing_api"), Err(StoreError::NotFound(_))));
    assert!(matches!(other.find("billing_api"), Err(StoreError::NotFound(_))));
    Ok(())
}

fn private_key_round_trips_and_is_not_stored_in_clear(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    let new = new_cert(fixture.scratch(), &ca, "a")?;
    let key_der = new.identity.key.secret_der().to_vec();
    let record = store.create(new)?;
    let StoredKey::Sealed(key) = store.private_key(&record)? else { anyhow::bail!("a sealed key") };
    assert_eq!(key.secret_der(), key_der.as_slice());
    assert_eq!(record.key_location, KeyLocation::Store);
    drop(store);
    assert!(
        fixture.holds(record.metadata.fingerprint_sha256.as_bytes())? || fixture.holds(b"BEGIN CERTIFICATE")?,
        "the check can see the table"
    );
    assert!(!fixture.holds(&key_der)?, "the private key is stored in clear");
    Ok(())
}

fn a_token_key_is_kept_as_its_uri(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    let (identity, metadata) = identity(fixture.scratch(), &ca, "token")?;
    let key_der = identity.key.secret_der().to_vec();
    let uri = "pkcs11:token=edge;object=client;type=private";
    let record = store.create_with_token_key(NewTokenCertificate {
        name: "token".into(),
        environments: vec![Environment::Development],
        chain: identity.chain.clone(),
        metadata,
        key_uri: uri.into(),
    })?;
    assert_eq!(record.key_location, KeyLocation::Token(uri.into()));
    // Another connection (another node) reads the URI back, through the sealed column.
    let other = fixture.open()?;
    let listed = other.list()?.into_iter().find(|r| r.name == "token").unwrap();
    assert_eq!(listed.key_location, KeyLocation::Token(uri.into()));
    assert!(matches!(other.private_key(&listed)?, StoredKey::Token(found) if found == uri));
    assert_eq!(listed.summary(OffsetDateTime::now_utc()).key_location, uri);
    drop((store, other));
    assert!(!fixture.holds(&key_der)?, "a token record holds key bytes");
    Ok(())
}

fn wrong_master_key_is_a_clear_error_and_changes_nothing(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    store.create(new_cert(fixture.scratch(), &ca, "a")?)?;
    let generation = store.generation()?;
    drop(store);
    let (other, _) = MasterKey::generate()?;
    let err = fixture.open_with(&other).unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err}");
    assert!(err.to_string().contains("does not match the store"), "{err}");
    let store = fixture.open()?;
    assert_eq!(store.generation()?, generation, "nothing was written");
    store.private_key(&store.find("a")?)?;
    Ok(())
}

fn concurrent_first_use_of_a_new_store_loses_no_key(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    const WRITERS: usize = 4;
    let trials = if fixture.postgres.is_some() { 10 } else { 50 };
    for trial in 0..trials {
        let location = fixture.fresh_location(trial)?;
        let certs: Vec<NewCertificate> =
            (0..WRITERS).map(|n| new_cert(fixture.scratch(), &ca, &format!("c{n}"))).collect::<anyhow::Result<_>>()?;
        let barrier = std::sync::Barrier::new(WRITERS);
        let results: Vec<Result<String, StoreError>> = std::thread::scope(|scope| {
            let writers: Vec<_> = certs
                .into_iter()
                .map(|cert| {
                    let (barrier, location) = (&barrier, &location);
                    scope.spawn(move || {
                        barrier.wait();
                        let mut store = fixture.open_at(location)?;
                        Ok(store.create(cert)?.name)
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(StoreError::NotFound("a writer panicked".into())))).collect()
        });
        for result in results {
            assert!(result.is_ok(), "trial {trial}: {}", result.unwrap_err());
        }
        // Every key unseals with the key that is left.
        let store = fixture.open_at(&location)?;
        let records = store.list()?;
        assert_eq!(records.len(), WRITERS, "trial {trial}");
        for record in &records {
            store.private_key(record).map_err(|e| anyhow::anyhow!("trial {trial}: {}: {e}", record.name))?;
        }
    }
    Ok(())
}

fn records_changed_without_the_master_key_are_refused(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    let dev = store.create(new_cert(fixture.scratch(), &ca, "dev_only")?)?;
    let off = store.create(new_cert(fixture.scratch(), &ca, "switched_off")?)?;
    store.set_enabled("switched_off", false)?;
    let untouched = store.create(new_cert(fixture.scratch(), &ca, "untouched")?)?;
    drop(store);

    // Someone with write access to the database but not the key re-scopes one record to
    // production and switches another on.
    fixture.tamper(&format!("UPDATE {{certificates}} SET environments = 'production' WHERE id = '{}'", dev.id))?;
    fixture.tamper(&format!("UPDATE {{certificates}} SET enabled = {{true}} WHERE id = '{}'", off.id))?;

    let mut store = fixture.open()?;
    for (record, name) in [(&dev, "dev_only"), (&off, "switched_off")] {
        let current = store.find(&record.id)?;
        let error = store.private_key(&current).unwrap_err();
        assert!(matches!(error, StoreError::Tampered { .. }), "{name}: {error}");
        assert!(error.to_string().contains("changed outside edgemtls"), "{error}");
    }
    // The untouched record still works, and a legitimate update does not bless a tampered one.
    store.private_key(&store.find(&untouched.id)?)?;
    let error = store.set_enabled("dev_only", false).unwrap_err();
    assert!(matches!(error, StoreError::Tampered { .. }), "{error}");
    Ok(())
}

fn a_store_from_before_record_macs_gets_them_at_first_open(fixture: &Fixture) -> anyhow::Result<()> {
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = fixture.open()?;
    let record = store.create(new_cert(fixture.scratch(), &ca, "legacy")?)?;
    drop(store);
    // As an older edgemtls left it: no MAC, and the old key-check marker.
    let old_marker = fixture.key()?.seal(KEY_CHECK_CONTEXT, b"ok")?;
    fixture.tamper("UPDATE {certificates} SET record_mac = NULL")?;
    fixture.tamper(&format!("UPDATE {{store_meta}} SET value = {} WHERE key = 'key_check'", fixture.bytes_literal(&old_marker)))?;

    let store = fixture.open()?;
    store.private_key(&store.find(&record.id)?)?;
    drop(store);
    // From then on a missing MAC is tampering, not an old store.
    fixture.tamper("UPDATE {certificates} SET record_mac = NULL")?;
    let store = fixture.open()?;
    assert!(matches!(store.private_key(&store.find(&record.id)?), Err(StoreError::Tampered { .. })));
    Ok(())
}

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

// What only a store on this machine has: its files.

#[cfg(unix)]
#[test]
fn key_file_and_database_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    drop(Store::open(&StoreLocation::Directory(dir.clone()))?);
    for file in [KEY_FILE, DATABASE_FILE] {
        let mode = std::fs::metadata(dir.join(file))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    Ok(())
}

#[test]
fn a_missing_or_replaced_key_file_is_a_clear_error() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let location = StoreLocation::Directory(tmp.path().join("store"));
    let dir = tmp.path().join("store");
    drop(Store::open(&location)?);
    let (_, other) = MasterKey::generate()?;
    std::fs::write(dir.join(KEY_FILE), other)?;
    let err = Store::open(&location).unwrap_err();
    assert!(err.to_string().contains("does not match the store"), "{err}");
    assert!(err.to_string().contains("or the key file"), "{err}");
    std::fs::remove_file(dir.join(KEY_FILE))?;
    let err = Store::open(&location).unwrap_err();
    assert!(err.to_string().contains("no master key"), "{err}");
    Ok(())
}

#[test]
fn an_empty_key_file_is_explained_with_what_to_do() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    // A new store whose first start (by an older version) was interrupted after creating the file.
    let fresh = tmp.path().join("fresh");
    let location = StoreLocation::Directory(fresh.clone());
    std::fs::create_dir_all(&fresh)?;
    std::fs::write(fresh.join(KEY_FILE), "")?;
    let error = Store::open(&location).unwrap_err();
    assert!(error.to_string().contains("delete that file and run the command again"), "{error}");
    std::fs::remove_file(fresh.join(KEY_FILE))?;
    let mut store = Store::open(&location)?;
    let record = store.create(new_cert(tmp.path(), &ca, "a")?)?;
    store.private_key(&record)?;
    drop(store);

    // A store that sealed keys, whose key file was emptied: restore it; nothing changed.
    std::fs::write(fresh.join(KEY_FILE), "")?;
    let error = Store::open(&location).unwrap_err();
    assert!(error.to_string().contains("restore it from your backup"), "{error}");
    Ok(())
}

// What only a shared store has: announcements of changes.

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
