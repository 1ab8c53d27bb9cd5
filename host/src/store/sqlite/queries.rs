//! The statements the store's rules run ([`Queries`]), on one SQLite connection.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::connection::database_error;
use crate::store::backend::{Authenticated, DeploymentRow, NewRow, Queries, RawRecord};
use crate::store::{Deployment, StoreError};

/// Statements on one connection; inside `transaction` when there is one (it rolls back
/// when dropped uncommitted).
pub(super) struct SqliteQueries<'c> {
    pub(super) conn: &'c Connection,
    pub(super) transaction: Option<rusqlite::Transaction<'c>>,
    pub(super) path: &'c Path,
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
                    crate::store::backend::names_json(&d.certificates),
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
