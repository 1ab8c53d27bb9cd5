#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::path::Path;

use super::*;
use crate::pki::{DevCa, ImportRequest, IssueOptions, load_identity, validate_client_identity};

fn identity(dir: &Path, ca: &DevCa, cn: &str) -> anyhow::Result<(Identity, CertificateMetadata)> {
    let files = ca.issue_to(&IssueOptions { common_name: cn.into(), server: false, sans: vec![], days: 30, ..Default::default() }, dir)?;
    let identity = load_identity(ImportRequest { cert_path: &files.cert, key_path: Some(&files.key), password: None })?;
    let metadata = validate_client_identity(&identity, OffsetDateTime::now_utc())?;
    Ok((identity, metadata))
}

fn new_cert(dir: &Path, ca: &DevCa, name: &str) -> anyhow::Result<NewCertificate> {
    let (identity, metadata) = identity(dir, ca, name)?;
    Ok(NewCertificate { name: name.into(), environments: vec![Environment::Development], identity, metadata })
}

use edgemtls_test_support::postgres as postgres_server;

/// The store suite runs every case against both backends: `store_suite!` makes one test per
/// case and backend; a backend that cannot run here (no PostgreSQL installed) skips, saying why.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() -> anyhow::Result<()> {
                super::$case(&super::Fixture::sqlite()?)
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() -> anyhow::Result<()> {
                match super::Fixture::postgres()? {
                    Some(fixture) => super::$case(&fixture),
                    None => Ok(()),
                }
            })*
        }
    };
}

// After the macro, which the subjects' files use.
mod deployments;
mod files;
mod master_key;
mod records;
mod shared;

/// Fresh stores of one backend, and raw access to their tables (to play the attacker).
struct Fixture {
    tmp: tempfile::TempDir,
    /// The PostgreSQL server, and the key its nodes share; `None` for SQLite.
    postgres: Option<(postgres_server::Cluster, MasterKey)>,
    location: StoreLocation,
}

impl Fixture {
    fn sqlite() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let location = StoreLocation::Directory(tmp.path().join("store"));
        Ok(Self { tmp, postgres: None, location })
    }

    fn postgres() -> anyhow::Result<Option<Self>> {
        let Some(cluster) = postgres_server::Cluster::start().map_err(anyhow::Error::msg)? else { return Ok(None) };
        let location = StoreLocation::parse(cluster.create_database().map_err(anyhow::Error::msg)?.as_ref());
        let (key, _) = MasterKey::generate()?;
        Ok(Some(Self { tmp: tempfile::tempdir()?, postgres: Some((cluster, key)), location }))
    }

    fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// Another new, empty store on the same backend.
    fn fresh_location(&self, n: usize) -> anyhow::Result<StoreLocation> {
        Ok(match &self.postgres {
            None => StoreLocation::Directory(self.tmp.path().join(format!("store-{n}"))),
            Some((cluster, _)) => StoreLocation::parse(cluster.create_database().map_err(anyhow::Error::msg)?.as_ref()),
        })
    }

    /// Opens the store as a node normally would (SQLite: its key file; PostgreSQL: the key
    /// every node shares).
    fn open(&self) -> Result<Store, StoreError> {
        self.open_at(&self.location)
    }

    fn open_at(&self, location: &StoreLocation) -> Result<Store, StoreError> {
        match &self.postgres {
            None => Store::open(location),
            Some((_, key)) => Store::open_with_key(location, Some((key.clone(), KeySource::Environment))),
        }
    }

    fn open_with(&self, key: &MasterKey) -> Result<Store, StoreError> {
        Store::open_with_key(&self.location, Some((key.clone(), KeySource::Environment)))
    }

    /// The key the store was sealed with.
    fn key(&self) -> anyhow::Result<MasterKey> {
        match (&self.postgres, &self.location) {
            (Some((_, key)), _) => Ok(key.clone()),
            (None, StoreLocation::Directory(dir)) => {
                Ok(MasterKey::from_base64(&std::fs::read_to_string(dir.join(KEY_FILE))?, &KeySource::Environment)?)
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no key"),
        }
    }

    /// The database name of a PostgreSQL location.
    fn database(&self) -> String {
        self.location.to_string().rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Runs `sql` on the store's database behind the store's back; `{certificates}` and
    /// `{store_meta}` name the tables and `{true}` is true, in the backend's dialect.
    fn tamper(&self, sql: &str) -> anyhow::Result<()> {
        match (&self.postgres, &self.location) {
            (Some((cluster, _)), _) => {
                let sql = sql
                    .replace("{certificates}", "edgemtls.certificates")
                    .replace("{store_meta}", "edgemtls.store_meta")
                    .replace("{true}", "true");
                cluster.sql(&self.database(), &sql).map_err(anyhow::Error::msg)?;
            }
            (None, StoreLocation::Directory(dir)) => {
                let sql = sql.replace("{certificates}", "certificates").replace("{store_meta}", "store_meta").replace("{true}", "1");
                rusqlite::Connection::open(dir.join(DATABASE_FILE))?.execute_batch(&sql)?;
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no database"),
        }
        Ok(())
    }

    /// Bytes as an SQL literal in the backend's dialect.
    fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match &self.postgres {
            None => format!("X'{hex}'"),
            Some(_) => format!("'\\x{hex}'::bytea"),
        }
    }

    /// Whether the database holds `needle` anywhere (SQLite: the files; PostgreSQL: every
    /// column of every table, dumped).
    fn holds(&self, needle: &[u8]) -> anyhow::Result<bool> {
        match (&self.postgres, &self.location) {
            (Some((cluster, _)), _) => {
                let dump = cluster
                    .sql(&self.database(), "SELECT string_agg(t::text, ' ') FROM edgemtls.certificates t")
                    .map_err(anyhow::Error::msg)?;
                let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                Ok(dump.contains(&hex) || dump.as_bytes().windows(needle.len()).any(|w| w == needle))
            }
            (None, StoreLocation::Directory(dir)) => {
                let mut bytes = std::fs::read(dir.join(DATABASE_FILE))?;
                if let Ok(wal) = std::fs::read(dir.join("store.db-wal")) {
                    bytes.extend(wal);
                }
                Ok(bytes.windows(needle.len()).any(|w| w == needle))
            }
            (None, StoreLocation::Postgres(_)) => anyhow::bail!("no database"),
        }
    }
}
