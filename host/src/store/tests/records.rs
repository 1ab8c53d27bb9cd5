//! A record's life in both backends: created, found, updated, deleted, with its key sealed or in a token.

use super::*;

store_suite!(create_find_update_delete_and_generation, private_key_round_trips_and_is_not_stored_in_clear, a_token_key_is_kept_as_its_uri);

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
    store.disable("billing_api", false)?;
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
