//! One consistent view of the store that requests read (one hash lookup per name), and
//! building it: unchanged records carried over with their warm pools, changed ones unsealed.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::ResolveError;
use crate::Environment;
use crate::pki::ChainProblem;
use crate::store::{CertificateRecord, Store, StoreError, StoredKey};
use crate::upstream::{Certificate, CertificateKey, ClientIdentity, TrustProfiles};

#[derive(Clone)]
pub(super) struct Entry {
    pub(super) enabled: bool,
    pub(super) environments: Vec<Environment>,
    not_before: OffsetDateTime,
    pub(super) not_after: OffsetDateTime,
    /// Present when the certificate is enabled and allowed in this environment.
    identity: Option<Arc<ClientIdentity>>,
    id: String,
    version: i64,
    /// Why a record this host would serve cannot be: the name resolves to that error.
    pub(super) unusable: Option<Unusable>,
}

/// Why a stored record cannot be served.
#[derive(Clone)]
pub(super) enum Unusable {
    /// The stored key does not unseal.
    Key,
    /// The stored chain breaks a limit ([`crate::pki::chain_problem`]).
    Chain(ChainProblem),
}

impl Entry {
    fn unusable(record: &crate::store::CertificateRecord, why: Unusable) -> Self {
        Entry {
            enabled: record.enabled,
            environments: record.environments.clone(),
            not_before: record.metadata.not_before,
            not_after: record.metadata.not_after,
            identity: None,
            id: record.id.clone(),
            version: record.version,
            unusable: Some(why),
        }
    }
}

/// One consistent view of the store, with the upstream trust its identities were built for.
/// A config reload validates against a snapshot read at that moment and installs exactly it.
pub struct Snapshot {
    pub(super) generation: i64,
    pub(super) entries: HashMap<String, Entry>,
    /// Certificate ids, to the name they belong to: an id works wherever a name does.
    ids: HashMap<String, String>,
    environment: Environment,
    pub(super) trust: Arc<TrustProfiles>,
    pub(super) anonymous: Arc<ClientIdentity>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Resolves `name` as of `now`.
    pub fn resolve_at(&self, name: &str, now: OffsetDateTime) -> Result<Arc<ClientIdentity>, ResolveError> {
        let name_owned = || name.to_string();
        let entry = self.entry(name).ok_or_else(|| ResolveError::NotFound { name: name_owned() })?;
        match &entry.unusable {
            Some(Unusable::Key) => return Err(ResolveError::Damaged { name: name_owned() }),
            Some(Unusable::Chain(problem)) => return Err(ResolveError::BadChain { name: name_owned(), problem: problem.clone() }),
            None => {}
        }
        if !entry.enabled {
            return Err(ResolveError::Disabled { name: name_owned() });
        }
        if !entry.environments.contains(&self.environment) {
            return Err(ResolveError::NotInEnvironment { name: name_owned(), environment: self.environment });
        }
        if now > entry.not_after {
            return Err(ResolveError::Expired { name: name_owned(), not_after: entry.not_after });
        }
        if now < entry.not_before {
            return Err(ResolveError::NotYetValid { name: name_owned(), not_before: entry.not_before });
        }
        entry.identity.clone().ok_or_else(|| ResolveError::Disabled { name: name_owned() })
    }

    /// The entry for a name, or for an id.
    fn entry(&self, reference: &str) -> Option<&Entry> {
        self.entries.get(reference).or_else(|| self.ids.get(reference).and_then(|name| self.entries.get(name)))
    }

    /// A warning when `name`'s certificate is within 14 days of expiry at `now`.
    pub fn expiry_warning(&self, name: &str, now: OffsetDateTime) -> Option<String> {
        let entry = self.entry(name)?;
        let status = crate::pki::ExpiryStatus::at(entry.not_after, now);
        matches!(status, crate::pki::ExpiryStatus::Warning | crate::pki::ExpiryStatus::Critical)
            .then(|| format!("certificate '{name}' expires in {} days ({status})", (entry.not_after - now).whole_days()))
    }
}
pub(super) fn load_snapshot(
    store: &Store,
    environment: Environment,
    trust: Arc<TrustProfiles>,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, StoreError> {
    // Read the generation first: a write that lands during the load makes the next poll reload.
    let generation = store.generation()?;
    let mut entries = HashMap::new();
    let mut ids = HashMap::new();
    // A reload keeps every entry whose record is unchanged (same id, same version) as it is,
    // warm pools included, and reads only the changed records: with 10,000 certificates a
    // change costs one small query and the records that changed, not a parse of every chain.
    let records = match previous {
        None => store.list()?,
        Some(previous) => {
            let mut changed = Vec::new();
            for version in store.versions()? {
                ids.insert(version.id.clone(), version.name.clone());
                match previous.entries.get(&version.name) {
                    Some(entry) if entry.id == version.id && entry.version == version.version => {
                        entries.insert(version.name, entry.clone());
                    }
                    _ => changed.push(version.id),
                }
            }
            store.records(&changed.iter().map(String::as_str).collect::<Vec<_>>())?
        }
    };
    let served = |r: &&CertificateRecord| r.enabled && r.allows(environment);
    // A chain over the limits would fail every request it is presented on.
    let mut bad_chains: HashMap<String, ChainProblem> =
        records.iter().filter(served).filter_map(|r| Some((r.id.clone(), crate::pki::chain_problem(&r.chain)?))).collect();
    let usable: Vec<&CertificateRecord> = records.iter().filter(served).filter(|r| !bad_chains.contains_key(&r.id)).collect();
    // Every key in one round trip; one record that does not unseal costs its own name only.
    let mut keys: HashMap<String, Result<_, StoreError>> = usable.iter().map(|r| r.id.clone()).zip(store.private_keys(&usable)?).collect();
    for record in records {
        ids.insert(record.id.clone(), record.name.clone());
        if let Some(problem) = bad_chains.remove(&record.id) {
            let error = ResolveError::BadChain { name: record.name.clone(), problem: problem.clone() };
            tracing::error!(certificate = %record.name, %error, "certificate cannot be used; the others are served");
            entries.insert(record.name.clone(), Entry::unusable(&record, Unusable::Chain(problem)));
            continue;
        }
        let identity = match keys.remove(&record.id) {
            None => None,
            Some(Err(error)) => {
                tracing::error!(certificate = %record.name, %error, "certificate cannot be used; the others are served");
                entries.insert(record.name.clone(), Entry::unusable(&record, Unusable::Key));
                continue;
            }
            Some(Ok(key)) => {
                let key = match certificate_key(&record, key) {
                    Ok(key) => key,
                    Err(error) => {
                        tracing::error!(certificate = %record.name, %error, "certificate cannot be used; the others are served");
                        entries.insert(record.name.clone(), Entry::unusable(&record, Unusable::Key));
                        continue;
                    }
                };
                Some(Arc::new(ClientIdentity::with_certificate(
                    Certificate {
                        id: record.id.clone(),
                        name: record.name.clone(),
                        version: record.version,
                        chain: record.chain.clone(),
                        key,
                    },
                    trust.clone(),
                )))
            }
        };
        entries.insert(
            record.name.clone(),
            Entry {
                enabled: record.enabled,
                environments: record.environments.clone(),
                not_before: record.metadata.not_before,
                not_after: record.metadata.not_after,
                identity,
                id: record.id,
                version: record.version,
                unusable: None,
            },
        );
    }
    // Identities are reused only from a snapshot built with the same trust (the watcher's
    // reloads); a config reload passes no previous snapshot and builds them all anew.
    let anonymous = match previous {
        Some(previous) => previous.anonymous.clone(),
        None => Arc::new(ClientIdentity::anonymous(trust.clone())),
    };
    Ok(Snapshot { generation, entries, ids, environment, trust, anonymous })
}

/// How a record's handshakes are signed: with its unsealed key, or through the token that
/// holds it (nothing is asked of the token until a handshake).
fn certificate_key(record: &CertificateRecord, key: StoredKey) -> Result<CertificateKey, String> {
    match key {
        StoredKey::Sealed(key) => Ok(CertificateKey::Software(key)),
        StoredKey::Token(uri) => {
            let uri = crate::pkcs11::KeyUri::parse(&uri).map_err(|e| e.to_string())?;
            let kind = crate::pkcs11::KeyKind::of(record.metadata.key_type).map_err(|e| e.to_string())?;
            Ok(CertificateKey::Token(Arc::new(crate::pkcs11::TokenKey::new(uri, &crate::pkcs11::settings(), kind))))
        }
    }
}
