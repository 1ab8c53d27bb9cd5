//! What a store needs from the database behind it: a handful of queries, run alone or in one
//! serialised write transaction. [`super::Store`] holds the rules (names, sealing, record
//! MACs, delete protection); SQLite and PostgreSQL only run the statements.

use super::{Deployment, StoreError};

/// A connection to the store's database.
pub(super) trait Backend: Send {
    /// Queries that run one by one, each seeing the latest committed state.
    fn queries(&mut self) -> Result<Box<dyn Queries + '_>, StoreError>;

    /// A write transaction. Writers are serialised (SQLite: an immediate transaction;
    /// PostgreSQL: an advisory lock), so what a transaction reads stays true until it
    /// commits. Dropping it uncommitted rolls it back.
    fn transaction(&mut self) -> Result<Box<dyn Queries + '_>, StoreError>;

    /// Why this connection may only read; `None` when it may write.
    fn read_only(&self) -> Option<ReadOnlyCause> {
        None
    }

    /// Announcements of other writers' changes, where the database sends them.
    fn change_feed(&self) -> Option<super::ChangeFeed> {
        None
    }
}

/// Why a store was opened for reading only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadOnlyCause {
    /// A read-only disk or mount, or no write permission.
    NotWritable,
    /// The disk is full: SQLite cannot even make the shared-memory index a writer needs.
    DiskFull,
}

/// The statements behind the store, for one connection or one transaction.
pub(super) trait Queries {
    /// The store-wide counter every certificate write bumps.
    fn generation(&mut self) -> Result<i64, StoreError>;
    /// Bumps the generation (and tells listening nodes, where the database can).
    fn bump_generation(&mut self) -> Result<(), StoreError>;
    /// A store-wide value, such as the sealed key check.
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a store-wide value unless one is there already.
    fn insert_meta_if_absent(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Sets a store-wide value.
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Every record, ordered by name.
    fn records(&mut self) -> Result<Vec<RawRecord>, StoreError>;
    /// The record with this id, else with this name.
    fn record(&mut self, reference: &str) -> Result<Option<RawRecord>, StoreError>;
    /// The name of a record whose name equals `name` ignoring case.
    fn name_like(&mut self, name: &str) -> Result<Option<String>, StoreError>;
    /// What a record's MAC covers, for one record or (`None`) all of them.
    fn authenticated(&mut self, id: Option<&str>) -> Result<Vec<Authenticated>, StoreError>;
    /// The sealed private keys of these records, with what their MACs cover, in one round
    /// trip (ids not found are left out).
    fn sealed_keys(&mut self, ids: &[&str]) -> Result<Vec<(Authenticated, Vec<u8>)>, StoreError>;
    /// Every record's id, name and version: what a reload compares with the snapshot it has.
    fn versions(&mut self) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// The records with these ids, in one round trip (ids not found are left out).
    fn records_by_id(&mut self, ids: &[&str]) -> Result<Vec<RawRecord>, StoreError>;
    /// Adds a record.
    fn insert(&mut self, row: &NewRow) -> Result<(), StoreError>;
    /// Sets a record's environments, state and MAC and bumps its version. Whether it existed.
    fn update(&mut self, id: &str, environments: &str, enabled: bool, mac: &[u8], now: i64) -> Result<bool, StoreError>;
    /// Sets a record's MAC.
    fn set_mac(&mut self, id: &str, mac: &[u8]) -> Result<(), StoreError>;
    /// Deletes a record if it is disabled. Whether it did.
    fn delete_disabled(&mut self, id: &str) -> Result<bool, StoreError>;

    /// Deployments whose heartbeat is at or after `cutoff` (unix seconds), oldest first.
    fn live_deployments(&mut self, cutoff: i64) -> Result<Vec<Deployment>, StoreError>;
    /// Records or replaces a deployment.
    fn put_deployment(&mut self, deployment: &Deployment, now: i64) -> Result<(), StoreError>;
    /// Refreshes a deployment's heartbeat and certificate names (JSON).
    fn heartbeat(&mut self, id: &str, now: i64, certificates: &str) -> Result<(), StoreError>;
    /// Removes a deployment.
    fn remove_deployment(&mut self, id: &str) -> Result<(), StoreError>;

    /// Makes a transaction's writes visible; a no-op outside one.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A certificate row as stored.
pub(super) struct RawRecord {
    pub id: String,
    pub name: String,
    pub environments: String,
    pub enabled: bool,
    pub chain_pem: String,
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    /// A token key's URI; `None` when the key is sealed in the store.
    pub key_uri: Option<String>,
}

/// The columns a record MAC covers, and the MAC, of one row.
pub(super) struct Authenticated {
    pub id: String,
    pub name: String,
    pub environments: String,
    pub enabled: bool,
    pub chain_pem: String,
    pub mac: Option<Vec<u8>>,
}

/// A row to insert.
pub(super) struct NewRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub environments: &'a str,
    pub enabled: bool,
    pub chain_pem: &'a str,
    pub key_sealed: &'a [u8],
    pub metadata: &'a str,
    pub not_after: i64,
    pub now: i64,
    pub mac: &'a [u8],
    /// A token key's URI, shown by `cert list`; `None` when the key is sealed in the store.
    pub key_uri: Option<&'a str>,
}

/// The store-wide value that checks the master key.
pub(super) const KEY_CHECK: &str = "key_check";

/// A deployment row as stored.
pub(super) struct DeploymentRow {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub config_path: String,
    pub environment: String,
    pub listen: String,
    pub certificates: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl DeploymentRow {
    pub(super) fn decode(self) -> Deployment {
        let time = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Deployment {
            id: self.id,
            hostname: self.hostname,
            pid: u32::try_from(self.pid).unwrap_or_default(),
            config_path: self.config_path,
            environment: self.environment.parse().unwrap_or(crate::Environment::Development),
            listen: self.listen,
            certificates: serde_json::from_str(&self.certificates).unwrap_or_default(),
            started_at: time(self.started_at),
            heartbeat_at: time(self.heartbeat_at),
        }
    }
}

/// A deployment's certificate names as stored (JSON).
pub(super) fn names_json(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".into())
}
