//! Where a store lives: a directory holding an SQLite file (one machine), or a PostgreSQL
//! database (many nodes sharing one store).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The variable that names the store when `--store` is not given.
pub const STORE_ENV: &str = "EDGEMTLS_STORE";
/// The default store directory, relative to the working directory.
pub const DEFAULT_STORE_DIR: &str = ".edgemtls";

/// A store's location, as given by `--store` or `EDGEMTLS_STORE`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory with `store.db` and (unless `EDGEMTLS_MASTER_KEY` is set) `master.key`.
    Directory(PathBuf),
    /// A PostgreSQL database, `postgres://user:password@host:port/database?sslmode=…`.
    Postgres(PostgresUrl),
}

/// A PostgreSQL URL. It may carry a password, so it is shown only with the password removed.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
}

impl PostgresUrl {
    /// The URL as given, password included: for connecting, never for printing.
    pub fn secret(&self) -> &str {
        &self.url
    }

    /// The URL without its password (`postgres://user:***@host/db`), for messages.
    pub fn shown(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        // The authority ends at the first '/' or '?'; a password may contain neither.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl StoreLocation {
    /// Reads a location: a `postgres://` or `postgresql://` URL, else a directory (`~` expanded).
    pub fn parse(text: &OsStr) -> Self {
        match text.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreLocation::Postgres(PostgresUrl { url: url.to_string() })
            }
            _ => StoreLocation::Directory(crate::files::expand_tilde(Path::new(text))),
        }
    }

    /// An explicit `--store`, else `EDGEMTLS_STORE`, else `.edgemtls`.
    pub fn resolve(explicit: Option<&OsStr>) -> Self {
        if let Some(text) = explicit {
            return Self::parse(text);
        }
        match std::env::var_os(STORE_ENV) {
            Some(text) if !text.is_empty() => Self::parse(&text),
            _ => StoreLocation::Directory(PathBuf::from(DEFAULT_STORE_DIR)),
        }
    }

    /// The directory, for a store on this machine.
    pub fn directory(&self) -> Option<&Path> {
        match self {
            StoreLocation::Directory(dir) => Some(dir),
            StoreLocation::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Directory(dir) => write!(f, "{}", dir.display()),
            StoreLocation::Postgres(url) => f.write_str(&url.shown()),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let location = StoreLocation::parse(OsStr::new("postgres://edge:s3cr:et@db.example:5432/edgemtls?sslmode=require"));
        assert_eq!(location.to_string(), "postgres://edge:***@db.example:5432/edgemtls?sslmode=require");
        assert_eq!(format!("{location:?}"), "StoreLocation(postgres://edge:***@db.example:5432/edgemtls?sslmode=require)");
        let location = StoreLocation::parse(OsStr::new("postgresql://edge@db/edgemtls"));
        assert_eq!(location.to_string(), "postgresql://edge@db/edgemtls");
        assert_eq!(StoreLocation::parse(OsStr::new("some/dir")), StoreLocation::Directory(PathBuf::from("some/dir")));
    }
}
