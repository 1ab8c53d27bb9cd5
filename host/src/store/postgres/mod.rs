//! The store shared by many nodes: a PostgreSQL database (tables in the `edgemtls` schema).
//!
//! The store's API is synchronous, and it is called from plain threads and from async tasks
//! alike. So the connections live on a small runtime of their own, and a call waits for its
//! answer with a bounded deadline: no caller ever nests a runtime, and no query outlives
//! [`bridge::QUERY_TIMEOUT`]. A connection that fails or times out is dropped and made again on a
//! later call, no sooner than a growing back-off allows.
//!
//! Every certificate write bumps the generation and sends `NOTIFY edgemtls_store` in the same
//! transaction; [`ChangeFeed`] listens on a connection of its own so nodes reload at once.

//!
//! One file per part: `bridge.rs` (the runtime and the bounded wait), `connect.rs` (URL,
//! TLS, connecting, failures in words), `queries.rs` (schema, migrations, the statements),
//! `feed.rs` (`LISTEN`); this file opens the store and keeps its one connection.

mod bridge;
mod connect;
mod feed;
mod queries;

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub use feed::ChangeFeed;

use bridge::{Timeout, wait};
use connect::{Connector, FIRST_BACKOFF, MAX_BACKOFF, classify, timed_out};
use queries::{PgQueries, WRITE_LOCK};

use super::backend::{Backend, Queries};
use super::{KeySource, MasterKey, PostgresUrl, Store, StoreError, StoreLocation};

/// Opens the store in the database at `url`; `create` makes its tables in an empty database.
/// `key`, when given, is used instead of `EDGEMTLS_MASTER_KEY`.
pub(super) fn open(url: &PostgresUrl, create: bool, given: Option<(MasterKey, KeySource)>) -> Result<Store, StoreError> {
    let connector = Connector::new(url)?;
    let location = StoreLocation::Postgres(url.clone());
    let client = connector.connect_client()?;
    let shown = connector.shown.clone();
    let run = |sql: &str| -> Result<Vec<tokio_postgres::Row>, StoreError> {
        wait(client.query(sql, &[])).map_err(|Timeout| timed_out(&shown))?.map_err(|e| classify(&shown, e))
    };
    let ours =
        !run("SELECT 1 FROM information_schema.tables WHERE table_schema = 'edgemtls' AND table_name = 'schema_version'")?.is_empty();
    if !ours {
        // Checked before anything is written: a database with someone else's tables is not ours
        // to fill, and a mistyped URL should not leave a schema behind.
        let foreign: Vec<String> = run("SELECT table_schema || '.' || table_name FROM information_schema.tables
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'edgemtls') ORDER BY 1 LIMIT 4")?
        .iter()
        .map(|row| row.get(0))
        .collect();
        if !foreign.is_empty() {
            return Err(StoreError::ForeignDatabase { store: shown, tables: foreign.join(", ") });
        }
        if !create {
            return Err(StoreError::NoStore { location });
        }
    }
    let found = match given {
        Some(given) => Some(given),
        // A shared store's key comes from the environment: there is no directory for a file.
        None => MasterKey::from_env()?,
    };
    let Some((key, source)) = found else {
        return Err(StoreError::MasterKeyRequired { store: shown });
    };
    let mut backend = Postgres { connector, client: Some(client), broken: Cell::new(false), retry_at: None, backoff: FIRST_BACKOFF };
    backend.migrate()?;
    Store::unlock(Box::new(backend), location, key, source)
}

/// One connection to the store's database, made again when it breaks.
pub(super) struct Postgres {
    connector: Connector,
    client: Option<Client>,
    /// Set by a statement that timed out: the connection's state is unknown, so it is dropped.
    broken: Cell<bool>,
    /// No new connection before this instant, after a failed one.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Postgres {
    fn client(&mut self) -> Result<&Client, StoreError> {
        if self.broken.replace(false) || self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err(StoreError::Unreachable {
                    store: self.connector.shown.clone(),
                    reason: "the last connection attempt failed; trying again shortly".into(),
                });
            }
            match self.connector.connect_client() {
                Ok(client) => {
                    self.client = Some(client);
                    self.retry_at = None;
                    self.backoff = FIRST_BACKOFF;
                }
                Err(error) => {
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(error);
                }
            }
        }
        self.client.as_ref().ok_or_else(|| timed_out(&self.connector.shown))
    }

    /// Brings the schema up to date, one node at a time (under the write lock).
    fn migrate(&mut self) -> Result<(), StoreError> {
        let queries = self.queries_on(true)?;
        queries.migrate()?;
        Queries::commit(Box::new(queries))
    }

    fn queries_on(&mut self, in_transaction: bool) -> Result<PgQueries<'_>, StoreError> {
        let shown = self.connector.shown.clone();
        self.client()?;
        let client = self.client.as_ref().ok_or_else(|| timed_out(&shown))?;
        // Marked first, so a failure after BEGIN still rolls back when `queries` drops.
        let queries = PgQueries { client, broken: &self.broken, shown, in_transaction };
        if in_transaction {
            queries.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
        }
        Ok(queries)
    }
}

impl Backend for Postgres {
    fn queries(&mut self) -> Result<Box<dyn Queries + '_>, StoreError> {
        Ok(Box::new(self.queries_on(false)?))
    }

    fn transaction(&mut self) -> Result<Box<dyn Queries + '_>, StoreError> {
        Ok(Box::new(self.queries_on(true)?))
    }

    fn change_feed(&self) -> Option<ChangeFeed> {
        ChangeFeed::start(self.connector.clone())
    }
}
