//! `edgemtls.toml`: listen addresses, routes, per-environment variables and upstream trust.
//!
//! Plain data that the rest of the host reads; config itself imports only leaves (`Environment`,
//! `Authority`, the identity header names, file reading and plain words). This file holds
//! the whole file's shape ([`Config`], its raw TOML, [`Config::parse`]) and the `Reader`
//! the parts share; each part has its type, its raw TOML and its reader in one file:
//! `routes.rs`, `upstreams.rs`, `limits.rs`, `tls.rs` (`[tls]`), `revocation_policy.rs`,
//! `pkcs11.rs` (`[pkcs11]`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Environment;

mod egress;
mod limits;
mod options;
mod pkcs11;
mod reuse_mark;
mod revocation_policy;
mod routes;
mod tls;
mod upstreams;
pub use egress::{Egress, HostPattern};
pub use limits::Limits;
pub use options::{CertificateReference, certificate_references, option_problems};
pub use pkcs11::{DEFAULT_MODULE, DEFAULT_PIN_ENV, TokenSettings};
pub use reuse_mark::{has_reuse_mark, with_reuse_mark};
pub use revocation_policy::{RevocationMode, RevocationPolicy};
pub use routes::{ComponentSource, Reuse, Route};
pub use tls::{CallerField, CallerHeader, CallerRule, ClientAuth, TlsListener};
pub use upstreams::{DEFAULT_UPSTREAM, TlsVersions, UpstreamTrust};

/// Why a config file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config '{path}': {}", crate::plain::io_error(error), path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error. Its words are in the message, so it is not also the error's
        /// `source()` (a reader would see them twice).
        error: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid config '{path}': {message}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("invalid config '{path}': {key}: {reason}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `routes[0].path`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A parsed and checked `edgemtls.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Where to serve requests. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where to serve `/healthz` and `/metrics`. Default: not served.
    pub admin_listen: Option<SocketAddr>,
    /// `listen` serves HTTPS with this certificate, and asks callers for theirs as it says.
    /// Default: plain HTTP.
    pub tls: Option<TlsListener>,
    /// Variables per environment: `wasi:cli/environment` for guests and `$env(NAME)` in options.
    pub vars: HashMap<Environment, BTreeMap<String, String>>,
    /// Routes. The router tries those with more segments first, and literal segments before
    /// `:name` parameters; two routes of the same shape are refused (`server/router.rs`).
    pub routes: Vec<Route>,
    /// Trust for upstream servers, matched by authority.
    pub upstreams: Vec<UpstreamTrust>,
    /// Per-request limits.
    pub limits: Limits,
    /// The PKCS#11 module and PIN variable for certificates whose key is in a token
    /// (`[pkcs11] module`, `pin_env`). Default: SoftHSM2's module
    /// (`/usr/lib/softhsm/libsofthsm2.so`) and `EDGEMTLS_PKCS11_PIN`.
    pub pkcs11: TokenSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigToml {
    listen: Option<String>,
    admin_listen: Option<String>,
    tls: Option<tls::TlsToml>,
    #[serde(default)]
    environments: BTreeMap<String, EnvironmentToml>,
    #[serde(default)]
    routes: Vec<routes::RouteToml>,
    #[serde(default)]
    upstreams: Vec<upstreams::UpstreamToml>,
    #[serde(default)]
    limits: limits::LimitsToml,
    pkcs11: Option<pkcs11::Pkcs11Toml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentToml {
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = crate::files::read_regular_file(path, MAX_CONFIG_BYTES)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::Parse { path: path.to_path_buf(), message: "the file is not UTF-8 text".into() })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: ConfigToml = toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let reader = Reader { path, base: path.parent().unwrap_or(Path::new(".")) };
        let addr = |key: &str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|e| reader.invalid(key.into(), format!("'{value}' is not an address like 127.0.0.1:8080 ({e})")))
        };
        let listen = addr("listen", raw.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let admin_listen = raw.admin_listen.as_deref().map(|a| addr("admin_listen", a)).transpose()?;

        let mut vars = HashMap::new();
        for (name, env) in raw.environments {
            let environment: Environment =
                name.parse().map_err(|e: crate::UnknownEnvironment| reader.invalid(format!("environments.{name}"), e.to_string()))?;
            vars.insert(environment, env.vars);
        }
        let tls = raw.tls.map(|tls| reader.tls(tls)).transpose()?;
        let mut routes = Vec::new();
        for (index, route) in raw.routes.into_iter().enumerate() {
            let route = reader.route(index, route, &routes, tls.as_ref())?;
            routes.push(route);
        }
        let mut upstreams = Vec::new();
        for (index, upstream) in raw.upstreams.into_iter().enumerate() {
            let upstream = reader.upstream(index, upstream, &upstreams)?;
            upstreams.push(upstream);
        }
        let limits = reader.limits(&raw.limits)?;
        let pkcs11 = raw.pkcs11.map(|p| reader.pkcs11(p)).transpose()?.unwrap_or_default();
        Ok(Config { path: path.to_path_buf(), listen, admin_listen, tls, vars, routes, upstreams, limits, pkcs11 })
    }

    /// The variables of `environment` (empty when the file has none).
    pub fn vars_for(&self, environment: Environment) -> BTreeMap<String, String> {
        self.vars.get(&environment).cloned().unwrap_or_default()
    }

    /// A route's options with `$env(NAME)` replaced from `environment`'s variables.
    pub fn resolved_options(&self, route: &Route, environment: Environment) -> Result<BTreeMap<String, String>, ConfigError> {
        let vars = self.vars_for(environment);
        let mut resolved = BTreeMap::new();
        for (key, value) in &route.options {
            let value = substitute_env(value, &vars).map_err(|name| {
                let undefined = format!("variable '{name}' is not defined for environment {environment}");
                // A misspelled option is the problem to fix first: with its variable defined it
                // would still be ignored, so the typo is named even when the value cannot be read.
                let reason = match options::unknown_option(route, key) {
                    Some(typo) => format!("{typo} (and its {undefined})"),
                    None => undefined,
                };
                ConfigError::Invalid { path: self.path.clone(), key: format!("route '{}' option '{key}'", route.path), reason }
            })?;
            resolved.insert(key.clone(), value);
        }
        Ok(resolved)
    }
}

impl Config {
    /// A route's `certificates` with `$env(NAME)` replaced from `environment`'s variables.
    pub fn resolved_certificates(&self, route: &Route, environment: Environment) -> Result<Vec<String>, ConfigError> {
        let vars = self.vars_for(environment);
        route
            .certificates
            .iter()
            .enumerate()
            .map(|(index, value)| {
                substitute_env(value, &vars).map_err(|name| ConfigError::Invalid {
                    path: self.path.clone(),
                    key: format!("route '{}' certificates[{index}]", route.path),
                    reason: format!("variable '{name}' is not defined for environment {environment}"),
                })
            })
            .collect()
    }
}

/// Reads the parts of one config file; errors name the file and the key.
struct Reader<'a> {
    path: &'a Path,
    /// Relative paths in the file are relative to its directory.
    base: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, key: String, reason: String) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_path_buf(), key, reason }
    }

    /// A file the config names (relative to its directory), which must exist.
    fn existing_file(&self, key: &str, path: &str) -> Result<PathBuf, ConfigError> {
        let path = self.base.join(crate::files::expand_tilde(Path::new(path)));
        if path.is_file() { Ok(path) } else { Err(self.invalid(key.to_string(), format!("'{}' does not exist", path.display()))) }
    }
}

/// A SHA-256 pin written as base64url (padding allowed), as `pin_spki_sha256` and
/// `allowed_client_spki_sha256` take it.
fn decode_spki_pin(pin: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(pin.trim_end_matches('=')).ok()?;
    <[u8; 32]>::try_from(bytes).ok()
}

/// Replaces every `$env(NAME)` in `value`; returns the first undefined name as the error.
pub fn substitute_env(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("$env(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
