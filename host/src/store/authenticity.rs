//! What the master key vouches for: the sealed key check that tells a wrong key, and each
//! record's MAC over what decides where its key may be used.

use std::sync::Mutex;

use super::backend::{Authenticated, Backend, KEY_CHECK, Queries};
use super::{KeySource, MasterKey, Store, StoreError, StoreLocation, shown, upgrade_needed};

/// The associated data that binds the key-check value to its purpose.
pub(super) const KEY_CHECK_CONTEXT: &str = "edgemtls master key check";

/// The key-check plaintext of a store whose records all carry a MAC; `b"ok"` marks a store
/// from before record MACs, whose records get theirs at the next open. The marker is sealed,
/// so it cannot be forged without the master key; what the seal cannot stop is a replay of
/// an earlier valid state (an old marker, or a record rolled back to a version it once had):
/// it detects changes, not rollbacks. Keep the store's directory writable by its owner only.
const RECORDS_AUTHENTICATED: &[u8] = b"records-authenticated";

/// What decides where a key may be used, bound under the master key: without the key,
/// nobody can rename, re-scope, enable or re-chain a record unnoticed.
pub(super) fn record_context(id: &str, name: &str, environments: &str, enabled: bool, chain_pem: &str) -> String {
    let chain = ring::digest::digest(&ring::digest::SHA256, chain_pem.as_bytes());
    let chain: String = chain.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("edgemtls record v1\n{id}\n{name}\n{environments}\n{enabled}\n{chain}")
}

impl Authenticated {
    pub(super) fn context(&self) -> String {
        record_context(&self.id, &self.name, &self.environments, self.enabled, &self.chain_pem)
    }

    pub(super) fn verify(&self, key: &MasterKey) -> Result<(), StoreError> {
        match &self.mac {
            Some(mac) if key.open(&self.context(), mac).is_some() => Ok(()),
            _ => Err(StoreError::Tampered { name: self.name.clone() }),
        }
    }
}

/// Reads one record's authenticated columns and checks its MAC.
pub(super) fn verified(queries: &mut dyn Queries, key: &MasterKey, id: &str, reference: &str) -> Result<Authenticated, StoreError> {
    let row = queries.authenticated(Some(id))?.pop().ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
    row.verify(key)?;
    Ok(row)
}

impl Store {
    /// Checks `key` against the store's sealed key check (recording it for a new store),
    /// and gives records from before record MACs theirs.
    pub(super) fn unlock(
        mut backend: Box<dyn Backend>,
        location: StoreLocation,
        key: MasterKey,
        source: KeySource,
    ) -> Result<Self, StoreError> {
        let read_only = backend.read_only().is_some();
        let key_check = {
            let mut queries = backend.queries()?;
            match queries.meta(KEY_CHECK)? {
                Some(sealed) => sealed,
                None if read_only => return Err(upgrade_needed(&location)),
                None => {
                    let sealed = key.seal(KEY_CHECK_CONTEXT, RECORDS_AUTHENTICATED)?;
                    queries.insert_meta_if_absent(KEY_CHECK, &sealed)?;
                    // Another process may have recorded its key first: check against what is there.
                    queries.meta(KEY_CHECK)?.ok_or_else(|| StoreError::Corrupt { id: KEY_CHECK.into(), reason: "missing".into() })?
                }
            }
        };
        let Some(marker) = key.open(KEY_CHECK_CONTEXT, &key_check) else {
            return Err(StoreError::WrongMasterKey { store: shown(&location), key_source: source });
        };
        if marker != RECORDS_AUTHENTICATED {
            if read_only {
                return Err(upgrade_needed(&location));
            }
            authenticate_existing_records(backend.as_mut(), &key)?;
        }
        Ok(Self { backend: Mutex::new(backend), location, key })
    }
}

/// Gives every record of a store from before record MACs its MAC, then marks the store as
/// authenticated. One transaction: concurrent opens do it once.
fn authenticate_existing_records(backend: &mut dyn Backend, key: &MasterKey) -> Result<(), StoreError> {
    let mut transaction = backend.transaction()?;
    let q = transaction.as_mut();
    let marker = q.meta(KEY_CHECK)?.unwrap_or_default();
    if key.open(KEY_CHECK_CONTEXT, &marker).as_deref() == Some(RECORDS_AUTHENTICATED) {
        return Ok(());
    }
    for row in q.authenticated(None)? {
        q.set_mac(&row.id, &key.seal(&row.context(), b"")?)?;
    }
    q.set_meta(KEY_CHECK, &key.seal(KEY_CHECK_CONTEXT, RECORDS_AUTHENTICATED)?)?;
    transaction.commit()
}
