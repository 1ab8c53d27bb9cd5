//! The statements: the schema and its migrations, and the store's [`Queries`] in SQL, on one
//! connection, inside a transaction (under the write lock) when asked.

use std::cell::Cell;

use tokio_postgres::Client;

use super::bridge::{Timeout, wait};
use super::connect::{classify, timed_out};
use super::feed::CHANNEL;
use crate::store::backend::{Authenticated, DeploymentRow, NewRow, Queries, RawRecord};
use crate::store::{Deployment, StoreError};

/// Serialises writers, like SQLite's immediate transactions (an arbitrary constant: "edgemtls").
pub(super) const WRITE_LOCK: i64 = 0x6564_6765_6d74_6c73;

/// The newest schema version; [`MIGRATIONS`] has one entry per version.
const SCHEMA_VERSION: i32 = 2;
const MIGRATIONS: &[&str] = &[
    // 1: the same tables as the SQLite store, with PostgreSQL types; names are unique
    // ignoring case, as the store's rules say.
    "CREATE TABLE edgemtls.certificates (
        id           text PRIMARY KEY,
        name         text NOT NULL UNIQUE,
        environments text NOT NULL,
        enabled      boolean NOT NULL,
        chain_pem    text NOT NULL,
        key_sealed   bytea NOT NULL,
        metadata     text NOT NULL,
        not_after    bigint NOT NULL,
        created_at   bigint NOT NULL,
        updated_at   bigint NOT NULL,
        version      bigint NOT NULL DEFAULT 1,
        record_mac   bytea
    );
    CREATE UNIQUE INDEX certificates_name_folded ON edgemtls.certificates (lower(name));
    CREATE TABLE edgemtls.store_meta (key text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE edgemtls.generation (value bigint NOT NULL);
    INSERT INTO edgemtls.generation (value) VALUES (0);
    CREATE TABLE edgemtls.deployments (
        id           text PRIMARY KEY,
        hostname     text NOT NULL,
        pid          bigint NOT NULL,
        config_path  text NOT NULL,
        environment  text NOT NULL,
        listen       text NOT NULL,
        certificates text NOT NULL,
        started_at   bigint NOT NULL,
        heartbeat_at bigint NOT NULL
    );",
    // 2: where a key lives when it is not sealed here: a PKCS#11 URI (NULL: sealed in the
    // store). For listing only; the sealed column holds the same URI, authenticated.
    "ALTER TABLE edgemtls.certificates ADD COLUMN key_uri text;",
];

/// Statements on one connection, inside a transaction when `in_transaction` (rolled back
/// when dropped uncommitted).
pub(super) struct PgQueries<'c> {
    pub(super) client: &'c Client,
    pub(super) broken: &'c Cell<bool>,
    pub(super) shown: String,
    pub(super) in_transaction: bool,
}

impl Drop for PgQueries<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            let _ = self.batch("ROLLBACK");
        }
    }
}

type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

impl PgQueries<'_> {
    fn settle<T>(&self, answer: Result<Result<T, tokio_postgres::Error>, Timeout>) -> Result<T, StoreError> {
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(&self.shown, error)),
            Err(Timeout) => {
                self.broken.set(true);
                Err(timed_out(&self.shown))
            }
        }
    }

    fn rows(&self, sql: &str, params: &Params<'_>) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.settle(wait(self.client.query(sql, params)))
    }

    /// Like [`PgQueries::rows`], turning each row into a `T` as it arrives: a 10,000-row
    /// answer never sits in memory twice (as rows and as values).
    fn mapped<T>(&self, sql: &str, params: &Params<'_>, map: impl Fn(&tokio_postgres::Row) -> T) -> Result<Vec<T>, StoreError> {
        use futures_util::TryStreamExt;
        let collecting = async {
            let stream = self.client.query_raw(sql, params.iter().copied()).await?;
            stream.map_ok(|row| map(&row)).try_collect::<Vec<T>>().await
        };
        self.settle(wait(collecting))
    }

    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
        self.settle(wait(self.client.execute(sql, params)))
    }

    pub(super) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.settle(wait(self.client.batch_execute(sql)))
    }

    pub(super) fn migrate(&self) -> Result<(), StoreError> {
        // PostgreSQL answers IF NOT EXISTS on an existing schema or table with a NOTICE, which
        // tokio_postgres logs at INFO: two lines on every command. Within this transaction only
        // warnings and errors are sent.
        self.batch(
            "SET LOCAL client_min_messages = warning; \
             CREATE SCHEMA IF NOT EXISTS edgemtls; CREATE TABLE IF NOT EXISTS edgemtls.schema_version (version integer NOT NULL)",
        )?;
        let found: i32 = self.rows("SELECT version FROM edgemtls.schema_version", &[])?.first().map_or(0, |row| row.get(0));
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { store: self.shown.clone(), found: found.into(), supported: SCHEMA_VERSION.into() });
        }
        for sql in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or_default()) {
            self.batch(sql)?;
        }
        self.execute("DELETE FROM edgemtls.schema_version", &[])?;
        self.execute("INSERT INTO edgemtls.schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION])?;
        Ok(())
    }
}

const SELECT_RECORD: &str =
    "SELECT id, name, environments, enabled, chain_pem, metadata, created_at, updated_at, version, key_uri FROM edgemtls.certificates";
const SELECT_AUTHENTICATED: &str = "SELECT id, name, environments, enabled, chain_pem, record_mac FROM edgemtls.certificates";
const SELECT_AUTHENTICATED_AND_KEY: &str =
    "SELECT id, name, environments, enabled, chain_pem, record_mac, key_sealed FROM edgemtls.certificates";
fn authenticated(row: &tokio_postgres::Row) -> Authenticated {
    Authenticated {
        id: row.get(0),
        name: row.get(1),
        environments: row.get(2),
        enabled: row.get(3),
        chain_pem: row.get(4),
        mac: row.get(5),
    }
}

fn raw_record(row: &tokio_postgres::Row) -> RawRecord {
    RawRecord {
        id: row.get(0),
        name: row.get(1),
        environments: row.get(2),
        enabled: row.get(3),
        chain_pem: row.get(4),
        metadata: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
        version: row.get(8),
        key_uri: row.get(9),
    }
}

impl Queries for PgQueries<'_> {
    fn generation(&mut self) -> Result<i64, StoreError> {
        Ok(self.rows("SELECT value FROM edgemtls.generation", &[])?.first().map_or(0, |row| row.get(0)))
    }

    fn bump_generation(&mut self) -> Result<(), StoreError> {
        // The notification goes out when the transaction commits, never for one rolled back.
        let rows = self.rows("UPDATE edgemtls.generation SET value = value + 1 RETURNING value", &[])?;
        let generation: i64 = rows.first().map_or(0, |row| row.get(0));
        self.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &generation.to_string()])?;
        Ok(())
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rows("SELECT value FROM edgemtls.store_meta WHERE key = $1", &[&key])?.first().map(|row| row.get(0)))
    }

    fn insert_meta_if_absent(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.execute("INSERT INTO edgemtls.store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])?;
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.execute("UPDATE edgemtls.store_meta SET value = $2 WHERE key = $1", &[&key, &value])?;
        Ok(())
    }

    fn records(&mut self) -> Result<Vec<RawRecord>, StoreError> {
        self.mapped(&format!("{SELECT_RECORD} ORDER BY name"), &[], raw_record)
    }

    fn record(&mut self, reference: &str) -> Result<Option<RawRecord>, StoreError> {
        let rows = self.rows(&format!("{SELECT_RECORD} WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1"), &[&reference])?;
        Ok(rows.first().map(raw_record))
    }

    fn name_like(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.rows("SELECT name FROM edgemtls.certificates WHERE lower(name) = lower($1)", &[&name])?.first().map(|row| row.get(0)))
    }

    fn authenticated(&mut self, id: Option<&str>) -> Result<Vec<Authenticated>, StoreError> {
        let rows = match id {
            Some(id) => self.rows(&format!("{SELECT_AUTHENTICATED} WHERE id = $1"), &[&id])?,
            None => self.rows(SELECT_AUTHENTICATED, &[])?,
        };
        Ok(rows.iter().map(authenticated).collect())
    }

    fn sealed_keys(&mut self, ids: &[&str]) -> Result<Vec<(Authenticated, Vec<u8>)>, StoreError> {
        self.mapped(&format!("{SELECT_AUTHENTICATED_AND_KEY} WHERE id = ANY($1)"), &[&ids], |row| (authenticated(row), row.get(6)))
    }

    fn versions(&mut self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.mapped("SELECT id, name, version FROM edgemtls.certificates", &[], |row| (row.get(0), row.get(1), row.get(2)))
    }

    fn records_by_id(&mut self, ids: &[&str]) -> Result<Vec<RawRecord>, StoreError> {
        self.mapped(&format!("{SELECT_RECORD} WHERE id = ANY($1)"), &[&ids], raw_record)
    }

    fn insert(&mut self, row: &NewRow<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO edgemtls.certificates (id, name, environments, enabled, chain_pem, key_sealed, metadata, not_after, created_at, updated_at, record_mac, key_uri)
             VALUES ($1, $2, $3, $10, $4, $5, $6, $7, $8, $8, $9, $11)",
            &[&row.id, &row.name, &row.environments, &row.chain_pem, &row.key_sealed, &row.metadata, &row.not_after, &row.now, &row.mac, &row.enabled, &row.key_uri],
        )?;
        Ok(())
    }

    fn update(&mut self, id: &str, environments: &str, enabled: bool, mac: &[u8], now: i64) -> Result<bool, StoreError> {
        let changed = self.execute(
            "UPDATE edgemtls.certificates SET environments = $2, enabled = $3, record_mac = $4, updated_at = $5, version = version + 1 WHERE id = $1",
            &[&id, &environments, &enabled, &mac, &now],
        )?;
        Ok(changed > 0)
    }

    fn set_mac(&mut self, id: &str, mac: &[u8]) -> Result<(), StoreError> {
        self.execute("UPDATE edgemtls.certificates SET record_mac = $2 WHERE id = $1", &[&id, &mac])?;
        Ok(())
    }

    fn delete_disabled(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM edgemtls.certificates WHERE id = $1 AND NOT enabled", &[&id])? > 0)
    }

    fn live_deployments(&mut self, cutoff: i64) -> Result<Vec<Deployment>, StoreError> {
        let rows = self.rows(
            "SELECT id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at
             FROM edgemtls.deployments WHERE heartbeat_at >= $1 ORDER BY started_at",
            &[&cutoff],
        )?;
        Ok(rows
            .iter()
            .map(|row| {
                DeploymentRow {
                    id: row.get(0),
                    hostname: row.get(1),
                    pid: row.get(2),
                    config_path: row.get(3),
                    environment: row.get(4),
                    listen: row.get(5),
                    certificates: row.get(6),
                    started_at: row.get(7),
                    heartbeat_at: row.get(8),
                }
                .decode()
            })
            .collect())
    }

    fn put_deployment(&mut self, d: &Deployment, now: i64) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO edgemtls.deployments (id, hostname, pid, config_path, environment, listen, certificates, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (id) DO UPDATE SET hostname = $2, pid = $3, config_path = $4, environment = $5, listen = $6,
                 certificates = $7, started_at = $8, heartbeat_at = $8",
            &[
                &d.id,
                &d.hostname,
                &i64::from(d.pid),
                &d.config_path,
                &d.environment.as_str(),
                &d.listen,
                &crate::store::backend::names_json(&d.certificates),
                &now,
            ],
        )?;
        Ok(())
    }

    fn heartbeat(&mut self, id: &str, now: i64, certificates: &str) -> Result<(), StoreError> {
        self.execute("UPDATE edgemtls.deployments SET heartbeat_at = $2, certificates = $3 WHERE id = $1", &[&id, &now, &certificates])?;
        Ok(())
    }

    fn remove_deployment(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM edgemtls.deployments WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.in_transaction {
            self.in_transaction = false;
            self.batch("COMMIT")?;
        }
        Ok(())
    }
}
