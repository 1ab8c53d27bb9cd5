//! The store on one machine: an SQLite file in a private directory, with the master key in
//! `EDGEMTLS_MASTER_KEY` or a key file beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::backend::{Authenticated, Backend, DeploymentRow, KEY_CHECK, NewRow, Queries, RawRecord, ReadOnlyCause};
use super::error::DatabaseError;
use super::{DATABASE_FILE, Deployment, KEY_FILE, KeySource, MasterKey, Store, StoreError, StoreLocation};

/// The newest schema version; [`MIGRATIONS`] has one entry per version.
pub(super) const SCHEMA_VERSION: i64 = 4;
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
    // 3: each record is authenticated under the master key (see `record_context`); existing
    // records get theirs at the first open with the key.
    "ALTER TABLE certificates ADD COLUMN record_mac BLOB;",
    // 4: where a key lives when it is not sealed here: a PKCS#11 URI (NULL: sealed in the
    // store). For listing only; the sealed column holds the same URI, authenticated.
    "ALTER TABLE certificates ADD COLUMN key_uri TEXT;",
];

/// An open SQLite store file.
pub(super) struct Sqlite {
    conn: Connection,
    /// The database file.
    path: PathBuf,
    read_only: Option<ReadOnlyCause>,
}

/// Opens (creating if needed) the store in `dir`. A store that cannot be written here (a
/// read-only disk or mount, another owner's, or a full disk) opens read-only: reading works,
/// writes say why not. `key`, when given, is used instead of `EDGEMTLS_MASTER_KEY` or the key file.
pub(super) fn open(dir: &Path, key: Option<(MasterKey, KeySource)>) -> Result<Store, StoreError> {
    let existed = exists(dir)?;
    match open_writable(dir, key.clone()) {
        Err(error) => match cannot_write(&error) {
            // A store that is not there yet has nothing to read.
            Some(cause) if existed => open_read_only(dir, key, cause),
            _ => Err(error),
        },
        opened => opened,
    }
}

/// Whether `dir` holds a store. A database that is missing or empty beside a master key is
/// a lost store, not an absent one: the key file is made only once the database is set up,
/// so reading it as a new, empty store would hide the loss (and seal new keys beside it).
pub(super) fn exists(dir: &Path) -> Result<bool, StoreError> {
    // The key file first: once it is there, the database was set up before it, so a look at
    // the database after this one sees it. Looking the other way round, a process making the
    // store at the same moment could make both in between, and this one would call a store
    // that is just being made a lost one.
    let key_file = dir.join(KEY_FILE);
    // An empty key file sealed nothing; opening explains it (`StoreError::EmptyKeyFile`).
    let has_key = std::fs::metadata(&key_file).is_ok_and(|m| m.is_file() && m.len() > 0);
    let database = dir.join(DATABASE_FILE);
    let found = match std::fs::metadata(&database) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        // Not "no store": a store this user cannot see into is an answer of its own.
        Err(error) => return Err(StoreError::Io { path: database, error }),
    };
    match found {
        None if has_key => Err(StoreError::DatabaseLost { database, key_file, empty: false }),
        Some(metadata) if has_key && metadata.is_file() && metadata.len() == 0 => {
            Err(StoreError::DatabaseLost { database, key_file, empty: true })
        }
        found => Ok(found.is_some_and(|m| m.is_file())),
    }
}

fn location(dir: &Path) -> StoreLocation {
    StoreLocation::Directory(dir.to_path_buf())
}

fn shown(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// What SQLite said about the database at `path`, as a store error: a full disk and a
/// damaged file in words of their own, by SQLite's (extended) result code.
fn sqlite_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let dir = || path.parent().unwrap_or(path).to_path_buf();
    if let rusqlite::Error::SqliteFailure(error, _) = &source {
        match error.code {
            rusqlite::ErrorCode::DiskFull => return StoreError::DiskFull { dir: dir() },
            // Growing the shared-memory index (`store.db-shm`) writes one byte per page; on
            // Unix that fails when the file system has no room (or the quota is used up).
            rusqlite::ErrorCode::SystemIoFailure if error.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE => {
                return StoreError::DiskFull { dir: dir() };
            }
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => {
                return StoreError::Damaged { database: path.to_path_buf() };
            }
            _ => {}
        }
    }
    StoreError::Database { store: shown(path), error: DatabaseError::Sqlite(source) }
}

fn database_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| sqlite_error(path, source)
}

fn open_writable(dir: &Path, given: Option<(MasterKey, KeySource)>) -> Result<Store, StoreError> {
    create_private_dir(dir)?;
    let path = dir.join(DATABASE_FILE);
    let conn = open_connection(&path)?;
    restrict_mode(&path)?;
    migrate(&conn, &path)?;
    let mut backend = Sqlite { conn, path: path.clone(), read_only: None };
    let key_check = backend.queries()?.meta(KEY_CHECK)?;
    let key_file = dir.join(KEY_FILE);
    if let Some((key, source)) = given {
        return Store::unlock(Box::new(backend), location(dir), key, source);
    }
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
        None => return Err(StoreError::MissingMasterKey { store: shown(&path), key_file }),
    };
    Store::unlock(Box::new(backend), location(dir), key, source)
}

/// Opens the store in `dir` for reading only, because `cause` keeps it from being written.
fn open_read_only(dir: &Path, given: Option<(MasterKey, KeySource)>, cause: ReadOnlyCause) -> Result<Store, StoreError> {
    let path = dir.join(DATABASE_FILE);
    let db = database_error(&path);
    // A WAL database is read through its shared-memory index (`store.db-shm`), which SQLite
    // must be able to create or find: on a read-only disk, or a full one, an idle store has
    // none. Without WAL content the database file holds the whole store, and `immutable`
    // reads it without the index; with WAL content only `mode=ro` reads it, through the
    // index a writer (or a crash) left behind. See https://sqlite.org/wal.html#readonly.
    let wal = dir.join(format!("{DATABASE_FILE}-wal"));
    let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let escaped: String = path
        .to_string_lossy()
        .chars()
        .map(|c| match c {
            '?' => "%3f".to_string(),
            '#' => "%23".to_string(),
            '%' => "%25".to_string(),
            c => c.to_string(),
        })
        .collect();
    let uri = format!("file:{escaped}?{}", if has_wal { "mode=ro" } else { "immutable=1" });
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags).map_err(&db)?;
    let version: i64 = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
        Ok(version) => version,
        // The database file opened, so what cannot be opened is the index beside it.
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::CannotOpen => {
            return Err(match cause {
                ReadOnlyCause::NotWritable => StoreError::ReadOnlyWithPendingChanges { dir: dir.to_path_buf() },
                ReadOnlyCause::DiskFull => StoreError::DiskFull { dir: dir.to_path_buf() },
            });
        }
        Err(error) => return Err(db(error)),
    };
    let mut backend = Sqlite { conn, path: path.clone(), read_only: Some(cause) };
    let key_file = dir.join(KEY_FILE);
    let key_check = backend.queries()?.meta(KEY_CHECK)?;
    let found = match given {
        Some(given) => Some(given),
        None => MasterKey::from_env_or_file(&key_file)?,
    };
    let (Some(_), Some((key, source))) = (key_check, found) else {
        return Err(StoreError::MissingMasterKey { store: shown(&path), key_file });
    };
    if version != SCHEMA_VERSION {
        return Err(upgrade_needed(dir));
    }
    Store::unlock(Box::new(backend), location(dir), key, source)
}

/// What a read-only store that this version would have to upgrade says.
pub(super) fn upgrade_needed(dir: &Path) -> StoreError {
    StoreError::ReadOnly {
        dir: dir.to_path_buf(),
        action: "upgrade it to this version of edgemtls (open it once where it is writable)".into(),
    }
}

/// Why opening a store for writing failed, when the reason leaves it readable: the
/// database or its directory cannot be written here, or the disk is full.
fn cannot_write(error: &StoreError) -> Option<ReadOnlyCause> {
    match error {
        StoreError::ReadOnly { .. } => Some(ReadOnlyCause::NotWritable),
        StoreError::DiskFull { .. } => Some(ReadOnlyCause::DiskFull),
        StoreError::Database { error: DatabaseError::Sqlite(rusqlite::Error::SqliteFailure(error, _)), .. }
            if error.code == rusqlite::ErrorCode::ReadOnly =>
        {
            Some(ReadOnlyCause::NotWritable)
        }
        StoreError::Io { error, .. } => match error.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => Some(ReadOnlyCause::NotWritable),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Some(ReadOnlyCause::DiskFull),
            _ => None,
        },
        _ => None,
    }
}

impl Backend for Sqlite {
    fn queries(&mut self) -> Result<Box<dyn Queries + '_>, StoreError> {
        Ok(Box::new(SqliteQueries { conn: &self.conn, transaction: None, path: &self.path }))
    }

    fn transaction(&mut self) -> Result<Box<dyn Queries + '_>, StoreError> {
        // IMMEDIATE takes the write lock first, so concurrent writers queue on the busy
        // timeout instead of one failing on a lock upgrade.
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(database_error(&self.path))?;
        check_integrity(&self.conn, &self.path)?;
        Ok(Box::new(SqliteQueries { conn: &self.conn, transaction: Some(transaction), path: &self.path }))
    }

    fn read_only(&self) -> Option<ReadOnlyCause> {
        self.read_only
    }
}

/// Refuses to write into a damaged database. A write touches only the pages it needs, so it
/// can succeed beside damaged ones, and every success would bury the damage deeper in a
/// store that reads fail on. `quick_check` reads every page once (about 1 ms per thousand
/// certificates): fine before a write, which is rare, but not on reads.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let db = database_error(path);
    // One finding is enough to refuse; `quick_check(1)` stops there.
    let finding: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(&db)?;
    if finding != "ok" {
        return Err(StoreError::Damaged { database: path.to_path_buf() });
    }
    Ok(())
}

/// Statements on one connection; inside `transaction` when there is one (it rolls back
/// when dropped uncommitted).
struct SqliteQueries<'c> {
    conn: &'c Connection,
    transaction: Option<rusqlite::Transaction<'c>>,
    path: &'c Path,
}

impl SqliteQueries<'_> {
    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        database_error(self.path)
    }
}

const SELECT_RECORD: &str =
    "SELECT id, name, environments, enabled, chain_pem, metadata, created_at, updated_at, version, key_uri FROM certificates";
const SELECT_AUTHENTICATED: &str = "SELECT id, name, environments, enabled, chain_pem, record_mac FROM certificates";
const SELECT_AUTHENTICATED_AND_KEY: &str = "SELECT id, name, environments, enabled, chain_pem, record_mac, key_sealed FROM certificates";
const SELECT_DEPLOYMENT: &str =
    "SELECT id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at FROM deployments";

fn raw_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        environments: row.get(2)?,
        enabled: row.get(3)?,
        chain_pem: row.get(4)?,
        metadata: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        version: row.get(8)?,
        key_uri: row.get(9)?,
    })
}

fn authenticated(row: &rusqlite::Row<'_>) -> rusqlite::Result<Authenticated> {
    Ok(Authenticated {
        id: row.get(0)?,
        name: row.get(1)?,
        environments: row.get(2)?,
        enabled: row.get(3)?,
        chain_pem: row.get(4)?,
        mac: row.get(5)?,
    })
}

fn deployment(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: row.get(0)?,
        hostname: row.get(1)?,
        pid: row.get(2)?,
        config_path: row.get(3)?,
        environment: row.get(4)?,
        listen: row.get(5)?,
        certificates: row.get(6)?,
        started_at: row.get(7)?,
        heartbeat_at: row.get(8)?,
    })
}

impl Queries for SqliteQueries<'_> {
    fn generation(&mut self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT value FROM store_meta WHERE key = 'generation'", [], |r| r.get(0)).map_err(self.db())
    }

    fn bump_generation(&mut self) -> Result<(), StoreError> {
        self.conn.execute("UPDATE store_meta SET value = value + 1 WHERE key = 'generation'", []).map_err(self.db())?;
        Ok(())
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn.query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(self.db())
    }

    fn insert_meta_if_absent(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES (?1, ?2)", params![key, value]).map_err(self.db())?;
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn.execute("UPDATE store_meta SET value = ?2 WHERE key = ?1", params![key, value]).map_err(self.db())?;
        Ok(())
    }

    fn records(&mut self) -> Result<Vec<RawRecord>, StoreError> {
        let mut statement = self.conn.prepare(&format!("{SELECT_RECORD} ORDER BY name")).map_err(self.db())?;
        let rows = statement.query_map([], raw_record).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    fn record(&mut self, reference: &str) -> Result<Option<RawRecord>, StoreError> {
        self.conn
            .query_row(&format!("{SELECT_RECORD} WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"), [reference], raw_record)
            .optional()
            .map_err(self.db())
    }

    fn name_like(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT name FROM certificates WHERE lower(name) = lower(?1)", [name], |r| r.get(0))
            .optional()
            .map_err(self.db())
    }

    fn authenticated(&mut self, id: Option<&str>) -> Result<Vec<Authenticated>, StoreError> {
        let (sql, params) = match id {
            Some(id) => (format!("{SELECT_AUTHENTICATED} WHERE id = ?1"), vec![id]),
            None => (SELECT_AUTHENTICATED.to_string(), vec![]),
        };
        let mut statement = self.conn.prepare(&sql).map_err(self.db())?;
        let rows = statement.query_map(rusqlite::params_from_iter(params), authenticated).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    fn sealed_keys(&mut self, ids: &[&str]) -> Result<Vec<(Authenticated, Vec<u8>)>, StoreError> {
        // A local file: one cached statement per id costs microseconds.
        let mut statement = self.conn.prepare_cached(&format!("{SELECT_AUTHENTICATED_AND_KEY} WHERE id = ?1")).map_err(self.db())?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let row = statement.query_row([id], |row| Ok((authenticated(row)?, row.get(6)?))).optional().map_err(self.db())?;
            found.extend(row);
        }
        Ok(found)
    }

    fn versions(&mut self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut statement = self.conn.prepare("SELECT id, name, version FROM certificates").map_err(self.db())?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    fn records_by_id(&mut self, ids: &[&str]) -> Result<Vec<RawRecord>, StoreError> {
        let mut statement = self.conn.prepare_cached(&format!("{SELECT_RECORD} WHERE id = ?1")).map_err(self.db())?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(statement.query_row([id], raw_record).optional().map_err(self.db())?);
        }
        Ok(found)
    }

    fn insert(&mut self, row: &NewRow<'_>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO certificates (id, name, environments, enabled, chain_pem, key_sealed, metadata, not_after, created_at, updated_at, record_mac, key_uri)
                 VALUES (?1, ?2, ?3, ?10, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?11)",
                params![row.id, row.name, row.environments, row.chain_pem, row.key_sealed, row.metadata, row.not_after, row.now, row.mac, row.enabled, row.key_uri],
            )
            .map_err(self.db())?;
        Ok(())
    }

    fn update(&mut self, id: &str, environments: &str, enabled: bool, mac: &[u8], now: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE certificates SET environments = ?2, enabled = ?3, record_mac = ?4, updated_at = ?5, version = version + 1 WHERE id = ?1",
                params![id, environments, enabled, mac, now],
            )
            .map_err(self.db())?;
        Ok(changed > 0)
    }

    fn set_mac(&mut self, id: &str, mac: &[u8]) -> Result<(), StoreError> {
        self.conn.execute("UPDATE certificates SET record_mac = ?2 WHERE id = ?1", params![id, mac]).map_err(self.db())?;
        Ok(())
    }

    fn delete_disabled(&mut self, id: &str) -> Result<bool, StoreError> {
        let deleted = self.conn.execute("DELETE FROM certificates WHERE id = ?1 AND enabled = 0", [id]).map_err(self.db())?;
        Ok(deleted > 0)
    }

    fn live_deployments(&mut self, cutoff: i64) -> Result<Vec<Deployment>, StoreError> {
        let mut statement =
            self.conn.prepare(&format!("{SELECT_DEPLOYMENT} WHERE heartbeat_at >= ?1 ORDER BY started_at")).map_err(self.db())?;
        let rows = statement.query_map([cutoff], deployment).map_err(self.db())?;
        let rows: Vec<DeploymentRow> = rows.collect::<Result<_, _>>().map_err(self.db())?;
        Ok(rows.into_iter().map(DeploymentRow::decode).collect())
    }

    fn put_deployment(&mut self, d: &Deployment, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO deployments (id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![
                    d.id,
                    d.hostname,
                    d.pid,
                    d.config_path,
                    d.environment.as_str(),
                    d.listen,
                    super::backend::names_json(&d.certificates),
                    now
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    fn heartbeat(&mut self, id: &str, now: i64, certificates: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE deployments SET heartbeat_at = ?2, certificates = ?3 WHERE id = ?1", params![id, now, certificates])
            .map_err(self.db())?;
        Ok(())
    }

    fn remove_deployment(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM deployments WHERE id = ?1", [id]).map_err(self.db())?;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        match self.transaction.take() {
            Some(transaction) => transaction.commit().map_err(self.db()),
            None => Ok(()),
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let db = database_error(path);
    let conn = Connection::open(path).map_err(&db)?;
    let dir = path.parent().unwrap_or(path);
    let read_only = || StoreError::ReadOnly { dir: dir.to_path_buf(), action: "write it".into() };
    // SQLite falls back to reading a database file it may not write (a read-only mount,
    // another owner's file) and says so only here.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(&db)? {
        return Err(read_only());
    }
    // WAL lets a running host read while the CLI writes; the timeout makes writers queue.
    conn.busy_timeout(Duration::from_secs(5)).map_err(&db)?;
    match use_wal(&conn) {
        Ok(()) => {}
        // The database file is open, so what cannot be opened is the WAL or its index beside
        // it: the directory cannot be written.
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::CannotOpen => return Err(read_only()),
        Err(error) => return Err(db(error)),
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(&db)?;
    Ok(conn)
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
    let db = database_error(path);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&db)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { store: shown(path), found: version, supported: SCHEMA_VERSION });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let mut transaction = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(&db)?;
    transaction.set_drop_behavior(rusqlite::DropBehavior::Rollback);
    check_integrity(&transaction, path)?;
    // Re-read inside the transaction: another process may have migrated meanwhile.
    let version: i64 = transaction.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&db)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or_default()) {
        transaction.execute_batch(sql).map_err(&db)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1).map_err(&db)?;
    }
    transaction.commit().map_err(&db)
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    crate::files::create_private_dir(dir).map_err(|error| StoreError::Io { path: dir.to_path_buf(), error })
}

fn restrict_mode(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let io = |error| StoreError::Io { path: path.to_path_buf(), error };
        if std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

/// The database file of the store in `dir`.
pub(super) fn database_path(dir: &Path) -> PathBuf {
    dir.join(DATABASE_FILE)
}
