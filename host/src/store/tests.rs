#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

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

#[test]
fn create_find_update_delete_and_generation() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    let mut store = Store::open(&tmp.path().join("store"))?;
    let g0 = store.generation()?;

    let record = store.create(new_cert(tmp.path(), &ca, "billing_api")?)?;
    assert!(record.id.starts_with("cert_"));
    assert!(record.enabled);
    assert_eq!(store.find("billing_api")?.id, record.id);
    assert_eq!(store.find(&record.id)?.name, "billing_api");
    assert!(store.generation()? > g0);

    let err = store.create(new_cert(tmp.path(), &ca, "billing_api")?).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken(_)), "{err}");
    // Names differ by more than case; the error names the one that exists.
    let err = store.create(new_cert(tmp.path(), &ca, "Billing_API")?).unwrap_err();
    assert!(err.to_string().contains("'billing_api' already exists"), "{err}");

    let updated = store.set_environments("billing_api", &[Environment::Preview, Environment::Production])?;
    assert_eq!(updated.environments, vec![Environment::Preview, Environment::Production]);
    assert!(updated.version > record.version);

    let err = store.delete("billing_api").unwrap_err();
    assert!(err.to_string().contains("disable it first"), "{err}");
    store.set_enabled("billing_api", false)?;
    store.delete("billing_api")?;
    assert!(matches!(store.find("billing_api"), Err(StoreError::NotFound(_))));
    Ok(())
}

#[test]
fn private_key_round_trips_and_is_not_stored_in_clear() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    let dir = tmp.path().join("store");
    let mut store = Store::open(&dir)?;
    let new = new_cert(tmp.path(), &ca, "a")?;
    let key_der = new.identity.key.secret_der().to_vec();
    let record = store.create(new)?;
    assert_eq!(store.private_key(&record)?.secret_der(), key_der.as_slice());
    drop(store);

    let mut bytes = std::fs::read(dir.join(DATABASE_FILE))?;
    if let Ok(wal) = std::fs::read(dir.join("store.db-wal")) {
        bytes.extend(wal);
    }
    assert!(!bytes.windows(key_der.len()).any(|w| w == key_der.as_slice()));
    Ok(())
}

#[test]
fn wrong_master_key_is_a_clear_error() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    drop(Store::open(&dir)?);
    // Replace the key file with another valid key.
    let (_, other) = MasterKey::generate()?;
    std::fs::write(dir.join(KEY_FILE), other)?;
    let err = Store::open(&dir).unwrap_err();
    assert!(err.to_string().contains("does not match the store"), "{err}");

    std::fs::remove_file(dir.join(KEY_FILE))?;
    let err = Store::open(&dir).unwrap_err();
    assert!(err.to_string().contains("no master key"), "{err}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn key_file_and_database_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    drop(Store::open(&dir)?);
    for file in [KEY_FILE, DATABASE_FILE] {
        let mode = std::fs::metadata(dir.join(file))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    Ok(())
}

#[test]
fn concurrent_first_use_of_a_new_store_loses_no_key() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    const TRIALS: usize = 50;
    const WRITERS: usize = 4;
    for trial in 0..TRIALS {
        let dir = tmp.path().join(format!("store-{trial}"));
        let certs: Vec<NewCertificate> =
            (0..WRITERS).map(|n| new_cert(tmp.path(), &ca, &format!("c{n}"))).collect::<anyhow::Result<_>>()?;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(WRITERS));
        let writers: Vec<_> = certs
            .into_iter()
            .map(|cert| {
                let dir = dir.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || -> Result<String, StoreError> {
                    barrier.wait();
                    let mut store = Store::open(&dir)?;
                    Ok(store.create(cert)?.name)
                })
            })
            .collect();
        for writer in writers {
            let result = writer.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
            assert!(result.is_ok(), "trial {trial}: {}", result.unwrap_err());
        }
        // Every key unseals with the key file that is left.
        let store = Store::open(&dir)?;
        let records = store.list()?;
        assert_eq!(records.len(), WRITERS, "trial {trial}");
        for record in &records {
            store.private_key(record).map_err(|e| anyhow::anyhow!("trial {trial}: {}: {e}", record.name))?;
        }
    }
    Ok(())
}

#[test]
fn an_empty_key_file_is_explained_with_what_to_do() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    // A new store whose first start (by an older version) was interrupted after creating the file.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh)?;
    std::fs::write(fresh.join(KEY_FILE), "")?;
    let error = Store::open(&fresh).unwrap_err();
    assert!(error.to_string().contains("delete that file and run the command again"), "{error}");
    std::fs::remove_file(fresh.join(KEY_FILE))?;
    let mut store = Store::open(&fresh)?;
    let record = store.create(new_cert(tmp.path(), &ca, "a")?)?;
    store.private_key(&record)?;
    drop(store);

    // A store that sealed keys, whose key file was emptied: restore it; nothing changed.
    std::fs::write(fresh.join(KEY_FILE), "")?;
    let error = Store::open(&fresh).unwrap_err();
    assert!(error.to_string().contains("restore it from your backup"), "{error}");
    Ok(())
}

#[test]
fn records_changed_without_the_master_key_are_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    let dir = tmp.path().join("store");
    let mut store = Store::open(&dir)?;
    let dev = store.create(new_cert(tmp.path(), &ca, "dev_only")?)?;
    let off = store.create(new_cert(tmp.path(), &ca, "switched_off")?)?;
    store.set_enabled("switched_off", false)?;
    let untouched = store.create(new_cert(tmp.path(), &ca, "untouched")?)?;
    drop(store);

    // Someone with write access to store.db but not the key re-scopes one record to
    // production and switches another on.
    let db = rusqlite::Connection::open(dir.join(DATABASE_FILE))?;
    db.execute("UPDATE certificates SET environments = 'production' WHERE id = ?1", [&dev.id])?;
    db.execute("UPDATE certificates SET enabled = 1 WHERE id = ?1", [&off.id])?;
    drop(db);

    let mut store = Store::open(&dir)?;
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

#[test]
fn a_store_from_before_record_macs_gets_them_at_first_open() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = DevCa::generate("test ca", 30)?;
    let dir = tmp.path().join("store");
    let mut store = Store::open(&dir)?;
    let record = store.create(new_cert(tmp.path(), &ca, "legacy")?)?;
    drop(store);
    // As an older edgemtls left it: no MAC, and the old key-check marker.
    let key_text = std::fs::read_to_string(dir.join(KEY_FILE))?;
    let key = MasterKey::from_base64(&key_text, &KeySource::Environment)?;
    let db = rusqlite::Connection::open(dir.join(DATABASE_FILE))?;
    db.execute("UPDATE certificates SET record_mac = NULL", [])?;
    db.execute("UPDATE store_meta SET value = ?1 WHERE key = 'key_check'", [key.seal(KEY_CHECK_CONTEXT, b"ok")?])?;
    drop(db);

    let store = Store::open(&dir)?;
    store.private_key(&store.find(&record.id)?)?;
    drop(store);
    // From then on a missing MAC is tampering, not an old store.
    let db = rusqlite::Connection::open(dir.join(DATABASE_FILE))?;
    db.execute("UPDATE certificates SET record_mac = NULL", [])?;
    drop(db);
    let store = Store::open(&dir)?;
    assert!(matches!(store.private_key(&store.find(&record.id)?), Err(StoreError::Tampered { .. })));
    Ok(())
}
