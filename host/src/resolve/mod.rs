//! Certificate names to client identities, in the environment the host runs in.
//!
//! The resolver holds an in-memory snapshot of the store: a request does one hash lookup
//! and clones an `Arc`, never a database query. A watcher thread polls the store's
//! generation counter and swaps in a new snapshot when anything changed; identities whose
//! record did not change are carried over with their connection pools.

mod error;
mod snapshot;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

pub use error::ResolveError;
pub use snapshot::Snapshot;
use snapshot::load_snapshot;

use crate::Environment;
use crate::store::{ChangeFeed, Store, StoreError, StoreLocation};
use crate::upstream::{ClientIdentity, TrustProfiles};

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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pki::{ChainProblem, DevCa, ImportRequest, IssueOptions, load_identity, validate_client_identity};
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
