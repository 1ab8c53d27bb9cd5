//! What a route's options must be, and which certificate names a route uses.
//!
//! Built-in handlers declare their options ([`edgemtls_plugins::OptionSpec`]): an unknown
//! option is a typo until proven otherwise, a missing required one an outage. Certificate
//! names are never guessed from variable names: they are the options a handler declares as
//! certificate names, the variables a built-in declares it reads, and the route's own
//! `certificates` list (for components we cannot look into).

use std::collections::BTreeMap;

use edgemtls_plugins::{Builtin, OptionKind};

use super::{ComponentSource, Route};

/// A certificate name a route uses, and where the config says so (for messages).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertificateReference {
    /// The name, after `$env()` substitution.
    pub name: String,
    /// Where it comes from, e.g. `route '/api' option mtlsCertificate = "$env(CERT)"`.
    pub origin: String,
}

/// Every problem with a route's options (after `$env()` substitution): unknown options of a
/// built-in handler (with the closest known one), missing required ones, and values of the
/// wrong kind. Options of a component file are its own business.
pub fn option_problems(route: &Route, resolved: &BTreeMap<String, String>) -> Vec<String> {
    let ComponentSource::Builtin(builtin) = &route.component else { return Vec::new() };
    let mut problems = Vec::new();
    let at = |option: &str| format!("route '{}' option '{option}'", route.path);
    for name in resolved.keys() {
        if let Some(problem) = unknown_option(route, name) {
            problems.push(format!("{}: {problem}", at(name)));
        }
    }
    for spec in builtin.options {
        match resolved.get(spec.name) {
            None if spec.required => problems.push(format!("{}: {} needs this option", at(spec.name), builtin.name)),
            None => {}
            Some(value) => {
                if let Some(reason) = kind_problem(spec.kind, value) {
                    problems.push(format!("{}: {reason}", at(spec.name)));
                }
            }
        }
    }
    problems
}

/// What is wrong with option `name` of a built-in handler that has no such option (the
/// closest known one, or the list), `None` when it has it or the handler is a component.
pub(super) fn unknown_option(route: &Route, name: &str) -> Option<String> {
    let ComponentSource::Builtin(builtin) = &route.component else { return None };
    if builtin.options.iter().any(|o| o.name == name) {
        return None;
    }
    let hint = match closest_option(builtin, name) {
        Some(known) => format!("; did you mean '{known}'?"),
        None => format!(" (it reads {})", known_options(builtin)),
    };
    Some(format!("{} has no such option{hint}", builtin.name))
}

fn kind_problem(kind: OptionKind, value: &str) -> Option<String> {
    match kind {
        OptionKind::Text | OptionKind::CertificateName => None,
        OptionKind::Boolean => (value != "true" && value != "false").then(|| format!("'{value}' is not true or false")),
        OptionKind::Url => url_problem(value),
        OptionKind::BaseUrl => url_problem(value).or_else(|| base_url_problem(value)),
    }
}

fn url_problem(value: &str) -> Option<String> {
    let scheme = value.parse::<http::Uri>().ok().and_then(|uri| {
        let has_host = uri.host().is_some_and(|h| !h.is_empty());
        uri.scheme_str().filter(|_| has_host).map(str::to_ascii_lowercase)
    });
    match scheme.as_deref() {
        // wss:// and ws:// are https:// and http:// for a WebSocket the route forwards.
        Some("https" | "http" | "wss" | "ws") => None,
        Some(other) => Some(format!("'{value}' uses {other}://; only https:// (or http://, wss://, ws://) upstreams are supported")),
        None => Some(format!("'{value}' is not an absolute URL like https://billing.internal:8443")),
    }
}

/// The request's path and query are appended to a base URL, so a query or fragment of its
/// own would end up in the middle of the path (`/base?x=1/users?page=2`).
fn base_url_problem(value: &str) -> Option<String> {
    if let Some(at) = value.find('#') {
        return Some(format!("'{value}' has a fragment ('{}'), which is never sent to an upstream; remove it", &value[at..]));
    }
    value.find('?').map(|at| {
        format!(
            "'{value}' has a query ('{}'); the request's path and query are appended to baseUrl, so it cannot carry one of its own: remove it, or build the URL with url-rewrite's rewritePattern",
            &value[at..]
        )
    })
}

/// The known option closest to `name`: the same but for case, or a small typo away.
fn closest_option(builtin: &Builtin, name: &str) -> Option<&'static str> {
    builtin
        .options
        .iter()
        .map(|o| (o.name, strsim::levenshtein(&o.name.to_ascii_lowercase(), &name.to_ascii_lowercase())))
        .filter(|(known, distance)| *distance <= 2.max(known.len() / 5))
        .min_by_key(|(_, distance)| *distance)
        .map(|(known, _)| known)
}

fn known_options(builtin: &Builtin) -> String {
    builtin.options.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
}

/// The certificate names `route` uses in an environment with `vars`, given its options
/// after `$env()` substitution (`resolved`) and before (`route.options`). Empty names mean
/// "no certificate" and are left out.
pub fn certificate_references(
    route: &Route,
    resolved: &BTreeMap<String, String>,
    resolved_certificates: &[String],
    vars: &BTreeMap<String, String>,
) -> Vec<CertificateReference> {
    let mut references = Vec::new();
    let mut push = |name: &str, origin: String| {
        if !name.is_empty() {
            references.push(CertificateReference { name: name.to_string(), origin });
        }
    };
    let mut named_by_option = false;
    if let ComponentSource::Builtin(builtin) = &route.component {
        for spec in builtin.options.iter().filter(|o| o.kind == OptionKind::CertificateName) {
            if let Some(name) = resolved.get(spec.name) {
                named_by_option = true;
                let raw = route.options.get(spec.name).map(String::as_str).unwrap_or_default();
                let origin = if raw == name {
                    format!("route '{}' option {}", route.path, spec.name)
                } else {
                    format!("route '{}' option {} = \"{raw}\"", route.path, spec.name)
                };
                push(name, origin);
            }
        }
        if !named_by_option {
            for var in builtin.certificate_vars {
                if let Some(name) = vars.get(*var) {
                    push(name, format!("route '{}' ({} reads variable {var})", route.path, builtin.name));
                }
            }
        }
    }
    for (index, (name, raw)) in resolved_certificates.iter().zip(&route.certificates).enumerate() {
        let origin = if raw == name {
            format!("route '{}' certificates[{index}]", route.path)
        } else {
            format!("route '{}' certificates[{index}] = \"{raw}\"", route.path)
        };
        push(name, origin);
    }
    references
}
