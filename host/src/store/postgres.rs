//! The store shared by many nodes: a PostgreSQL database (tables in the `edgemtls` schema).
//!
//! The store's API is synchronous, and it is called from plain threads and from async tasks
//! alike. So the connections live on a small runtime of their own, and a call waits for its
//! answer with a bounded deadline: no caller ever nests a runtime, and no query outlives
//! [`QUERY_TIMEOUT`]. A connection that fails or times out is dropped and made again on a
//! later call, no sooner than a growing back-off allows.
//!
//! Every certificate write bumps the generation and sends `NOTIFY edgemtls_store` in the same
//! transaction; [`ChangeFeed`] listens on a connection of its own so nodes reload at once.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::backend::{Authenticated, Backend, DeploymentRow, NewRow, Queries, RawRecord};
use super::error::{DatabaseError, postgres_reason};
use super::{Deployment, KeySource, MasterKey, PostgresUrl, Store, StoreError, StoreLocation};

/// The longest any one statement (or connecting) may take before the store is called unreachable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before connecting again after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The channel writes notify.
pub const CHANNEL: &str = "edgemtls_store";
/// Serialises writers, like SQLite's immediate transactions (an arbitrary constant: "edgemtls").
const WRITE_LOCK: i64 = 0x6564_6765_6d74_6c73;

/// The newest schema version; [`MIGRATIONS`] has one entry per version.
const SCHEMA_VERSION: i32 = 1;
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
];

/// The runtime every PostgreSQL connection of this process lives on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("edgemtls-postgres")
                .enable_all()
                .build()
                .map_err(|error| format!("cannot start the PostgreSQL client: {error}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Waits for `future` from any thread (async or not), at most [`QUERY_TIMEOUT`].
fn wait<T>(future: impl Future<Output = T>) -> Result<T, Timeout> {
    let runtime = runtime().map_err(|_| Timeout)?;
    // The timer belongs to the PostgreSQL runtime, whose thread drives it and the sockets;
    // this thread only waits.
    let timed = {
        let _context = runtime.enter();
        tokio::time::timeout(QUERY_TIMEOUT, future)
    };
    futures_executor::block_on(timed).map_err(|_| Timeout)
}

/// A statement or connection attempt took longer than [`QUERY_TIMEOUT`].
struct Timeout;

/// How to connect: the parsed URL and the TLS settings it asked for.
#[derive(Clone)]
struct Connector {
    config: Config,
    tls: MakeRustlsConnect,
    shown: String,
}

impl Connector {
    fn new(url: &PostgresUrl) -> Result<Self, StoreError> {
        let shown = url.shown();
        let invalid = |reason: String| StoreError::Unreachable { store: shown.clone(), reason };
        let (base, query) = url.secret().split_once('?').unwrap_or((url.secret(), ""));
        // libpq's names for what rustls does: the server's certificate is always verified,
        // against `sslrootcert` or the public web roots, and its name always checked.
        let mut roots_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", value)) => {
                    roots_file = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
                }
                Some(("sslmode", "verify-full" | "verify-ca")) => kept.push("sslmode=require".to_string()),
                _ => kept.push(pair.to_string()),
            }
        }
        let url_for_client = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        let mut config: Config = url_for_client.parse().map_err(|error: tokio_postgres::Error| StoreError::Unreachable {
            store: shown.clone(),
            reason: format!("the URL is not valid: {}", postgres_reason(&error)),
        })?;
        config.connect_timeout(QUERY_TIMEOUT);
        config.application_name("edgemtls");
        // A server that vanishes mid-answer is noticed, not waited on forever.
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(QUERY_TIMEOUT);
        let mut roots = rustls::RootCertStore::empty();
        match &roots_file {
            Some(path) => {
                let certificates = crate::pki::trust_files::read_ca_bundle(std::path::Path::new(path))
                    .map_err(|reason| invalid(format!("sslrootcert '{path}': {reason}")))?;
                crate::pki::trust_files::add_ca_certificates(certificates, &mut roots)
                    .map_err(|reason| invalid(format!("sslrootcert '{path}': {reason}")))?;
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(format!("TLS set-up: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config, tls: MakeRustlsConnect::new(tls), shown })
    }

    /// Connects and returns the client and the connection, which the caller must drive.
    async fn connect(
        &self,
    ) -> Result<(Client, tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>), tokio_postgres::Error>
    {
        self.config.connect(self.tls.clone()).await
    }

    /// Connects and leaves the connection running on the PostgreSQL runtime.
    fn connect_client(&self) -> Result<Client, StoreError> {
        let runtime = runtime().map_err(|reason| StoreError::Unreachable { store: self.shown.clone(), reason })?;
        let connector = self.clone();
        let connecting = runtime.spawn(async move {
            let (client, connection) = connector.connect().await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away.
                let _ = connection.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        match wait(connecting) {
            Ok(Ok(Ok(client))) => Ok(client),
            Ok(Ok(Err(error))) => Err(classify(&self.shown, error)),
            Ok(Err(_)) => Err(StoreError::Unreachable { store: self.shown.clone(), reason: "the connection attempt failed".into() }),
            Err(Timeout) => Err(timed_out(&self.shown)),
        }
    }
}

fn timed_out(shown: &str) -> StoreError {
    StoreError::Unreachable { store: shown.to_string(), reason: format!("no answer within {} s", QUERY_TIMEOUT.as_secs()) }
}

/// Tells apart a server that is not there, a login it refused, and anything else it said.
fn classify(shown: &str, error: tokio_postgres::Error) -> StoreError {
    let store = shown.to_string();
    match error.code() {
        Some(code) if code.code().starts_with("28") => StoreError::LoginRefused { store, reason: postgres_reason(&error) },
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
            StoreError::Unreachable { reason: format!("{} (create it first: createdb)", postgres_reason(&error)), store }
        }
        Some(_) => StoreError::Database { store, error: DatabaseError::Postgres(error) },
        None => StoreError::Unreachable {
            reason: tls_refusal(&error).unwrap_or_else(|| {
                format!("{}; check that PostgreSQL runs there and that the URL's host and port are right", postgres_reason(&error))
            }),
            store,
        },
    }
}

/// Why the server's certificate was refused, in words that say what to change in the URL.
fn tls_refusal(error: &tokio_postgres::Error) -> Option<String> {
    use crate::pki::CertificateFault as F;
    let certificate = crate::error_chain::causes(error).skip(1).find_map(|cause| match cause.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(certificate)) => Some(certificate),
        _ => None,
    })?;
    let why = match F::of(certificate) {
        F::UnknownIssuer => "it is signed by a CA the URL does not trust; name the database's CA with sslrootcert=FILE",
        F::WrongName => "it is for other names than the URL's host; connect by a name the certificate lists",
        F::Expired(_) => "it has expired",
        F::NotYetValid(_) => "it is not valid yet (check the clocks)",
        _ => "it is not acceptable for a TLS server",
    };
    Some(format!("the TLS handshake failed: the server's certificate was refused: {why}"))
}
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

/// Statements on one connection, inside a transaction when `in_transaction` (rolled back
/// when dropped uncommitted).
struct PgQueries<'c> {
    client: &'c Client,
    broken: &'c Cell<bool>,
    shown: String,
    in_transaction: bool,
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

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.settle(wait(self.client.batch_execute(sql)))
    }

    fn migrate(&self) -> Result<(), StoreError> {
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
    "SELECT id, name, environments, enabled, chain_pem, metadata, created_at, updated_at, version FROM edgemtls.certificates";
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
            "INSERT INTO edgemtls.certificates (id, name, environments, enabled, chain_pem, key_sealed, metadata, not_after, created_at, updated_at, record_mac)
             VALUES ($1, $2, $3, $10, $4, $5, $6, $7, $8, $8, $9)",
            &[&row.id, &row.name, &row.environments, &row.chain_pem, &row.key_sealed, &row.metadata, &row.not_after, &row.now, &row.mac, &row.enabled],
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
                &super::backend::names_json(&d.certificates),
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

/// Wakes a node's store watcher when another node changes the store: a `LISTEN` connection
/// of its own, made again (with back-off) whenever it drops. A reconnect wakes the watcher
/// too, since notifications sent while it was down are lost; the watcher's poll of the
/// generation is the safety net for anything else.
#[derive(Clone)]
pub struct ChangeFeed {
    signal: Arc<Signal>,
}

struct Signal {
    pending: Mutex<bool>,
    ready: Condvar,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

impl ChangeFeed {
    fn start(connector: Connector) -> Option<Self> {
        let runtime = runtime().ok()?;
        let signal = Arc::new(Signal { pending: Mutex::new(false), ready: Condvar::new() });
        runtime.spawn(listen(connector, Arc::downgrade(&signal)));
        Some(Self { signal })
    }

    /// Waits until a change is announced or `timeout` passes; true for a change.
    pub fn wait(&self, timeout: Duration) -> bool {
        let pending = self.signal.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut pending, _) =
            self.signal.ready.wait_timeout_while(pending, timeout, |pending| !*pending).unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *pending, false)
    }
}

impl Signal {
    fn raise(&self) {
        *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.ready.notify_all();
    }
}

/// Listens until the feed is dropped.
async fn listen(connector: Connector, signal: Weak<Signal>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if signal.strong_count() == 0 {
            return;
        }
        if let Ok(Ok((client, mut connection))) = tokio::time::timeout(QUERY_TIMEOUT, connector.connect()).await {
            let listening = async {
                let statement = format!("LISTEN {CHANNEL}");
                let subscribe = client.batch_execute(&statement);
                let mut subscribe = std::pin::pin!(subscribe);
                let mut subscribed = false;
                // Drive the connection while LISTEN is sent, then wait for notifications.
                loop {
                    tokio::select! {
                        result = &mut subscribe, if !subscribed => {
                            if result.is_err() { return; }
                            subscribed = true;
                            backoff = FIRST_BACKOFF;
                            // Anything sent while this connection was down is caught up now.
                            match signal.upgrade() { Some(signal) => signal.raise(), None => return }
                        }
                        message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => match signal.upgrade() {
                                Some(signal) => signal.raise(),
                                None => return,
                            },
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        },
                        () = tokio::time::sleep(Duration::from_secs(10)) => {
                            if signal.strong_count() == 0 { return; }
                        }
                    }
                }
            };
            listening.await;
            drop(client);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
