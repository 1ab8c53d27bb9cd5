//! Why a store operation failed, in words for the person who runs the command.

use std::path::PathBuf;

use super::{DATABASE_FILE, KEY_FILE, KeySource, MASTER_KEY_ENV, StoreLocation};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {}", crate::plain::io_error(error), path = path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error. Its words are in the message, so it is not also the error's
        /// `source()` (a reader would see them twice).
        error: std::io::Error,
    },
    /// The database could not be opened or queried.
    #[error("store database {store}: {error}")]
    Database {
        /// The store, as shown to people ('dir/store.db', or a URL without its password).
        store: String,
        /// What the database said (in the message, so not also its `source()`).
        error: DatabaseError,
    },
    /// The database server did not answer (down, unreachable, or too slow).
    #[error("cannot reach the store at {store}: {reason} (nothing was changed)")]
    Unreachable {
        /// The store URL without its password.
        store: String,
        /// What failed.
        reason: String,
    },
    /// The database server refused the login.
    #[error("PostgreSQL at {store} refused the login: {reason}; check the user and password in the URL (nothing was changed)")]
    LoginRefused {
        /// The store URL without its password.
        store: String,
        /// What the server said.
        reason: String,
    },
    /// The database exists but belongs to something else.
    #[error(
        "the database at {store} holds tables of another application ({tables}); give edgemtls a database of its own (createdb edgemtls) and point --store at it (nothing was changed)"
    )]
    ForeignDatabase {
        /// The store URL without its password.
        store: String,
        /// Some of the tables found.
        tables: String,
    },
    /// A shared store needs its master key from the environment.
    #[error("no master key for the store at {store}: set {env} to the key every node of this store shares (a new store: make one with `openssl rand -base64 32` and keep it safe)", env = MASTER_KEY_ENV)]
    MasterKeyRequired {
        /// The store URL without its password.
        store: String,
    },
    /// The master key is malformed or could not be made.
    #[error("master key: {reason}")]
    MasterKey {
        /// What is wrong.
        reason: String,
    },
    /// A record was changed without the master key.
    #[error(
        "certificate '{name}' was changed outside edgemtls (its name, environments, state or chain no longer match its seal): it will not be used; import it again, and check who can write the store"
    )]
    Tampered {
        /// The name as the record says.
        name: String,
    },
    /// The store can be read here but not written.
    #[error("the store in '{dir}' is read-only here (a read-only disk or mount, or no write permission): it can be read, but to {action} run the command where the store is writable", dir = dir.display())]
    ReadOnly {
        /// The store directory.
        dir: PathBuf,
        /// What could not be done.
        action: String,
    },
    /// A read-only store whose latest changes SQLite cannot read without writing beside it.
    #[error("the store in '{dir}' is read-only here and its latest changes are still in {DATABASE_FILE}-wal, which SQLite can read only by creating {DATABASE_FILE}-shm beside it: run any edgemtls command on the store once where it is writable, which folds them into {DATABASE_FILE}", dir = dir.display())]
    ReadOnlyWithPendingChanges {
        /// The store directory.
        dir: PathBuf,
    },
    /// The disk holding the store has no room left.
    #[error("the disk holding the store in '{dir}' is full: free some space on it and run the command again (nothing was changed)", dir = dir.display())]
    DiskFull {
        /// The store directory.
        dir: PathBuf,
    },
    /// The database file is damaged, so nothing is written to it.
    #[error("the store database '{database}' is damaged (SQLite finds it malformed), so edgemtls will not write to it: restore it from a backup (keep {KEY_FILE} beside it), or, if `edgemtls cert list` still reads it, copy its certificates into a new store with `edgemtls store copy --from {dir} --to NEW_DIR`", database = database.display(), dir = crate::shell::quote(&database.parent().unwrap_or(database).display().to_string()))]
    Damaged {
        /// The database file.
        database: PathBuf,
    },
    /// The database file is empty or gone, but its master key is still there.
    #[error("the store database '{database}' is {}, but the master key '{key_file}' beside it shows a store was made here: its certificates are lost until {DATABASE_FILE} is restored from a backup (keep {KEY_FILE}); to start a new, empty store here instead, move {KEY_FILE} away first", if *empty { "empty (0 bytes)" } else { "missing" }, database = database.display(), key_file = key_file.display())]
    DatabaseLost {
        /// The database file.
        database: PathBuf,
        /// The key file beside it.
        key_file: PathBuf,
        /// Whether the file is there but empty (else it is missing).
        empty: bool,
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
    #[error("the master key from {key_source} does not match the store {store}: it was sealed with another key (check {})", match key_source {
        KeySource::File(_) => format!("{MASTER_KEY_ENV} or the key file"),
        other => other.to_string(),
    })]
    WrongMasterKey {
        /// The store, as shown to people.
        store: String,
        /// Where the key came from.
        key_source: KeySource,
    },
    /// The store has sealed keys but no master key is available.
    #[error("no master key for the store {store}: set {env} or restore '{key_file}'", env = MASTER_KEY_ENV, key_file = key_file.display())]
    MissingMasterKey {
        /// The store, as shown to people.
        store: String,
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
    #[error("the store {store} has schema version {found}; this edgemtls supports up to {supported} (upgrade edgemtls here)")]
    NewerSchema {
        /// The store, as shown to people.
        store: String,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// No certificate has that name or id.
    #[error("no certificate named or with id '{0}'")]
    NotFound(String),
    /// There is no store in the directory.
    #[error("{}", match location {
        StoreLocation::Directory(dir) => format!("no certificate store in '{}' (create a certificate first, or pass --store DIR|URL / set EDGEMTLS_STORE)", dir.display()),
        StoreLocation::Postgres(_) => format!("no edgemtls store in the database at {location} yet (create a certificate first, or seed it with `edgemtls store copy --from DIR --to URL`)"),
    })]
    NoStore {
        /// Where one was looked for.
        location: StoreLocation,
    },
    /// The name is already used by another certificate.
    #[error("a certificate named '{0}' already exists")]
    NameTaken(String),
    /// The id is already another certificate's (a copy into a store that has it).
    #[error("the id {id} is already taken by certificate '{name}'")]
    IdTaken {
        /// The id.
        id: String,
        /// The name of the certificate that has it.
        name: String,
    },
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
    #[error("certificate '{0}' is enabled; disable it first (edgemtls cert disable {command})", command = crate::shell::quote(.0))]
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

/// An error from the database engine behind a store, in the words it is shown with. The
/// engine's error is kept for matching on, not chained as a `source()`: its words are already
/// in the message (tokio-postgres' own display repeats its cause, too).
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// From the SQLite file.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    /// From PostgreSQL.
    #[error("{}", postgres_reason(.0))]
    Postgres(tokio_postgres::Error),
}

/// What PostgreSQL said, without the client library's "db error" framing.
pub(super) fn postgres_reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut reason = error.to_string();
            for cause in crate::error_chain::causes(error).skip(1).filter(|cause| !crate::error_chain::wraps_another(*cause)) {
                reason = format!("{reason}: {cause}");
            }
            reason
        }
    }
}
