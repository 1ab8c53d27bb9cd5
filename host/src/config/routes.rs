//! `[[routes]]`: what a route is (path, handler component, options, instance reuse, callers,
//! outbound hosts), its keys as written, and how they are read and checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::egress::HostPattern;
use super::tls::{CallerRule, ClientAuth, TlsListener, merge_caller_headers};
use super::{ConfigError, Reader, decode_spki_pin};

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
            ComponentSource::File(path) if super::has_reuse_mark(path) => 1000,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteToml {
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

impl Reader<'_> {
    /// One `[[routes]]` entry; `earlier` are the routes before it.
    pub(super) fn route(
        &self,
        index: usize,
        mut route: RouteToml,
        earlier: &[Route],
        tls: Option<&TlsListener>,
    ) -> Result<Route, ConfigError> {
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
    pub(super) fn component(&self, key: &str, handler: &str) -> Result<ComponentSource, ConfigError> {
        if let Some(builtin) = edgemtls_plugins::builtin(handler) {
            Ok(ComponentSource::Builtin(builtin))
        } else if handler.ends_with(".wasm") {
            Ok(ComponentSource::File(self.base.join(crate::files::expand_tilde(Path::new(handler)))))
        } else {
            let names: Vec<_> = edgemtls_plugins::BUILTINS.iter().map(|b| b.name).collect();
            Err(self.invalid(
                key.to_string(),
                format!("'{handler}' is neither a built-in handler ({}) nor a path to a .wasm component", names.join(", ")),
            ))
        }
    }

    /// A route's options as text (numbers and booleans written as in TOML).
    pub(super) fn options(&self, key: &str, raw: BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>, ConfigError> {
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
    pub(super) fn reuse(&self, key: &dyn Fn(&str) -> String, component: &ComponentSource, route: &RouteToml) -> Result<Reuse, ConfigError> {
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

    /// A route's rule for callers (its `client_auth` and `allowed_client_*` keys, taken from
    /// `raw`); `listener` is the `[tls]` table, if any.
    pub(super) fn caller_rule(
        &self,
        key: &dyn Fn(&str) -> String,
        raw: &mut RouteToml,
        listener: Option<&TlsListener>,
    ) -> Result<CallerRule, ConfigError> {
        let client_auth = raw
            .client_auth
            .as_deref()
            .map(|value| ClientAuth::parse(value).map_err(|reason| self.invalid(key("client_auth"), reason)))
            .transpose()?;
        let mut spki_sha256 = Vec::new();
        for (n, pin) in raw.allowed_client_spki_sha256.iter().enumerate() {
            spki_sha256.push(decode_spki_pin(pin).ok_or_else(|| {
                self.invalid(
                    key(&format!("allowed_client_spki_sha256[{n}]")),
                    format!("'{pin}' is not a base64url SHA-256 (43 characters)"),
                )
            })?);
        }
        let own_headers = self.caller_headers(key("").trim_end_matches('.'), raw.caller_headers_preset.as_deref(), &raw.caller_headers)?;
        let rule = CallerRule {
            client_auth,
            issuers: std::mem::take(&mut raw.allowed_client_issuers),
            subjects: std::mem::take(&mut raw.allowed_client_subjects),
            sans: std::mem::take(&mut raw.allowed_client_sans),
            spki_sha256,
            headers: merge_caller_headers(listener.map_or(&[][..], |l| &l.caller_headers), &own_headers),
        };
        let listener_auth = listener.map_or(ClientAuth::None, |l| l.client_auth);
        if let Some(route_auth) = rule.client_auth
            && route_auth < listener_auth
        {
            return Err(self.invalid(
                key("client_auth"),
                format!(
                    "\"{}\" is looser than the listener's client_auth = \"{}\"; a route may only be stricter",
                    route_auth.as_str(),
                    listener_auth.as_str()
                ),
            ));
        }
        let asks_for_certificates = rule.client_auth.is_some_and(|a| a != ClientAuth::None) || rule.has_allow_list();
        if asks_for_certificates && listener_auth == ClientAuth::None {
            return Err(self.invalid(
                key(if rule.client_auth.is_some() { "client_auth" } else { "allowed_client_*" }),
                "callers can only present certificates when [tls] sets client_auth = \"optional\" (or \"required\") and client_ca".into(),
            ));
        }
        Ok(rule)
    }
}

/// A route path with parameter names erased: two routes of one shape match the same requests.
fn route_shape(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).map(|s| if s.starts_with(':') { ":" } else { s }).collect()
}
