//! The master key in both backends: a wrong one refused, one chosen under concurrent first use, records changed without it refused, records from before MACs given theirs.

use super::*;
use crate::store::authenticity::KEY_CHECK_CONTEXT;

store_suite!(
    wrong_master_key_is_a_clear_error_and_changes_nothing,
    concurrent_first_use_of_a_new_store_loses_no_key,
    records_changed_without_the_master_key_are_refused,
    a_store_from_before_record_macs_gets_them_at_first_open
);

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
    store.disable("switched_off", false)?;
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
    let error = store.disable("dev_only", false).unwrap_err();
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
