//! The certificate store: an SQLite file with private keys sealed by AES-256-GCM.
//!
//! Every write is one transaction and bumps a store-wide generation counter, so a running
//! host can notice changes with one cheap query and reload its snapshot.

mod model;
mod names;
mod seal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use time::OffsetDateTime;

pub use model::{CertificateRecord, CertificateSummary, Deployment};
pub use names::{MAX_NAME_LEN, validate_name};
pub use seal::{KeySource, MASTER_KEY_ENV, MasterKey};

use crate::Environment;
use crate::pki::{CertificateMetadata, Identity};

/// The variable that points at the store directory when `--store` is not given.
pub const STORE_ENV: &str = "EDGEMTLS_STORE";
/// The default store directory, relative to the working directory.
pub const DEFAULT_STORE_DIR: &str = ".edgemtls";
/// The database file inside the store directory.
pub const DATABASE_FILE: &str = "store.db";
/// The key file created beside the database when `EDGEMTLS_MASTER_KEY` is not set.
pub const KEY_FILE: &str = "master.key";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened or queried.
    #[error("store database '{path}': {source}", path = path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The master key is malformed or could not be made.
    #[error("master key: {reason}")]
    MasterKey {
        /// What is wrong.
        reason: String,
    },
    /// A record was changed without the master key.
    #[error("certificate '{name}' was changed outside edgemtls (its name, environments, state or chain no longer match its seal): it will not be used; import it again, and check who can write the store")]
    Tampered {
        /// The name as the record says.
        name: String,
    },
    /// The store can be read here but not written.
    #[error("the store in '{dir}' is read-only here (a read-only disk, or no write permission): it can be read, but to {action} run where it is writable", dir = dir.display())]
    ReadOnly {
        /// The store directory.
        dir: PathBuf,
        /// What could not be done.
        action: String,
    },
    /// The key file exists but is empty.
    #[error("the master key file '{path}' is empty (a write was interrupted): {}", if *sealed_anything {
        "restore it from your backup (the store's keys were sealed with the key it held)"
    } else {
        "this store never sealed a key, so delete that file and run the command again"
    }, path = path.display())]
    EmptyKeyFile {
        /// The key file.
        path: PathBuf,
        /// Whether the store holds anything sealed with the lost key.
        sealed_anything: bool,
    },
    /// The store was sealed with another master key.
    #[error("the master key from {key_source} does not match the store '{path}': it was sealed with another key (check {env} or the key file)", path = path.display(), env = MASTER_KEY_ENV)]
    WrongMasterKey {
        /// The database file.
        path: PathBuf,
        /// Where the key came from.
        key_source: KeySource,
    },
    /// The store has sealed keys but no master key is available.
    #[error("no master key for the store '{path}': set {env} or restore '{key_file}'", path = path.display(), env = MASTER_KEY_ENV, key_file = key_file.display())]
    MissingMasterKey {
        /// The database file.
        path: PathBuf,
        /// The key file that was expected.
        key_file: PathBuf,
    },
    /// A sealed private key could not be opened.
    #[error("cannot unseal the private key of certificate '{name}': wrong master key or damaged record")]
    Unseal {
        /// The certificate name.
        name: String,
    },
    /// The database was written by a newer edgemtls.
    #[error("the store '{path}' has schema version {found}; this edgemtls supports up to {supported}", path = path.display())]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// No certificate has that name or id.
    #[error("no certificate named or with id '{0}'")]
    NotFound(String),
    /// There is no store in the directory.
    #[error("no certificate store in '{dir}' (create a certificate first, or pass --store DIR / set EDGEMTLS_STORE)", dir = dir.display())]
    NoStore {
        /// The directory.
        dir: PathBuf,
    },
    /// The name is already used by another certificate.
    #[error("a certificate named '{0}' already exists")]
    NameTaken(String),
    /// The name breaks the naming rules.
    #[error("invalid certificate name '{name}': {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A certificate needs at least one environment.
    #[error("a certificate needs at least one environment (--env development|preview|production)")]
    NoEnvironments,
    /// Enabled certificates cannot be deleted.
    #[error("certificate '{0}' is enabled; disable it first (edgemtls cert disable {0})")]
    StillEnabled(String),
    /// A live deployment's config references the certificate.
    #[error("certificate '{name}' is in use by {}; change their config and reload first", deployments.join(", "))]
    InUse {
        /// The certificate name.
        name: String,
        /// The deployments, described.
        deployments: Vec<String>,
    },
    /// A change would take a certificate away from live deployments that use it.
    #[error(
        "{change} certificate '{name}'{detail} would cut off {} which {} it; point {} config at another certificate and run \
         `edgemtls reload` first, or pass --force to do it anyway",
        deployments.join(", "),
        if deployments.len() == 1 { "uses" } else { "use" },
        if deployments.len() == 1 { "its" } else { "their" }
    )]
    WouldCutOff {
        /// What was asked: "disabling" or "scoping".
        change: String,
        /// What follows the name, e.g. " to preview" (empty for disabling).
        detail: String,
        /// The certificate name.
        name: String,
        /// The deployments, described.
        deployments: Vec<String>,
    },
    /// A record could not be decoded.
    #[error("certificate record '{id}' is damaged: {reason}")]
    Corrupt {
        /// The record id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

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

/// Resolves the store directory: an explicit path, else `EDGEMTLS_STORE`, else `.edgemtls`.
pub fn store_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return crate::pki::expand_tilde(path);
    }
    match std::env::var_os(STORE_ENV) {
        Some(dir) if !dir.is_empty() => crate::pki::expand_tilde(Path::new(&dir)),
        _ => PathBuf::from(DEFAULT_STORE_DIR),
    }
}

/// The newest schema version; [`MIGRATIONS`] has one entry per version.
const SCHEMA_VERSION: i64 = 3;
const MIGRATIONS: &[&str] = &[
    // 1: certificates and store-wide metadata.
    "CREATE TABLE certificates (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        environments TEXT NOT NULL,
        enabled      INTEGER NOT NULL,
        chain_pem    TEXT NOT NULL,
        key_sealed   BLOB NOT NULL,
        metadata     TEXT NOT NULL,
        not_after    INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        version      INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE store_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    INSERT INTO store_meta (key, value) VALUES ('generation', 0);",
    // 2: serving hosts and the certificate names their config uses. Writes here do not
    // bump the generation: a heartbeat is not a certificate change.
    "CREATE TABLE deployments (
        id           TEXT PRIMARY KEY,
        hostname     TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        config_path  TEXT NOT NULL,
        environment  TEXT NOT NULL,
        listen       TEXT NOT NULL,
        certificates TEXT NOT NULL,
        started_at   INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL
    );",
    // 3: each record is authenticated under the master key (see `record_mac`); existing
    // records get theirs at the first open with the key.
    "ALTER TABLE certificates ADD COLUMN record_mac BLOB;",
];

/// The associated data that binds the key-check value to its purpose.
const KEY_CHECK_CONTEXT: &str = "edgemtls master key check";

/// The key-check plaintext of a store whose records all carry a MAC; `b"ok"` marks a store
/// from before record MACs, whose records get theirs at the next open. The marker is sealed,
/// so it cannot be forged without the master key; what the seal cannot stop is a replay of
/// an earlier valid state (an old marker, or a record rolled back to a version it once had):
/// it detects changes, not rollbacks. Keep the store's directory writable by its owner only.
const RECORDS_AUTHENTICATED: &[u8] = b"records-authenticated";

/// What decides where a key may be used, bound under the master key: without the key,
/// nobody can rename, re-scope, enable or re-chain a record unnoticed.
fn record_context(id: &str, name: &str, environments: &str, enabled: bool, chain_pem: &str) -> String {
    let chain = ring::digest::digest(&ring::digest::SHA256, chain_pem.as_bytes());
    let chain: String = chain.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("edgemtls record v1\n{id}\n{name}\n{environments}\n{enabled}\n{chain}")
}

/// The columns a record MAC covers, and the MAC, of one row.
struct Authenticated {
    id: String,
    name: String,
    environments: String,
    enabled: bool,
    chain_pem: String,
    mac: Option<Vec<u8>>,
}

impl Authenticated {
    const SELECT: &'static str = "SELECT id, name, environments, enabled, chain_pem, record_mac FROM certificates";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            environments: row.get(2)?,
            enabled: row.get(3)?,
            chain_pem: row.get(4)?,
            mac: row.get(5)?,
        })
    }

    fn context(&self) -> String {
        record_context(&self.id, &self.name, &self.environments, self.enabled, &self.chain_pem)
    }

    fn verify(&self, key: &MasterKey) -> Result<(), StoreError> {
        match &self.mac {
            Some(mac) if key.open(&self.context(), mac).is_some() => Ok(()),
            _ => Err(StoreError::Tampered { name: self.name.clone() }),
        }
    }

    fn read(conn: &Connection, id: &str) -> rusqlite::Result<Option<Self>> {
        conn.query_row(&format!("{} WHERE id = ?1", Self::SELECT), [id], Self::from_row).optional()
    }

    /// Computes and stores the row's MAC.
    fn seal(&self, conn: &Connection, key: &MasterKey) -> Result<(), StoreError> {
        let mac = key.seal(&self.context(), b"")?;
        conn.execute("UPDATE certificates SET record_mac = ?2 WHERE id = ?1", params![self.id, mac])
            .map(|_| ())
            .map_err(|source| StoreError::Database { path: PathBuf::new(), source })
    }
}

/// An open certificate store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    key: MasterKey,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StoreError {
    /// Whether the error says the database or its directory cannot be written.
    fn is_read_only(&self) -> bool {
        match self {
            StoreError::Database { source: rusqlite::Error::SqliteFailure(error, _), .. } => {
                error.code == rusqlite::ErrorCode::ReadOnly
            }
            StoreError::Io { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem)
            }
            _ => false,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. The master key comes from
    /// `EDGEMTLS_MASTER_KEY` or `dir/master.key`, which is created (mode 0600) for a new store.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        match Self::open_writable(dir) {
            // A store on a read-only disk, or one this user may read but not write: reading
            // still works (list, show, status, serve); writes say why they cannot.
            Err(error) if error.is_read_only() => Self::open_read_only(dir),
            other => other,
        }
    }

    fn open_writable(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let conn = open_connection(&path)?;
        restrict_mode(&path)?;
        let db = |source| StoreError::Database { path: path.clone(), source };
        migrate(&conn, &path)?;

        let key_check: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM store_meta WHERE key = 'key_check'", [], |r| r.get(0))
            .optional()
            .map_err(db)?;
        let key_file = dir.join(KEY_FILE);
        let found = match MasterKey::from_env_or_file(&key_file) {
            // An empty key file is the trace of an interrupted first start of an older version.
            // Replacing it here could race another process doing the same; say what to do.
            Err(StoreError::EmptyKeyFile { path: key_file, .. }) => {
                return Err(StoreError::EmptyKeyFile { path: key_file, sealed_anything: key_check.is_some() });
            }
            other => other?,
        };
        let (key, source) = match found {
            Some(found) => found,
            None if key_check.is_none() => MasterKey::create_file(&key_file)?,
            None => return Err(StoreError::MissingMasterKey { path, key_file }),
        };
        let key_check = match key_check {
            Some(sealed) => sealed,
            None => {
                let sealed = key.seal(KEY_CHECK_CONTEXT, RECORDS_AUTHENTICATED)?;
                conn.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('key_check', ?1)", [sealed])
                    .map_err(db)?;
                // Another process may have recorded its key first: check against what is there.
                conn.query_row("SELECT value FROM store_meta WHERE key = 'key_check'", [], |r| r.get(0)).map_err(db)?
            }
        };
        let Some(marker) = key.open(KEY_CHECK_CONTEXT, &key_check) else {
            return Err(StoreError::WrongMasterKey { path, key_source: source });
        };
        if marker != RECORDS_AUTHENTICATED {
            authenticate_existing_records(&conn, &key).map_err(|error| match error {
                StoreError::Database { source, .. } => StoreError::Database { path: path.clone(), source },
                other => other,
            })?;
        }
        Ok(Self { conn, path, key, read_only: false })
    }

    fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DATABASE_FILE);
        let db = |source| StoreError::Database { path: path.clone(), source };
        // Without write access SQLite cannot make the WAL index; when there is no WAL to
        // read, the file is opened as immutable.
        let wal = dir.join(format!("{DATABASE_FILE}-wal"));
        let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let location: String = path
            .to_string_lossy()
            .chars()
            .map(|c| match c {
                '?' => "%3f".to_string(),
                '#' => "%23".to_string(),
                '%' => "%25".to_string(),
                c => c.to_string(),
            })
            .collect();
        let uri = format!("file:{location}?{}", if has_wal { "mode=ro" } else { "immutable=1" });
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&uri, flags).map_err(db)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db)?;
        let key_check: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM store_meta WHERE key = 'key_check'", [], |r| r.get(0))
            .optional()
            .map_err(db)?;
        let key_file = dir.join(KEY_FILE);
        let (Some(key_check), Some((key, source))) = (key_check, MasterKey::from_env_or_file(&key_file)?) else {
            return Err(StoreError::MissingMasterKey { path, key_file });
        };
        let marker = key.open(KEY_CHECK_CONTEXT, &key_check).ok_or_else(|| StoreError::WrongMasterKey { path: path.clone(), key_source: source })?;
        if version != SCHEMA_VERSION || marker != RECORDS_AUTHENTICATED {
            return Err(StoreError::ReadOnly {
                dir: dir.to_path_buf(),
                action: "upgrade it to this version of edgemtls (open it once where it is writable)".into(),
            });
        }
        Ok(Self { conn, path, key, read_only: true })
    }

    /// Opens the store in `dir` only if it exists; never creates one.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let database = dir.join(DATABASE_FILE);
        match std::fs::metadata(&database) {
            Ok(metadata) if metadata.is_file() => Self::open(dir),
            Ok(_) => Err(StoreError::NoStore { dir: dir.to_path_buf() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NoStore { dir: dir.to_path_buf() }),
            // Not "no store": a store this user cannot see into is an answer of its own.
            Err(source) => Err(StoreError::Io { path: database, source }),
        }
    }

    /// Whether this store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn writable(&self, action: &str) -> Result<(), StoreError> {
        if self.read_only {
            let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Err(StoreError::ReadOnly { dir, action: action.to_string() });
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_error(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Database { path: self.path.clone(), source }
    }

    /// A counter that changes with every write; a host polls it to know when to reload.
    pub fn generation(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT value FROM store_meta WHERE key = 'generation'", [], |r| r.get(0))
            .map_err(self.db_error())
    }

    /// Adds a certificate. The name must be valid and free, with at least one environment.
    pub fn create(&mut self, new: NewCertificate) -> Result<CertificateRecord, StoreError> {
        self.writable("add a certificate")?;
        validate_name(&new.name)?;
        if new.environments.is_empty() {
            return Err(StoreError::NoEnvironments);
        }
        let id = new_id()?;
        let now = OffsetDateTime::now_utc();
        let chain_pem = chain_to_pem(&new.identity.chain);
        let key_sealed = self.key.seal(&id, &encode_key(&new.identity.key))?;
        let metadata = serde_json::to_string(&new.metadata)
            .map_err(|e| StoreError::Corrupt { id: id.clone(), reason: e.to_string() })?;

        let path = self.path.clone();
        let db = |source| StoreError::Database { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        // Names differ by more than case: `Billing` next to `billing` is a mistake waiting.
        let taken: Option<String> = tx
            .query_row("SELECT name FROM certificates WHERE lower(name) = lower(?1)", [&new.name], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if let Some(existing) = taken {
            return Err(StoreError::NameTaken(existing));
        }
        let environments = environments_to_text(&new.environments);
        let mac = self.key.seal(&record_context(&id, &new.name, &environments, true, &chain_pem), b"")?;
        tx.execute(
            "INSERT INTO certificates (id, name, environments, enabled, chain_pem, key_sealed, metadata, not_after, created_at, updated_at, record_mac)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
            params![
                id,
                new.name,
                environments,
                chain_pem,
                key_sealed,
                metadata,
                new.metadata.not_after.unix_timestamp(),
                now.unix_timestamp(),
                mac,
            ],
        )
        .map_err(db)?;
        bump_generation(&tx).map_err(db)?;
        tx.commit().map_err(db)?;
        self.find(&id)
    }

    /// All certificates, ordered by name.
    pub fn list(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!("{SELECT_RECORD} ORDER BY name")).map_err(self.db_error())?;
        let rows = stmt.query_map([], RawRecord::from_row).map_err(self.db_error())?;
        let mut records = Vec::new();
        for row in rows {
            records.push(row.map_err(self.db_error())?.decode()?);
        }
        Ok(records)
    }

    /// The certificate with this id or name.
    pub fn find(&self, reference: &str) -> Result<CertificateRecord, StoreError> {
        self.conn
            .query_row(
                &format!("{SELECT_RECORD} WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"),
                [reference],
                RawRecord::from_row,
            )
            .optional()
            .map_err(self.db_error())?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?
            .decode()
    }

    /// Unseals the private key of a record.
    pub fn private_key(&self, record: &CertificateRecord) -> Result<PrivateKeyDer<'static>, StoreError> {
        Authenticated::read(&self.conn, &record.id)
            .map_err(self.db_error())?
            .ok_or_else(|| StoreError::NotFound(record.id.clone()))?
            .verify(&self.key)?;
        let sealed: Vec<u8> = self
            .conn
            .query_row("SELECT key_sealed FROM certificates WHERE id = ?1", [&record.id], |r| r.get(0))
            .optional()
            .map_err(self.db_error())?
            .ok_or_else(|| StoreError::NotFound(record.id.clone()))?;
        let plain = self
            .key
            .open(&record.id, &sealed)
            .ok_or_else(|| StoreError::Unseal { name: record.name.clone() })?;
        decode_key(&plain).ok_or_else(|| StoreError::Corrupt { id: record.id.clone(), reason: "unknown key encoding".into() })
    }

    /// Disables a certificate unless a live deployment uses it (checked in the same
    /// transaction as the change); `force` disables it regardless.
    pub fn disable(&mut self, reference: &str, force: bool) -> Result<CertificateRecord, StoreError> {
        let guard = |deployment: &Deployment, name: &str| !force && deployment.certificates.iter().any(|c| c == name);
        self.update_guarded(reference, "enabled = ?2", &0_i64, ("disabling", ""), &guard)
    }

    /// Replaces the environments of a certificate unless that takes it away from a live
    /// deployment in an environment no longer listed; `force` does it regardless.
    pub fn rescope(&mut self, reference: &str, environments: &[Environment], force: bool) -> Result<CertificateRecord, StoreError> {
        if environments.is_empty() {
            return Err(StoreError::NoEnvironments);
        }
        let text = environments_to_text(environments);
        let detail = format!(" to {}", environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
        let guard = |deployment: &Deployment, name: &str| {
            !force && deployment.certificates.iter().any(|c| c == name) && !environments.contains(&deployment.environment)
        };
        self.update_guarded(reference, "environments = ?2", &text, ("scoping", &detail), &guard)
    }

    /// Replaces the environments of a certificate, whoever uses it.
    pub fn set_environments(&mut self, reference: &str, environments: &[Environment]) -> Result<CertificateRecord, StoreError> {
        if environments.is_empty() {
            return Err(StoreError::NoEnvironments);
        }
        let text = environments_to_text(environments);
        self.update(reference, "environments = ?2", &text)
    }

    /// Enables or disables a certificate.
    pub fn set_enabled(&mut self, reference: &str, enabled: bool) -> Result<CertificateRecord, StoreError> {
        self.update(reference, "enabled = ?2", &i64::from(enabled))
    }

    fn update(&mut self, reference: &str, assignment: &str, value: &dyn rusqlite::ToSql) -> Result<CertificateRecord, StoreError> {
        self.update_guarded(reference, assignment, value, ("", ""), &|_, _| false)
    }

    /// Applies `assignment` to one record, unless `cut_off` says the change takes the
    /// certificate away from a live deployment: then nothing changes and the error names them.
    fn update_guarded(
        &mut self,
        reference: &str,
        assignment: &str,
        value: &dyn rusqlite::ToSql,
        (change, detail): (&str, &str),
        cut_off: &dyn Fn(&Deployment, &str) -> bool,
    ) -> Result<CertificateRecord, StoreError> {
        self.writable("change a certificate")?;
        let record = self.find(reference)?;
        let path = self.path.clone();
        let db = |source| StoreError::Database { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let affected: Vec<String> = live_deployments(&tx, OffsetDateTime::now_utc())
            .map_err(db)?
            .into_iter()
            .filter(|d| cut_off(d, &record.name))
            .map(|d| d.describe())
            .collect();
        if !affected.is_empty() {
            return Err(StoreError::WouldCutOff {
                change: change.to_string(),
                name: record.name,
                detail: detail.to_string(),
                deployments: affected,
            });
        }
        // A record changed behind the store's back is not blessed by a legitimate update.
        Authenticated::read(&tx, &record.id)
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?
            .verify(&self.key)?;
        let changed = tx
            .execute(
                &format!("UPDATE certificates SET {assignment}, updated_at = ?3, version = version + 1 WHERE id = ?1"),
                params![record.id, value, OffsetDateTime::now_utc().unix_timestamp()],
            )
            .map_err(db)?;
        if changed == 0 {
            return Err(StoreError::NotFound(reference.to_string()));
        }
        if let Some(updated) = Authenticated::read(&tx, &record.id).map_err(db)? {
            updated.seal(&tx, &self.key).map_err(|error| match error {
                StoreError::Database { source, .. } => db(source),
                other => other,
            })?;
        }
        bump_generation(&tx).map_err(db)?;
        tx.commit().map_err(db)?;
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
        let path = self.path.clone();
        let db = |source| StoreError::Database { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let users: Vec<String> = live_deployments(&tx, OffsetDateTime::now_utc())
            .map_err(db)?
            .into_iter()
            .filter(|d| d.certificates.contains(&record.name))
            .map(|d| d.describe())
            .collect();
        if !users.is_empty() {
            return Err(StoreError::InUse { name: record.name, deployments: users });
        }
        // Re-check inside the transaction: another process may have enabled it meanwhile.
        let deleted = tx
            .execute("DELETE FROM certificates WHERE id = ?1 AND enabled = 0", [&record.id])
            .map_err(db)?;
        if deleted == 0 {
            return Err(StoreError::StillEnabled(record.name));
        }
        bump_generation(&tx).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(record)
    }
}

/// A deployment whose heartbeat is older than this is considered gone.
pub const DEPLOYMENT_TTL: time::Duration = time::Duration::seconds(15);

impl Store {
    /// Records (or replaces) a serving host.
    pub fn register_deployment(&mut self, deployment: &Deployment) -> Result<(), StoreError> {
        self.writable("register a deployment")?;
        let path = self.path.clone();
        let db = |source| StoreError::Database { path: path.clone(), source };
        self.conn
            .execute(
                "INSERT OR REPLACE INTO deployments (id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![
                    deployment.id,
                    deployment.hostname,
                    deployment.pid,
                    deployment.config_path,
                    deployment.environment.as_str(),
                    deployment.listen,
                    serde_json::to_string(&deployment.certificates).unwrap_or_else(|_| "[]".into()),
                    OffsetDateTime::now_utc().unix_timestamp(),
                ],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Refreshes a deployment's heartbeat and the certificate names it uses.
    pub fn heartbeat(&mut self, id: &str, certificates: &[String]) -> Result<(), StoreError> {
        self.writable("record a heartbeat")?;
        let names = serde_json::to_string(certificates).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "UPDATE deployments SET heartbeat_at = ?2, certificates = ?3 WHERE id = ?1",
                params![id, OffsetDateTime::now_utc().unix_timestamp(), names],
            )
            .map_err(self.db_error())?;
        Ok(())
    }

    /// Removes a deployment (its host stopped).
    pub fn remove_deployment(&mut self, id: &str) -> Result<(), StoreError> {
        self.writable("remove a deployment")?;
        self.conn.execute("DELETE FROM deployments WHERE id = ?1", [id]).map_err(self.db_error())?;
        Ok(())
    }

    /// Deployments whose heartbeat is recent.
    pub fn live_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        live_deployments(&self.conn, OffsetDateTime::now_utc()).map_err(self.db_error())
    }
}

fn live_deployments(conn: &Connection, now: OffsetDateTime) -> rusqlite::Result<Vec<Deployment>> {
    let cutoff = (now - DEPLOYMENT_TTL).unix_timestamp();
    let mut stmt = conn.prepare(
        "SELECT id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at
         FROM deployments WHERE heartbeat_at >= ?1 ORDER BY started_at",
    )?;
    let rows = stmt.query_map([cutoff], |row| {
        let environment: String = row.get(4)?;
        let certificates: String = row.get(6)?;
        let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(Deployment {
            id: row.get(0)?,
            hostname: row.get(1)?,
            pid: row.get(2)?,
            config_path: row.get(3)?,
            environment: environment.parse().unwrap_or(Environment::Development),
            listen: row.get(5)?,
            certificates: serde_json::from_str(&certificates).unwrap_or_default(),
            started_at: time(row.get(7)?),
            heartbeat_at: time(row.get(8)?),
        })
    })?;
    rows.collect()
}

const SELECT_RECORD: &str =
    "SELECT id, name, environments, enabled, chain_pem, metadata, created_at, updated_at, version FROM certificates";

struct RawRecord {
    id: String,
    name: String,
    environments: String,
    enabled: bool,
    chain_pem: String,
    metadata: String,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl RawRecord {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            environments: row.get(2)?,
            enabled: row.get(3)?,
            chain_pem: row.get(4)?,
            metadata: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
            version: row.get(8)?,
        })
    }

    fn decode(self) -> Result<CertificateRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { id: self.id.clone(), reason };
        let environments = crate::environment::parse_environments(self.environments.split(',').filter(|s| !s.is_empty()))
            .map_err(|e| corrupt(e.to_string()))?;
        let chain = crate::pki::pem::certificates(self.chain_pem.as_bytes()).map_err(|e| corrupt(format!("chain: {e}")))?;
        let metadata = serde_json::from_str(&self.metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
        let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| corrupt(e.to_string()));
        Ok(CertificateRecord {
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            id: self.id,
            name: self.name,
            environments,
            enabled: self.enabled,
            chain,
            metadata,
            version: self.version,
        })
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let db = |source| StoreError::Database { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(db)?;
    // WAL lets a running host read while the CLI writes; the timeout makes writers queue.
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    use_wal(&conn).map_err(db)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
    Ok(conn)
}

/// Gives every record of a store from before record MACs its MAC, then marks the store as
/// authenticated. One transaction: concurrent opens do it once.
fn authenticate_existing_records(conn: &Connection, key: &MasterKey) -> Result<(), StoreError> {
    let db = |source| StoreError::Database { path: PathBuf::new(), source };
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
    let marker: Vec<u8> = tx.query_row("SELECT value FROM store_meta WHERE key = 'key_check'", [], |r| r.get(0)).map_err(db)?;
    if key.open(KEY_CHECK_CONTEXT, &marker).as_deref() == Some(RECORDS_AUTHENTICATED) {
        return Ok(());
    }
    let rows: Vec<Authenticated> = {
        let mut statement = tx.prepare(Authenticated::SELECT).map_err(db)?;
        statement.query_map([], Authenticated::from_row).map_err(db)?.collect::<Result<_, _>>().map_err(db)?
    };
    for row in &rows {
        row.seal(&tx, key)?;
    }
    let sealed = key.seal(KEY_CHECK_CONTEXT, RECORDS_AUTHENTICATED)?;
    tx.execute("UPDATE store_meta SET value = ?1 WHERE key = 'key_check'", [sealed]).map_err(db)?;
    tx.commit().map_err(db)
}

/// Puts the database in WAL mode (it stays so, in the file). Switching needs an exclusive
/// lock and SQLite reports a busy database at once instead of waiting on the busy timeout,
/// which happens when several processes open a new store together: retry for as long.
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => return Err(error),
        }
    }
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let db = |source| StoreError::Database { path: path.to_path_buf(), source };
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: path.to_path_buf(), found: version, supported: SCHEMA_VERSION });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // IMMEDIATE: take the write lock first, so two processes migrating a new store queue
    // on the busy timeout instead of one failing on a lock upgrade.
    let mut conn_tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
    conn_tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
    // Re-read inside the transaction: another process may have migrated meanwhile.
    let version: i64 = conn_tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn_tx.execute_batch(sql).map_err(db)?;
        conn_tx.pragma_update(None, "user_version", index as i64 + 1).map_err(db)?;
    }
    conn_tx.commit().map_err(db)
}

fn bump_generation(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("UPDATE store_meta SET value = value + 1 WHERE key = 'generation'", []).map(|_| ())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: dir.to_path_buf(), source };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)
}

fn restrict_mode(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        if std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

fn new_id() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::MasterKey { reason: "the system random generator failed".into() })?;
    Ok(format!("cert_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn environments_to_text(environments: &[Environment]) -> String {
    environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(",")
}

fn chain_to_pem(chain: &[CertificateDer<'_>]) -> String {
    let pems: Vec<pem::Pem> = chain.iter().map(|c| pem::Pem::new("CERTIFICATE", c.to_vec())).collect();
    pem::encode_many(&pems)
}

// The sealed plaintext is one tag byte for the key encoding followed by the DER.
fn encode_key(key: &PrivateKeyDer<'_>) -> Vec<u8> {
    let (tag, der) = match key {
        PrivateKeyDer::Pkcs8(k) => (1u8, k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => (2u8, k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => (3u8, k.secret_sec1_der()),
        _ => (0u8, &[][..]),
    };
    let mut out = Vec::with_capacity(der.len() + 1);
    out.push(tag);
    out.extend_from_slice(der);
    out
}

fn decode_key(plain: &[u8]) -> Option<PrivateKeyDer<'static>> {
    let (tag, der) = plain.split_first()?;
    let der = der.to_vec();
    match tag {
        1 => Some(PrivatePkcs8KeyDer::from(der).into()),
        2 => Some(PrivatePkcs1KeyDer::from(der).into()),
        3 => Some(PrivateSec1KeyDer::from(der).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
