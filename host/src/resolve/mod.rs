//! Certificate names to client identities, in the environment the host runs in.
//!
//! The resolver holds an in-memory snapshot of the store: a request does one hash lookup
//! and clones an `Arc`, never a database query. A watcher thread polls the store's
//! generation counter and swaps in a new snapshot when anything changed; identities whose
//! record did not change are carried over with their connection pools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::Environment;
use crate::pki::{ChainProblem, rfc3339};
use crate::store::{CertificateRecord, ChangeFeed, Store, StoreError, StoreLocation, StoredKey};
use crate::upstream::{Certificate, CertificateKey, ClientIdentity, TrustProfiles};

/// Why a certificate name cannot be used. These reach the guest as typed WIT errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No certificate has this name.
    #[error("certificate '{name}' not found")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The certificate is disabled.
    #[error("certificate '{name}' is disabled")]
    Disabled {
        /// The name.
        name: String,
    },
    /// The certificate is not scoped to the running environment.
    #[error("certificate '{name}' is not available in environment {environment}")]
    NotInEnvironment {
        /// The name.
        name: String,
        /// The environment the host runs in.
        environment: Environment,
    },
    /// The certificate has expired.
    #[error("certificate '{name}' expired at {}; import a renewed one under a new name and switch to it", rfc3339(*not_after))]
    Expired {
        /// The name.
        name: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The certificate is not valid yet.
    #[error("certificate '{name}' is not valid before {}", rfc3339(*not_before))]
    NotYetValid {
        /// The name.
        name: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// The stored key does not unseal.
    #[error(
        "certificate '{name}' cannot be used: its stored key does not unseal (another master key, or a damaged record); import it again under a new name"
    )]
    Damaged {
        /// The name.
        name: String,
    },
    /// The stored chain breaks a limit TLS peers impose (it was imported before the limit
    /// existed): presenting it would fail every request.
    #[error(
        "certificate '{name}' cannot be used: its record holds {problem}; import it again under a new name with only the leaf and the intermediates up to the CA, each once"
    )]
    BadChain {
        /// The name.
        name: String,
        /// The limit its chain breaks.
        problem: ChainProblem,
    },
}

impl ResolveError {
    /// The stable, machine-readable reason: `certificate-not-found`, `certificate-disabled`,
    /// `certificate-not-in-environment`, `certificate-expired`, `certificate-not-yet-valid`,
    /// `certificate-damaged`, `certificate-bad-chain`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "certificate-not-found",
            Self::Disabled { .. } => "certificate-disabled",
            Self::NotInEnvironment { .. } => "certificate-not-in-environment",
            Self::Expired { .. } => "certificate-expired",
            Self::NotYetValid { .. } => "certificate-not-yet-valid",
            Self::Damaged { .. } => "certificate-damaged",
            Self::BadChain { .. } => "certificate-bad-chain",
        }
    }
}

#[derive(Clone)]
struct Entry {
    enabled: bool,
    environments: Vec<Environment>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// Present when the certificate is enabled and allowed in this environment.
    identity: Option<Arc<ClientIdentity>>,
    id: String,
    version: i64,
    /// Why a record this host would serve cannot be: the name resolves to that error.
    unusable: Option<Unusable>,
}

/// Why a stored record cannot be served.
#[derive(Clone)]
enum Unusable {
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
    generation: i64,
    entries: HashMap<String, Entry>,
    /// Certificate ids, to the name they belong to: an id works wherever a name does.
    ids: HashMap<String, String>,
    environment: Environment,
    trust: Arc<TrustProfiles>,
    anonymous: Arc<ClientIdentity>,
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

/// Resolves certificate names to identities; see the module docs.
pub struct Resolver {
    environment: Environment,
    store: Mutex<Store>,
    location: StoreLocation,
    snapshot: ArcSwap<Snapshot>,
    health: Mutex<StoreHealth>,
}

/// Whether the last look at the store worked. A node that cannot reach its store keeps
/// serving the identities it holds; this says so in `/healthz` and the metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth {
    /// Why the last look failed, and since when it has been failing; `None` when it worked.
    pub unreachable: Option<(String, OffsetDateTime)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("environment", &self.environment).field("store", &self.location).finish_non_exhaustive()
    }
}

impl Resolver {
    /// Opens the store at `location` and loads the first snapshot.
    pub fn open(location: &StoreLocation, environment: Environment, trust: Arc<TrustProfiles>) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(location)?;
        let snapshot = load_snapshot(&store, environment, trust, None)?;
        Ok(Arc::new(Self {
            environment,
            store: Mutex::new(store),
            location: location.clone(),
            snapshot: ArcSwap::from_pointee(snapshot),
            health: Mutex::new(StoreHealth::default()),
        }))
    }

    /// The environment names are resolved in.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The identity that presents no certificate.
    pub fn anonymous(&self) -> Arc<ClientIdentity> {
        self.current().anonymous.clone()
    }

    /// The snapshot requests resolve against now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Reads the store as it is now and builds every identity against `trust`, with new
    /// pools, without installing anything: a config reload validates its certificate names
    /// against this and then installs exactly it with [`Resolver::install`].
    pub fn load_with_trust(&self, trust: Arc<TrustProfiles>) -> Result<Arc<Snapshot>, StoreError> {
        let store = lock(&self.store);
        Ok(Arc::new(load_snapshot(&store, self.environment, trust, None)?))
    }

    /// Makes `snapshot` (from [`Resolver::load_with_trust`]) the one requests resolve
    /// against. Requests in flight finish on the identities they hold; if the store changed
    /// since it was read, the next poll reloads on top of it.
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    /// Seconds until expiry of every enabled certificate usable in this environment.
    pub fn expiries(&self, now: OffsetDateTime) -> Vec<(String, i64)> {
        let snapshot = self.current();
        let mut out: Vec<_> = snapshot
            .entries
            .iter()
            .filter(|(_, e)| e.enabled && e.environments.contains(&self.environment))
            .map(|(name, e)| (name.clone(), (e.not_after - now).whole_seconds()))
            .collect();
        out.sort();
        out
    }

    /// The certificates whose record cannot be served (named in the log when loaded): the
    /// stored key does not unseal, or the stored chain breaks a limit.
    pub fn damaged_certificates(&self) -> Vec<String> {
        let snapshot = self.current();
        let mut names: Vec<String> = snapshot.entries.iter().filter(|(_, e)| e.unusable.is_some()).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// Number of certificates in the current snapshot.
    pub fn certificate_count(&self) -> usize {
        self.current().entries.len()
    }

    /// Resolves `name` at the current time.
    pub fn resolve(&self, name: &str) -> Result<Arc<ClientIdentity>, ResolveError> {
        self.resolve_at(name, OffsetDateTime::now_utc())
    }

    /// Resolves `name` as of `now`.
    pub fn resolve_at(&self, name: &str, now: OffsetDateTime) -> Result<Arc<ClientIdentity>, ResolveError> {
        self.current().resolve_at(name, now)
    }

    /// A warning when `name`'s certificate is within 14 days of expiry at `now`.
    pub fn expiry_warning(&self, name: &str, now: OffsetDateTime) -> Option<String> {
        self.current().expiry_warning(name, now)
    }

    /// Reloads the snapshot if the store changed since the last load. Returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let mut store = lock(&self.store);
        // A read-only connection may not see later writes by the store's owner (it can be
        // opened as immutable): open it afresh to look.
        if store.is_read_only() {
            *store = Store::open(&self.location)?;
        }
        let previous = self.current();
        if store.generation()? == previous.generation {
            return Ok(false);
        }
        let snapshot = Arc::new(load_snapshot(&store, self.environment, previous.trust.clone(), Some(&previous))?);
        // Install only on top of the snapshot this was built from: a config reload may have
        // installed one with new trust meanwhile, which must not be undone.
        let replaced = self.snapshot.compare_and_swap(&previous, snapshot.clone());
        let installed = Arc::ptr_eq(&replaced, &previous);
        if installed {
            tracing::info!(generation = snapshot.generation, certificates = snapshot.entries.len(), "certificate store reloaded");
        }
        Ok(installed)
    }

    /// Where the store is.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Whether the store answered the last time it was looked at.
    pub fn store_health(&self) -> StoreHealth {
        lock(&self.health).clone()
    }

    /// Looks at the store once, reloading if it changed, and records whether that worked.
    /// Only changes of state are logged: an unreachable store is one warning, not one per poll.
    fn look(&self) {
        let result = self.reload_if_changed();
        let mut health = lock(&self.health);
        match (result, health.unreachable.is_some()) {
            (Ok(_), false) => {}
            (Ok(_), true) => {
                health.unreachable = None;
                tracing::info!(store = %self.location, "certificate store reachable again; caught up with its changes");
            }
            (Err(error), was_unreachable) => {
                if !was_unreachable {
                    tracing::warn!(store = %self.location, %error, "certificate store reload failed; serving from the last snapshot until it answers");
                }
                let since = health.unreachable.take().map_or_else(OffsetDateTime::now_utc, |(_, since)| since);
                health.unreachable = Some((error.to_string(), since));
            }
        }
    }

    /// Starts a thread that keeps the snapshot current while the resolver lives: it looks at
    /// the store every `interval`, and at once when the store announces a change (a shared
    /// store's `NOTIFY`; then `shared_interval` is the safety-net poll).
    pub fn watch(self: &Arc<Self>, interval: Duration, shared_interval: Duration) {
        let feed: Option<ChangeFeed> = lock(&self.store).change_feed();
        let spawned = match feed {
            None => crate::background::every("edgemtls-store-watch", interval, self, Self::look),
            Some(feed) => crate::background::every_or_when(
                "edgemtls-store-watch",
                shared_interval,
                self,
                move |timeout| {
                    feed.wait(timeout);
                },
                Self::look,
            ),
        };
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the store watcher; certificate changes need a restart");
        }
    }
}

fn load_snapshot(
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pki::{DevCa, ImportRequest, IssueOptions, load_identity, validate_client_identity};
    use crate::store::NewCertificate;

    fn add(store: &mut Store, dir: &Path, ca: &DevCa, name: &str) -> anyhow::Result<String> {
        let files =
            ca.issue_to(&IssueOptions { common_name: name.into(), server: false, sans: vec![], days: 30, ..Default::default() }, dir)?;
        let identity = load_identity(ImportRequest { cert_path: &files.cert, key_path: Some(&files.key), password: None })?;
        let metadata = validate_client_identity(&identity, OffsetDateTime::now_utc())?;
        Ok(store.create(NewCertificate { name: name.into(), environments: Environment::ALL.to_vec(), identity, metadata })?.id)
    }

    #[test]
    fn an_id_resolves_like_its_name_and_a_damaged_record_costs_only_its_own_name() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let ca = DevCa::generate("test ca", 30)?;
        let dir = tmp.path().join("store");
        let location = StoreLocation::Directory(dir.clone());
        let mut store = Store::open(&location)?;
        let good = add(&mut store, tmp.path(), &ca, "good")?;
        let broken = add(&mut store, tmp.path(), &ca, "broken")?;
        drop(store);
        // Damage one sealed key on disk.
        let db = rusqlite::Connection::open(dir.join("store.db"))?;
        db.execute("UPDATE certificates SET key_sealed = zeroblob(64) WHERE id = ?1", [&broken])?;
        drop(db);

        let trust = Arc::new(TrustProfiles::new(&[])?);
        let resolver = Resolver::open(&location, Environment::Development, trust)?;
        assert_eq!(resolver.resolve("good")?.name(), Some("good"));
        assert_eq!(resolver.resolve(&good)?.name(), Some("good"), "an id resolves to its certificate");
        let error = resolver.resolve("broken").unwrap_err();
        assert!(matches!(error, ResolveError::Damaged { .. }), "{error}");
        assert_eq!(resolver.damaged_certificates(), vec!["broken".to_string()], "reported for /healthz");
        assert!(resolver.resolve(&broken).is_err());
        Ok(())
    }

    /// A record imported before the chain limits (1,550 copies of the CA behind the leaf,
    /// issue 30 item 6) is not served: its name resolves to the reason, on load and reload.
    #[test]
    fn a_stored_chain_over_the_limits_is_not_served() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let ca = DevCa::generate("test ca", 30)?;
        let location = StoreLocation::Directory(tmp.path().join("store"));
        let mut store = Store::open(&location)?;
        add(&mut store, tmp.path(), &ca, "good")?;
        // Past load_identity, which refuses such chains now, straight into the store.
        let store_bloated = |store: &mut Store, name: &str, copies: usize| -> anyhow::Result<()> {
            let files = ca.issue_to(&IssueOptions { common_name: name.into(), days: 30, ..Default::default() }, tmp.path())?;
            let mut identity = load_identity(ImportRequest { cert_path: &files.cert, key_path: Some(&files.key), password: None })?;
            let ca_cert = identity.chain[1].clone();
            identity.chain.extend(std::iter::repeat_n(ca_cert, copies));
            let metadata = validate_client_identity(&identity, OffsetDateTime::now_utc())?;
            store.create(NewCertificate { name: name.into(), environments: Environment::ALL.to_vec(), identity, metadata })?;
            Ok(())
        };
        store_bloated(&mut store, "bloated", 1550)?;

        let trust = Arc::new(TrustProfiles::new(&[])?);
        let resolver = Resolver::open(&location, Environment::Development, trust)?;
        assert_eq!(resolver.resolve("good")?.name(), Some("good"));
        let error = resolver.resolve("bloated").unwrap_err();
        assert_eq!(error, ResolveError::BadChain { name: "bloated".into(), problem: ChainProblem::TooLong { length: 1552 } });
        assert!(error.to_string().contains("a chain of 1552 certificates, more than the 10 accepted"), "{error}");
        assert_eq!(error.reason(), "certificate-bad-chain");
        assert_eq!(resolver.damaged_certificates(), vec!["bloated".to_string()]);

        // One added while serving: the watcher's reload refuses it too.
        store_bloated(&mut store, "repeated", 1)?;
        assert!(resolver.reload_if_changed()?);
        let error = resolver.resolve("repeated").unwrap_err();
        assert!(matches!(&error, ResolveError::BadChain { problem: ChainProblem::Duplicate { count: 2, .. }, .. }), "{error}");
        Ok(())
    }
}
