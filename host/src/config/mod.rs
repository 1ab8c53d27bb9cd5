//! `edgemtls.toml`: listen addresses, routes, per-environment variables and upstream trust.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Environment;
use crate::upstream::Authority;

mod egress;
mod options;
mod reuse_mark;
mod tls;
pub use egress::{Egress, HostPattern};
pub use options::{CertificateReference, certificate_references, option_problems};
pub use reuse_mark::{has_reuse_mark, with_reuse_mark};
pub use tls::{CallerField, CallerHeader, CallerRule, ClientAuth, TlsListener};

/// Why a config file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config '{path}': {}", crate::plain::io_error(source), path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
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
    pub pkcs11: crate::pkcs11::TokenSettings,
}

/// A route: a path prefix served by a handler component.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix, matched on segment boundaries (`/billing` matches `/billing/x`, not `/billingx`).
    pub path: String,
    /// The handler as written in the file.
    pub handler: String,
    /// Where the component comes from.
    pub component: ComponentSource,
    /// Options for the guest's `wasi:config/store`, before `$env(NAME)` substitution.
    pub options: BTreeMap<String, String>,
    /// Certificate names the handler uses besides those its options name (before `$env()`
    /// substitution): checked at start and reload, and protected from `cert disable`.
    pub certificates: Vec<String>,
    /// How the route's instances are reused.
    pub reuse: Reuse,
    /// Where its handler may send requests (`allowed_outbound_hosts`); `None`: what the
    /// route's options and `[[upstreams]]` name.
    pub allowed_outbound_hosts: Option<Vec<HostPattern>>,
    /// What the route asks of callers' certificates beyond the listener's `client_auth`.
    pub callers: CallerRule,
}

/// How a route reuses its instances between requests (one request at a time each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves before it is replaced; 1 means a fresh instance for every
    /// request. Default: 1,000 for built-in handlers and for components `edgemtls build` made
    /// (JavaScript handlers keep their globals between requests, as on Cloudflare Workers and
    /// Zuplo), 1 for other component files (a `wasi:http` guest written for `wasmtime serve`
    /// may assume a fresh instance; set it to opt in).
    pub max_requests_per_instance: u32,
    /// How long an unused instance stays warm. Default 10 s.
    pub idle_timeout: Duration,
    /// How many unused instances the route keeps warm. Default 32.
    pub max_idle_instances: u32,
}

impl Reuse {
    /// The defaults for a route's component: reuse for built-ins and for what `edgemtls build`
    /// made, fresh instances for other files.
    pub fn default_for(component: &ComponentSource) -> Self {
        let max_requests_per_instance = match component {
            ComponentSource::Builtin(_) => 1000,
            ComponentSource::File(path) if has_reuse_mark(path) => 1000,
            ComponentSource::File(_) => 1,
        };
        Self { max_requests_per_instance, idle_timeout: Duration::from_secs(10), max_idle_instances: 32 }
    }
}

/// Where a route's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A handler that ships with edgemtls (`url-forward`, `url-rewrite`, `hello-mtls`).
    Builtin(&'static edgemtls_plugins::Builtin),
    /// A component file (resolved relative to the config file).
    File(PathBuf),
}

/// Trust settings for upstream servers whose authority is in `hosts`.
#[derive(Debug, Clone)]
pub struct UpstreamTrust {
    /// `host:port` authorities, or `*` alone for every upstream no other entry lists.
    pub hosts: Vec<String>,
    /// Extra CA certificates (PEM) trusted for these hosts, besides the public web roots.
    pub ca_bundle: Option<PathBuf>,
    /// Verify the server's certificate chain. Default true; `false` is refused in production.
    pub verify: bool,
    /// Check that the certificate names the host. Default true; `false` is refused in production.
    pub check_hostname: bool,
    /// Certificate revocation lists (PEM or DER); a revoked server certificate is refused.
    pub crl: Vec<PathBuf>,
    /// Accepted SHA-256 pins (base64url, no padding) of the server's SubjectPublicKeyInfo;
    /// when set, a server whose key matches none is refused. Default: no pinning.
    pub pin_spki_sha256: Vec<[u8; 32]>,
    /// Asking the server certificate's issuer, on each new connection, whether it is revoked.
    pub revocation: crate::revocation::RevocationPolicy,
    /// The TLS versions spoken with these hosts. Default: TLS 1.3, and 1.2 with a server
    /// that has no 1.3.
    pub tls_versions: TlsVersions,
}

/// The TLS versions an `[[upstreams]]` entry allows (`tls_versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.3, and TLS 1.2 with a server that has no 1.3.
    #[default]
    Both,
    /// TLS 1.2 only, as nginx before 1.23.4 speaks to upstreams unless told otherwise. A
    /// resumed TLS 1.2 session exchanges no new keys (it has no forward secrecy), and the
    /// client certificate crosses the network unencrypted.
    Tls12Only,
    /// TLS 1.3 only: a server that has only TLS 1.2 is refused.
    Tls13Only,
}

impl TlsVersions {
    /// What rustls is told.
    pub fn rustls(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            Self::Both => rustls::DEFAULT_VERSIONS,
            Self::Tls12Only => TLS12_ONLY,
            Self::Tls13Only => TLS13_ONLY,
        }
    }

    /// From the list as written (`["1.2", "1.3"]`), or why not.
    fn from_list(list: &[String]) -> Result<Self, String> {
        let (mut tls12, mut tls13) = (false, false);
        for version in list {
            match version.as_str() {
                "1.2" => tls12 = true,
                "1.3" => tls13 = true,
                other => {
                    return Err(format!("'{other}' is not a TLS version edgemtls speaks; write \"1.2\", \"1.3\" or both"));
                }
            }
        }
        match (tls12, tls13) {
            (true, true) => Ok(Self::Both),
            (true, false) => Ok(Self::Tls12Only),
            (false, true) => Ok(Self::Tls13Only),
            (false, false) => Err("must name at least one version: \"1.2\", \"1.3\" or both".into()),
        }
    }
}

impl UpstreamTrust {
    /// Whether this entry weakens verification (`verify = false` or `check_hostname = false`).
    pub fn is_weakened(&self) -> bool {
        !self.verify || !self.check_hostname
    }

    /// An entry for these hosts with every default (full verification, no extra trust).
    pub fn for_hosts(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            ca_bundle: None,
            verify: true,
            check_hostname: true,
            crl: Vec::new(),
            pin_spki_sha256: Vec::new(),
            revocation: crate::revocation::RevocationPolicy::default(),
            tls_versions: TlsVersions::Both,
        }
    }
}

/// Limits applied to each request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline for a handler; over it the request gets 504. Default 30 s.
    pub request_timeout: Duration,
    /// Linear memory cap per instance; over it the request gets 500. Default 128 MiB.
    pub memory_bytes: usize,
    /// Outbound requests allowed per invocation. Default 32.
    pub max_outbound_requests: u32,
    /// Handler instances (running or warm) the host holds at once; beyond it requests get 503
    /// with `Retry-After`. Default 1,000.
    pub max_instances: u32,
    /// Time a client has to send a request's headers, and how long an idle keep-alive
    /// connection is kept. Default 60 s (nginx: `client_header_timeout` 60 s).
    pub header_timeout: Duration,
    /// Open client connections; beyond it a new connection is answered 503 and closed.
    /// Default 10,000.
    pub max_connections: u32,
    /// Once a response streams, how long it may go without a chunk before the handler is
    /// stopped; a download that makes progress is not cut by `request_timeout`. Default 30 s.
    pub stream_idle_timeout: Duration,
    /// WebSocket tunnels open at once; beyond it an upgrade is answered 503 with
    /// `Retry-After`. Default 1,000.
    pub max_websockets: u32,
    /// How long a WebSocket tunnel may carry nothing, in either direction, before it is
    /// closed. Default 60 s (nginx: `proxy_read_timeout` 60 s).
    pub websocket_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            max_outbound_requests: 32,
            max_instances: 1000,
            header_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            stream_idle_timeout: Duration::from_secs(30),
            max_websockets: 1000,
            websocket_idle_timeout: Duration::from_secs(60),
        }
    }
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
    routes: Vec<RouteToml>,
    #[serde(default)]
    upstreams: Vec<UpstreamToml>,
    #[serde(default)]
    limits: LimitsToml,
    pkcs11: Option<Pkcs11Toml>,
}

/// `[pkcs11]`: where token keys are signed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pkcs11Toml {
    module: Option<String>,
    pin_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentToml {
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    path: String,
    handler: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
    #[serde(default)]
    certificates: Vec<String>,
    max_requests_per_instance: Option<u32>,
    idle_timeout_ms: Option<u64>,
    max_idle_instances: Option<u32>,
    allowed_outbound_hosts: Option<Vec<String>>,
    client_auth: Option<String>,
    #[serde(default)]
    allowed_client_issuers: Vec<String>,
    #[serde(default)]
    allowed_client_subjects: Vec<String>,
    #[serde(default)]
    allowed_client_sans: Vec<String>,
    #[serde(default)]
    allowed_client_spki_sha256: Vec<String>,
    #[serde(default)]
    caller_headers: BTreeMap<String, String>,
    caller_headers_preset: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamToml {
    hosts: Vec<String>,
    ca_bundle: Option<String>,
    verify: Option<bool>,
    check_hostname: Option<bool>,
    #[serde(default)]
    crl: Vec<String>,
    #[serde(default)]
    pin_spki_sha256: Vec<String>,
    revocation: Option<String>,
    revocation_soft_fail: Option<bool>,
    revocation_timeout_ms: Option<u64>,
    crl_cache_ttl_s: Option<u64>,
    tls_versions: Option<Vec<String>>,
}

/// The revocation keys as written, in `[[upstreams]]` entries and `[tls]` alike.
struct RevocationKeys<'a> {
    mode: Option<&'a str>,
    soft_fail: Option<bool>,
    timeout_ms: Option<u64>,
    crl_cache_ttl_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    request_timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
    max_outbound_requests: Option<u32>,
    max_instances: Option<u32>,
    header_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    stream_idle_timeout_ms: Option<u64>,
    max_websockets: Option<u32>,
    websocket_idle_timeout_ms: Option<u64>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = crate::files::read_regular_file(path, MAX_CONFIG_BYTES)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
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

    fn pkcs11(&self, raw: Pkcs11Toml) -> Result<crate::pkcs11::TokenSettings, ConfigError> {
        let mut settings = crate::pkcs11::TokenSettings::default();
        if let Some(module) = raw.module {
            settings.module = self.existing_file("pkcs11.module", &module)?;
        }
        if let Some(pin_env) = raw.pin_env {
            // The name of a variable, never the PIN: a PIN-like value here is a mistake.
            let valid = !pin_env.is_empty()
                && pin_env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !pin_env.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(self.invalid(
                    "pkcs11.pin_env".into(),
                    "must name the environment variable that holds the PIN (letters, digits and '_'), not the PIN".into(),
                ));
            }
            settings.pin_env = pin_env;
        }
        Ok(settings)
    }

    /// A file the config names (relative to its directory), which must exist.
    fn existing_file(&self, key: &str, path: &str) -> Result<PathBuf, ConfigError> {
        let path = self.base.join(crate::pki::expand_tilde(Path::new(path)));
        if path.is_file() { Ok(path) } else { Err(self.invalid(key.to_string(), format!("'{}' does not exist", path.display()))) }
    }

    /// One `[[routes]]` entry; `earlier` are the routes before it.
    fn route(&self, index: usize, mut route: RouteToml, earlier: &[Route], tls: Option<&TlsListener>) -> Result<Route, ConfigError> {
        let invalid = |key: String, reason: String| self.invalid(key, reason);
        let key = |field: &str| format!("routes[{index}].{field}");
        if !route.path.starts_with('/') {
            return Err(invalid(key("path"), format!("'{}' must start with '/'", route.path)));
        }
        // `/a` and `/a/` are one route, and so are `/u/:id` and `/u/:name`: the second
        // could never be reached.
        if let Some(earlier) = earlier.iter().find(|r: &&Route| route_shape(&r.path) == route_shape(&route.path)) {
            return Err(invalid(
                key("path"),
                format!("'{}' matches exactly what '{}' matches, so one would never be reached", route.path, earlier.path),
            ));
        }
        let component = self.component(&key("handler"), &route.handler)?;
        let options = self.options(&key("options"), std::mem::take(&mut route.options))?;
        // "/billing/" and "/billing" are the same prefix; "/" stays "/".
        let path = match route.path.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        let reuse = self.reuse(&key, &component, &route)?;
        let callers = self.caller_rule(&key, &mut route, tls)?;
        let allowed_outbound_hosts = match route.allowed_outbound_hosts {
            None => None,
            Some(entries) => Some(
                entries
                    .iter()
                    .enumerate()
                    .map(|(n, entry)| {
                        HostPattern::parse(entry).map_err(|reason| invalid(key(&format!("allowed_outbound_hosts[{n}]")), reason))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Route {
            path,
            handler: route.handler,
            component,
            options,
            certificates: route.certificates,
            reuse,
            allowed_outbound_hosts,
            callers,
        })
    }

    /// The component a route's `handler` names: a built-in, or a `.wasm` file.
    fn component(&self, key: &str, handler: &str) -> Result<ComponentSource, ConfigError> {
        if let Some(builtin) = edgemtls_plugins::builtin(handler) {
            Ok(ComponentSource::Builtin(builtin))
        } else if handler.ends_with(".wasm") {
            Ok(ComponentSource::File(self.base.join(crate::pki::expand_tilde(Path::new(handler)))))
        } else {
            let names: Vec<_> = edgemtls_plugins::BUILTINS.iter().map(|b| b.name).collect();
            Err(self.invalid(
                key.to_string(),
                format!("'{handler}' is neither a built-in handler ({}) nor a path to a .wasm component", names.join(", ")),
            ))
        }
    }

    /// A route's options as text (numbers and booleans written as in TOML).
    fn options(&self, key: &str, raw: BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut options = BTreeMap::new();
        for (name, value) in raw {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => value.to_string(),
                other => {
                    return Err(
                        self.invalid(format!("{key}.{name}"), format!("must be a string, number or boolean, not {}", other.type_str()))
                    );
                }
            };
            options.insert(name, text);
        }
        Ok(options)
    }

    /// How a route reuses instances: the component's default, with the route's overrides.
    fn reuse(&self, key: &dyn Fn(&str) -> String, component: &ComponentSource, route: &RouteToml) -> Result<Reuse, ConfigError> {
        let mut reuse = Reuse::default_for(component);
        if let Some(max) = route.max_requests_per_instance {
            if !(1..=1_000_000).contains(&max) {
                return Err(self.invalid(
                    key("max_requests_per_instance"),
                    format!("{max} is out of range: use 1 (a fresh instance per request) to 1000000"),
                ));
            }
            reuse.max_requests_per_instance = max;
        }
        if let Some(ms) = route.idle_timeout_ms {
            if !(1..=3_600_000).contains(&ms) {
                return Err(self.invalid(key("idle_timeout_ms"), format!("{ms} is out of range: use 1 to 3600000 (one hour)")));
            }
            reuse.idle_timeout = Duration::from_millis(ms);
        }
        if let Some(count) = route.max_idle_instances {
            if count > 1000 {
                return Err(self.invalid(key("max_idle_instances"), format!("{count} is out of range: use 0 to 1000")));
            }
            reuse.max_idle_instances = count;
        }
        Ok(reuse)
    }

    /// One `[[upstreams]]` entry; `earlier` are the entries before it.
    fn upstream(&self, index: usize, upstream: UpstreamToml, earlier: &[UpstreamTrust]) -> Result<UpstreamTrust, ConfigError> {
        let invalid = |key: String, reason: String| self.invalid(key, reason);
        if upstream.hosts.is_empty() {
            return Err(invalid(format!("upstreams[{index}].hosts"), "must name at least one host:port".into()));
        }
        let key = |field: &str| format!("upstreams[{index}].{field}");
        let existing = |field: &str, path: String| self.existing_file(&key(field), &path);
        let revocation = self.revocation_policy(
            &key,
            RevocationKeys {
                mode: upstream.revocation.as_deref(),
                soft_fail: upstream.revocation_soft_fail,
                timeout_ms: upstream.revocation_timeout_ms,
                crl_cache_ttl_s: upstream.crl_cache_ttl_s,
            },
        )?;
        let tls_versions = match &upstream.tls_versions {
            Some(list) => TlsVersions::from_list(list).map_err(|reason| invalid(key("tls_versions"), reason))?,
            None => TlsVersions::Both,
        };
        let ca_bundle = upstream.ca_bundle.map(|p| existing("ca_bundle", p)).transpose()?;
        let crl = upstream.crl.into_iter().map(|p| existing("crl", p)).collect::<Result<Vec<_>, _>>()?;
        let mut pins = Vec::new();
        for pin in &upstream.pin_spki_sha256 {
            let bytes = decode_spki_pin(pin)
                .ok_or_else(|| invalid(key("pin_spki_sha256"), format!("'{pin}' is not a base64url SHA-256 (43 characters)")))?;
            pins.push(bytes);
        }
        let mut hosts = Vec::new();
        for (position, host) in upstream.hosts.iter().enumerate() {
            let host = upstream_host(host).map_err(|reason| invalid(format!("upstreams[{index}].hosts[{position}]"), reason))?;
            if host == DEFAULT_UPSTREAM && upstream.hosts.len() > 1 {
                return Err(invalid(
                    format!("upstreams[{index}].hosts"),
                    "\"*\" (every upstream not listed elsewhere) must be alone in its entry".into(),
                ));
            }
            if let Some(other) = earlier.iter().position(|u: &UpstreamTrust| u.hosts.contains(&host)) {
                return Err(invalid(
                    format!("upstreams[{index}].hosts[{position}]"),
                    format!("'{host}' is already in upstreams[{other}]; one entry per host"),
                ));
            }
            hosts.push(host);
        }
        Ok(UpstreamTrust {
            hosts,
            ca_bundle,
            verify: upstream.verify.unwrap_or(true),
            check_hostname: upstream.check_hostname.unwrap_or(true),
            crl,
            pin_spki_sha256: pins,
            revocation,
            tls_versions,
        })
    }

    /// An `[[upstreams]]` entry's or `[tls]`'s `revocation`, `revocation_soft_fail`,
    /// `revocation_timeout_ms` and `crl_cache_ttl_s`, each within its range.
    fn revocation_policy(
        &self,
        key: &dyn Fn(&str) -> String,
        upstream: RevocationKeys<'_>,
    ) -> Result<crate::revocation::RevocationPolicy, ConfigError> {
        use crate::revocation::{RevocationMode, RevocationPolicy};
        let mut policy = RevocationPolicy::default();
        if let Some(mode) = upstream.mode {
            policy.mode = match mode {
                "off" => RevocationMode::Off,
                "crl" => RevocationMode::Crl,
                "ocsp" => RevocationMode::Ocsp,
                "both" => RevocationMode::Both,
                other => return Err(self.invalid(key("revocation"), format!("'{other}' is not one of off, crl, ocsp, both"))),
            };
        }
        let set = upstream.soft_fail.is_some() || upstream.timeout_ms.is_some() || upstream.crl_cache_ttl_s.is_some();
        if set && policy.mode == RevocationMode::Off {
            return Err(self.invalid(
                key("revocation"),
                "revocation settings are given but revocation is off: set revocation = \"crl\", \"ocsp\" or \"both\"".into(),
            ));
        }
        policy.soft_fail = upstream.soft_fail.unwrap_or(false);
        if let Some(ms) = upstream.timeout_ms {
            if !(100..=60_000).contains(&ms) {
                return Err(self.invalid(key("revocation_timeout_ms"), format!("{ms} is out of range: use 100 to 60000")));
            }
            policy.timeout = Duration::from_millis(ms);
        }
        if let Some(seconds) = upstream.crl_cache_ttl_s {
            if !(1..=604_800).contains(&seconds) {
                return Err(self.invalid(key("crl_cache_ttl_s"), format!("{seconds} is out of range: use 1 to 604800 (a week)")));
            }
            policy.crl_cache_ttl = Duration::from_secs(seconds);
        }
        Ok(policy)
    }

    /// The `[limits]` table, each value within its range.
    fn limits(&self, raw: &LimitsToml) -> Result<Limits, ConfigError> {
        let invalid = |key: String, reason: String| self.invalid(key, reason);
        let defaults = Limits::default();
        let within = |field: &str, value: Option<u64>, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, ConfigError> {
            match value {
                Some(v) if !range.contains(&v) => {
                    Err(invalid(format!("limits.{field}"), format!("{v} is out of range: use {} to {}", range.start(), range.end())))
                }
                other => Ok(other),
            }
        };
        // Every range lies within u32 for counts, so the narrowing below cannot wrap.
        let millis = |field: &str, value: Option<u64>, default: Duration| -> Result<Duration, ConfigError> {
            Ok(within(field, value, 1..=3_600_000)?.map(Duration::from_millis).unwrap_or(default))
        };
        let count = |field: &str, value: Option<u32>, max: u64, default: u32| -> Result<u32, ConfigError> {
            Ok(within(field, value.map(u64::from), 1..=max)?.map(|n| n as u32).unwrap_or(default))
        };
        Ok(Limits {
            request_timeout: millis("request_timeout_ms", raw.request_timeout_ms, defaults.request_timeout)?,
            memory_bytes: within("memory_mib", raw.memory_mib, 1..=4096)?.map(|m| (m as usize) << 20).unwrap_or(defaults.memory_bytes),
            max_outbound_requests: count("max_outbound_requests", raw.max_outbound_requests, 10_000, defaults.max_outbound_requests)?,
            max_instances: count("max_instances", raw.max_instances, 10_000, defaults.max_instances)?,
            header_timeout: millis("header_timeout_ms", raw.header_timeout_ms, defaults.header_timeout)?,
            max_connections: count("max_connections", raw.max_connections, 1_000_000, defaults.max_connections)?,
            stream_idle_timeout: millis("stream_idle_timeout_ms", raw.stream_idle_timeout_ms, defaults.stream_idle_timeout)?,
            max_websockets: count("max_websockets", raw.max_websockets, 1_000_000, defaults.max_websockets)?,
            websocket_idle_timeout: millis("websocket_idle_timeout_ms", raw.websocket_idle_timeout_ms, defaults.websocket_idle_timeout)?,
        })
    }
}

/// The `hosts` entry that gives trust to every upstream no other entry lists.
pub const DEFAULT_UPSTREAM: &str = "*";

/// Checks one `[[upstreams]] hosts` entry and returns it normalised (lower case). Entries
/// that could never match a request are refused with the fix, not silently ignored.
fn upstream_host(host: &str) -> Result<String, String> {
    let trimmed = host.trim();
    if trimmed == DEFAULT_UPSTREAM {
        return Ok(DEFAULT_UPSTREAM.to_string());
    }
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let authority = rest.split('/').next().unwrap_or_default();
        return Err(format!("'{host}' has a scheme ({scheme}://); write the host and port alone, like '{authority}'"));
    }
    if trimmed.contains('*') {
        return Err(format!(
            "'{host}': wildcards are not supported; list each host:port, or use \"*\" alone for every upstream not listed"
        ));
    }
    let authority = Authority::parse(trimmed).ok_or_else(|| format!("'{host}' is not a host:port like 'billing.internal:8443'"))?;
    let has_port = trimmed.parse::<http::uri::Authority>().is_ok_and(|a| a.port_u16().is_some());
    if !has_port {
        return Err(format!("'{host}' has no port; write '{host}:443' or the port the upstream listens on"));
    }
    Ok(authority.to_string())
}

/// A SHA-256 pin written as base64url (padding allowed), as `pin_spki_sha256` and
/// `allowed_client_spki_sha256` take it.
fn decode_spki_pin(pin: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(pin.trim_end_matches('=')).ok()?;
    <[u8; 32]>::try_from(bytes).ok()
}

/// A route path with parameter names erased: two routes of one shape match the same requests.
fn route_shape(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).map(|s| if s.starts_with(':') { ":" } else { s }).collect()
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
