//! What only a store on this machine has: its files.

use super::*;

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
