//! The schema: one migration per version, applied in an immediate transaction.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::connection::{check_integrity, database_error};
use super::shown;
use crate::store::StoreError;

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

pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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
