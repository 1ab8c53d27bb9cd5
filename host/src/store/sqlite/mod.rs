//! The store on one machine: an SQLite file in a private directory, with the master key in
//! `EDGEMTLS_MASTER_KEY` or a key file beside it.

mod connection;
mod migrations;
mod queries;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

use self::connection::{check_integrity, database_error, open_connection};
use self::migrations::{SCHEMA_VERSION, migrate};
use self::queries::SqliteQueries;
use super::backend::{Backend, KEY_CHECK, Queries, ReadOnlyCause};
use super::error::DatabaseError;
use super::{DATABASE_FILE, KEY_FILE, KeySource, MasterKey, Store, StoreError, StoreLocation};

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
