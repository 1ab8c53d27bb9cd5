//! One connection to the store file: opened writable in WAL mode, SQLite's errors in the
//! store's words, and the integrity check every write transaction starts with.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::shown;
use crate::store::StoreError;
use crate::store::error::DatabaseError;

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

pub(super) fn database_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| sqlite_error(path, source)
}
/// Refuses to write into a damaged database. A write touches only the pages it needs, so it
/// can succeed beside damaged ones, and every success would bury the damage deeper in a
/// store that reads fail on. `quick_check` reads every page once (about 1 ms per thousand
/// certificates): fine before a write, which is rare, but not on reads.
pub(super) fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let db = database_error(path);
    // One finding is enough to refuse; `quick_check(1)` stops there.
    let finding: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(&db)?;
    if finding != "ok" {
        return Err(StoreError::Damaged { database: path.to_path_buf() });
    }
    Ok(())
}
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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
