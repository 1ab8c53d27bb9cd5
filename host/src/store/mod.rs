//! The certificate store: certificates with private keys sealed by AES-256-GCM, in an SQLite
//! file on one machine or a PostgreSQL database that many nodes share.
//!
//! Every write is one transaction and bumps a store-wide generation counter, so a running
//! host can notice changes with one cheap query and reload its snapshot. The rules (names,
//! sealing, record MACs, delete protection) live here, once; the backends only run the
//! statements ([`backend::Queries`]).

mod authenticity;
mod backend;
mod columns;
mod deployments;
mod error;
mod key_source;
mod location;
mod model;
mod names;
mod postgres;
mod seal;
mod sqlite;

use std::sync::{Mutex, MutexGuard};

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

pub use deployments::DEPLOYMENT_TTL;
pub use error::{DatabaseError, StoreError};
pub use key_source::{KeySource, MASTER_KEY_ENV};
pub use location::{DEFAULT_STORE_DIR, PostgresUrl, STORE_ENV, StoreLocation};
pub use model::{CertificateRecord, CertificateSummary, Deployment, KeyLocation, StoredKey};
pub use names::{MAX_NAME_LEN, validate_name};
pub use postgres::ChangeFeed;
pub use seal::MasterKey;
pub(crate) use seal::random_hex;

use crate::Environment;
use crate::pki::{CertificateMetadata, Identity};
use authenticity::{record_context, verified};
use backend::{Authenticated, Backend, NewRow, Queries, RawRecord, ReadOnlyCause};
use columns::{KeyToStore, chain_to_pem, decode_key, encode_key, environments_to_text};
use deployments::deployment_cutoff;

/// The database file inside a store directory.
pub const DATABASE_FILE: &str = "store.db";
/// The key file created beside the database when `EDGEMTLS_MASTER_KEY` is not set.
pub const KEY_FILE: &str = "master.key";

/// A certificate to add with [`Store::create`].
#[derive(Debug)]
pub struct NewCertificate {
    /// Unique name.
    pub name: String,
    /// Environments it may be used in.
    pub environments: Vec<Environment>,
    /// The validated chain and key.
    pub identity: Identity,
    /// The leaf's metadata from [`crate::pki::validate_client_identity`].
    pub metadata: CertificateMetadata,
}

/// A certificate whose private key stays in a PKCS#11 token, to add with
/// [`Store::create_with_token_key`]: the store keeps the key's URI, never the key.
#[derive(Debug)]
pub struct NewTokenCertificate {
    /// Unique name.
    pub name: String,
    /// Environments it may be used in.
    pub environments: Vec<Environment>,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's metadata.
    pub metadata: CertificateMetadata,
    /// The key's PKCS#11 URI, without a PIN (checked against the leaf by the caller).
    pub key_uri: String,
}

/// An open certificate store.
pub struct Store {
    backend: Mutex<Box<dyn Backend>>,
    location: StoreLocation,
    key: MasterKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("location", &self.location).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `location`. For a directory, the master key
    /// comes from `EDGEMTLS_MASTER_KEY` or `dir/master.key`, which is created (mode 0600) for
    /// a new store; a shared PostgreSQL store takes it from `EDGEMTLS_MASTER_KEY` only.
    pub fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with_key(location, None)
    }

    /// Opens (creating if needed) the store at `location` with `key` rather than the one
    /// the environment or the key file names (for `store copy`, which holds two stores).
    pub fn open_with_key(location: &StoreLocation, key: Option<(MasterKey, KeySource)>) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Directory(dir) => sqlite::open(dir, key),
            StoreLocation::Postgres(url) => postgres::open(url, true, key),
        }
    }

    /// Opens the store at `location` only if it exists; never creates one.
    pub fn open_existing(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_existing_with_key(location, None)
    }

    /// [`Store::open_existing`] with `key` rather than the default one.
    pub fn open_existing_with_key(location: &StoreLocation, key: Option<(MasterKey, KeySource)>) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Directory(dir) if sqlite::exists(dir)? => sqlite::open(dir, key),
            StoreLocation::Directory(_) => Err(StoreError::NoStore { location: location.clone() }),
            StoreLocation::Postgres(url) => postgres::open(url, false, key),
        }
    }

    /// Whether this store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.backend().read_only().is_some()
    }

    /// Announcements of changes made by other processes (PostgreSQL's `NOTIFY`), to reload
    /// sooner than the next poll; `None` where only polling tells.
    pub fn change_feed(&self) -> Option<ChangeFeed> {
        self.backend().change_feed()
    }

    /// Where this store lives.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn backend(&self) -> MutexGuard<'_, Box<dyn Backend>> {
        self.backend.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn writable(&self, action: &str) -> Result<(), StoreError> {
        let dir = || self.location.directory().map(std::path::Path::to_path_buf).unwrap_or_default();
        match self.backend().read_only() {
            None => Ok(()),
            Some(ReadOnlyCause::NotWritable) => Err(StoreError::ReadOnly { dir: dir(), action: action.to_string() }),
            Some(ReadOnlyCause::DiskFull) => Err(StoreError::DiskFull { dir: dir() }),
        }
    }

    /// Runs `read` on the store's connection.
    fn read<T>(&self, read: impl FnOnce(&mut dyn Queries) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut backend = self.backend();
        let mut queries = backend.queries()?;
        read(queries.as_mut())
    }

    /// Runs `write` in one write transaction and commits it if `write` succeeds.
    fn write<T>(&self, action: &str, write: impl FnOnce(&mut dyn Queries) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.writable(action)?;
        let mut backend = self.backend();
        let mut transaction = backend.transaction()?;
        let value = write(transaction.as_mut())?;
        transaction.commit()?;
        Ok(value)
    }

    /// A counter that changes with every write; a host polls it to know when to reload.
    pub fn generation(&self) -> Result<i64, StoreError> {
        self.read(|q| q.generation())
    }

    /// Adds a certificate. The name must be valid and free, with at least one environment.
    pub fn create(&mut self, new: NewCertificate) -> Result<CertificateRecord, StoreError> {
        self.add_new(&new.name, &new.environments, (&new.identity.chain, KeyToStore::Sealed(&new.identity.key)), &new.metadata)
    }

    /// Adds a certificate whose key is in a PKCS#11 token: the store seals and keeps the
    /// key's URI where it would keep the key. Same rules as [`Store::create`].
    pub fn create_with_token_key(&mut self, new: NewTokenCertificate) -> Result<CertificateRecord, StoreError> {
        self.add_new(&new.name, &new.environments, (&new.chain, KeyToStore::Token(&new.key_uri)), &new.metadata)
    }

    /// Adds an enabled certificate under a new id, after the rules every new one meets: a
    /// writable store, a valid name, at least one environment.
    fn add_new(
        &mut self,
        name: &str,
        environments: &[Environment],
        chain_and_key: (&[CertificateDer<'static>], KeyToStore<'_>),
        metadata: &CertificateMetadata,
    ) -> Result<CertificateRecord, StoreError> {
        self.writable("add a certificate")?;
        validate_name(name)?;
        if environments.is_empty() {
            return Err(StoreError::NoEnvironments);
        }
        let id = new_id()?;
        self.insert(&id, name, environments, true, chain_and_key, metadata)?;
        self.find(&id)
    }

    /// Adds a certificate from another store as it is there (its id, name, environments and
    /// state), sealing its key with this store's master key: what `store copy` does per record.
    /// The id is kept because configs and scripts may name a certificate by it; an id this
    /// store already has is refused.
    pub fn copy_in(&mut self, record: &CertificateRecord, key: StoredKey) -> Result<CertificateRecord, StoreError> {
        self.writable("add a certificate")?;
        let key = match &key {
            StoredKey::Sealed(der) => KeyToStore::Sealed(der),
            StoredKey::Token(uri) => KeyToStore::Token(uri),
        };
        self.insert(&record.id, &record.name, &record.environments, record.enabled, (&record.chain, key), &record.metadata)?;
        self.find(&record.id)
    }

    /// Writes a new record under `id`.
    fn insert(
        &self,
        id: &str,
        name: &str,
        environments: &[Environment],
        enabled: bool,
        (chain, key): (&[CertificateDer<'static>], KeyToStore<'_>),
        metadata: &CertificateMetadata,
    ) -> Result<(), StoreError> {
        let chain_pem = chain_to_pem(chain);
        let key_sealed = self.key.seal(id, &encode_key(key))?;
        let metadata_json =
            serde_json::to_string(metadata).map_err(|e| StoreError::Corrupt { id: id.to_string(), reason: e.to_string() })?;
        let environments = environments_to_text(environments);
        let mac = self.key.seal(&record_context(id, name, &environments, enabled, &chain_pem), b"")?;
        let row = NewRow {
            id,
            name,
            environments: &environments,
            enabled,
            chain_pem: &chain_pem,
            key_sealed: &key_sealed,
            metadata: &metadata_json,
            not_after: metadata.not_after.unix_timestamp(),
            now: OffsetDateTime::now_utc().unix_timestamp(),
            mac: &mac,
            key_uri: match key {
                KeyToStore::Sealed(_) => None,
                KeyToStore::Token(uri) => Some(uri),
            },
        };
        self.write("add a certificate", |q| {
            // Names differ by more than case: `Billing` next to `billing` is a mistake waiting.
            if let Some(existing) = q.name_like(name)? {
                return Err(StoreError::NameTaken(existing));
            }
            if let Some(existing) = q.record(id)?.filter(|existing| existing.id == id) {
                return Err(StoreError::IdTaken { id: id.to_string(), name: existing.name });
            }
            q.insert(&row)?;
            q.bump_generation()
        })
    }

    /// All certificates, ordered by name.
    pub fn list(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        self.read(|q| q.records())?.into_iter().map(RawRecord::decode).collect()
    }

    /// The certificate with this id or name.
    pub fn find(&self, reference: &str) -> Result<CertificateRecord, StoreError> {
        self.read(|q| q.record(reference))?.ok_or_else(|| StoreError::NotFound(reference.to_string()))?.decode()
    }

    /// Unseals the private key of a record (or the URI of its key in a token).
    pub fn private_key(&self, record: &CertificateRecord) -> Result<StoredKey, StoreError> {
        self.private_keys(&[record])?.pop().unwrap_or_else(|| Err(StoreError::NotFound(record.id.clone())))
    }

    /// Unseals the private keys of `records`, in one round trip: one answer per record, in
    /// order, so one record that does not unseal costs only itself.
    pub fn private_keys(&self, records: &[&CertificateRecord]) -> Result<Vec<Result<StoredKey, StoreError>>, StoreError> {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut sealed: std::collections::HashMap<String, (Authenticated, Vec<u8>)> =
            self.read(|q| q.sealed_keys(&ids))?.into_iter().map(|(row, key)| (row.id.clone(), (row, key))).collect();
        Ok(records
            .iter()
            .map(|record| {
                let (row, key) = sealed.remove(&record.id).ok_or_else(|| StoreError::NotFound(record.id.clone()))?;
                row.verify(&self.key)?;
                let plain = self.key.open(&record.id, &key).ok_or_else(|| StoreError::Unseal { name: record.name.clone() })?;
                decode_key(&plain).ok_or_else(|| StoreError::Corrupt { id: record.id.clone(), reason: "unknown key encoding".into() })
            })
            .collect())
    }

    /// Every record's id, name and version, without decoding any: a reload compares these
    /// with its snapshot and reads only what changed.
    pub fn versions(&self) -> Result<Vec<RecordVersion>, StoreError> {
        Ok(self.read(|q| q.versions())?.into_iter().map(|(id, name, version)| RecordVersion { id, name, version }).collect())
    }

    /// The records with these ids (ids not found are left out).
    pub fn records(&self, ids: &[&str]) -> Result<Vec<CertificateRecord>, StoreError> {
        self.read(|q| q.records_by_id(ids))?.into_iter().map(RawRecord::decode).collect()
    }

    /// Disables a certificate unless a live deployment uses it (checked in the same
    /// transaction as the change); `force` disables it regardless.
    pub fn disable(&mut self, reference: &str, force: bool) -> Result<CertificateRecord, StoreError> {
        let guard = |deployment: &Deployment, name: &str| !force && deployment.certificates.iter().any(|c| c == name);
        self.update_guarded(reference, Change::Enabled(false), ("disabling", ""), &guard)
    }

    /// Replaces the environments of a certificate unless that takes it away from a live
    /// deployment in an environment no longer listed; `force` does it regardless.
    pub fn rescope(&mut self, reference: &str, environments: &[Environment], force: bool) -> Result<CertificateRecord, StoreError> {
        if environments.is_empty() {
            return Err(StoreError::NoEnvironments);
        }
        let detail = format!(" to {}", environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
        let guard = |deployment: &Deployment, name: &str| {
            !force && deployment.certificates.iter().any(|c| c == name) && !environments.contains(&deployment.environment)
        };
        self.update_guarded(reference, Change::Environments(environments_to_text(environments)), ("scoping", &detail), &guard)
    }

    /// Enables a certificate. (Disabling is [`Store::disable`], which minds live deployments:
    /// there is no other way to switch one off.)
    pub fn enable(&mut self, reference: &str) -> Result<CertificateRecord, StoreError> {
        self.update_guarded(reference, Change::Enabled(true), ("enabling", ""), &|_, _| false)
    }

    /// Applies `change` to one record, unless `cut_off` says the change takes the
    /// certificate away from a live deployment: then nothing changes and the error names them.
    fn update_guarded(
        &mut self,
        reference: &str,
        change: Change,
        (verb, detail): (&str, &str),
        cut_off: &dyn Fn(&Deployment, &str) -> bool,
    ) -> Result<CertificateRecord, StoreError> {
        let record = self.find(reference)?;
        let key = &self.key;
        self.write("change a certificate", |q| {
            let affected: Vec<String> =
                q.live_deployments(deployment_cutoff())?.into_iter().filter(|d| cut_off(d, &record.name)).map(|d| d.describe()).collect();
            if !affected.is_empty() {
                return Err(StoreError::WouldCutOff {
                    change: verb.to_string(),
                    name: record.name.clone(),
                    detail: detail.to_string(),
                    deployments: affected,
                });
            }
            // A record changed behind the store's back is not blessed by a legitimate update.
            let mut row = verified(q, key, &record.id, reference)?;
            match &change {
                Change::Enabled(enabled) => row.enabled = *enabled,
                Change::Environments(environments) => row.environments.clone_from(environments),
            }
            let mac = key.seal(&row.context(), b"")?;
            if !q.update(&record.id, &row.environments, row.enabled, &mac, OffsetDateTime::now_utc().unix_timestamp())? {
                return Err(StoreError::NotFound(reference.to_string()));
            }
            q.bump_generation()
        })?;
        self.find(&record.id)
    }

    /// The certificate with this id or name if it may be deleted, which needs it disabled:
    /// the check [`Store::delete`] makes first, for asking before deleting. Whether a live
    /// deployment uses it is decided by `delete` itself.
    pub fn deletable(&self, reference: &str) -> Result<CertificateRecord, StoreError> {
        let record = self.find(reference)?;
        if record.enabled {
            return Err(StoreError::StillEnabled(record.name));
        }
        Ok(record)
    }

    /// Deletes a disabled certificate and returns what it was.
    pub fn delete(&mut self, reference: &str) -> Result<CertificateRecord, StoreError> {
        self.writable("delete a certificate")?;
        let record = self.deletable(reference)?;
        self.write("delete a certificate", |q| {
            let users: Vec<String> = q
                .live_deployments(deployment_cutoff())?
                .into_iter()
                .filter(|d| d.certificates.contains(&record.name))
                .map(|d| d.describe())
                .collect();
            if !users.is_empty() {
                return Err(StoreError::InUse { name: record.name.clone(), deployments: users });
            }
            // Re-check inside the transaction: another process may have enabled it meanwhile.
            if !q.delete_disabled(&record.id)? {
                return Err(StoreError::StillEnabled(record.name.clone()));
            }
            q.bump_generation()
        })?;
        Ok(record)
    }
}

/// A record's identity and version, as [`Store::versions`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordVersion {
    /// The record id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Bumped by every change to it.
    pub version: i64,
}

/// What [`Store::update_guarded`] changes.
enum Change {
    Enabled(bool),
    Environments(String),
}

/// How a store is named in messages: a directory store by its database file.
fn shown(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Directory(dir) => format!("'{}'", sqlite::database_path(dir).display()),
        StoreLocation::Postgres(url) => url.shown(),
    }
}

fn upgrade_needed(location: &StoreLocation) -> StoreError {
    match location {
        StoreLocation::Directory(dir) => sqlite::upgrade_needed(dir),
        StoreLocation::Postgres(url) => StoreError::Corrupt { id: url.shown(), reason: "the store's key check is missing".into() },
    }
}

fn new_id() -> Result<String, StoreError> {
    Ok(format!("cert_{}", seal::random_hex::<12>()?))
}

#[cfg(test)]
mod tests;
