//! `edgemtls cert test`: one real mTLS request with a stored certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use edgemtls_host::Environment;
use edgemtls_host::config::UpstreamTrust;

use super::Context;
use super::output::printable;

#[derive(Args)]
pub struct TestCommand {
    /// Name or id.
    reference: String,
    /// The https:// URL to request.
    url: String,
    /// Resolve the name in this environment.
    #[arg(long, env = "EDGEMTLS_ENV", default_value = "development")]
    env: Environment,
    /// Take upstream trust ([[upstreams]]) from this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also trust this CA (PEM) for the URL's host.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl TestCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let Self { reference, url, env, config, ca, json } = self;
        let uri: http::Uri = url.parse().with_context(|| format!("invalid URL '{url}'"))?;
        let authority =
            edgemtls_host::upstream::Authority::of(&uri).ok_or_else(|| anyhow::anyhow!("the URL '{url}' has no host"))?.to_string();
        let (mut upstreams, token) = match config {
            Some(path) => {
                let config = crate::commands::serve::load_config(&path)?;
                (config.upstreams, config.pkcs11)
            }
            None => (Vec::new(), Default::default()),
        };
        // A key in a token signs the test handshake as `serve` would: the config's [pkcs11].
        edgemtls_host::pkcs11::configure(token);
        if let Some(ca) = ca {
            // The explicit CA replaces any config entry for this host.
            upstreams.retain(|u| !u.hosts.contains(&authority));
            upstreams.push(UpstreamTrust {
                hosts: vec![authority.clone()],
                ca_bundle: Some(edgemtls_host::pki::expand_tilde(&ca)),
                ..UpstreamTrust::for_hosts(Vec::new())
            });
        }
        for upstream in upstreams.iter().filter(|u| u.is_weakened()) {
            let what = if upstream.verify { "check_hostname = false" } else { "verify = false" };
            eprintln!("warning: upstreams ({}): {what} weakens upstream verification", upstream.hosts.join(", "));
        }
        let trust = std::sync::Arc::new(edgemtls_host::upstream::TrustProfiles::new(&upstreams)?);
        // An id works as well as a name; a missing store is a clear error, not a new store.
        let name = match context.open_existing()?.find(&reference) {
            Ok(record) => record.name,
            Err(_) => reference,
        };
        let resolver = edgemtls_host::resolve::Resolver::open(context.store, env, trust)?;
        let identity = resolver.resolve(&name).with_context(|| format!("cannot use certificate '{name}' in {env}"))?;
        let runtime = tokio::runtime::Runtime::new()?;
        let report = runtime.block_on(edgemtls_host::upstream::probe(&identity, &uri));
        if json {
            say!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let show = |label: &str, value: Option<String>| {
                if let Some(value) = value {
                    say!("{label:<16}{value}");
                }
            };
            say!("{:<16}{}", "certificate:", name);
            say!("{:<16}{}", "url:", report.url);
            show("connect:", report.connect_ms.map(|t| format!("{t} ms")));
            show("handshake:", report.handshake_ms.map(|t| format!("{t} ms ({})", report.tls_version.clone().unwrap_or_default())));
            show("cipher suite:", report.cipher_suite.clone());
            show("server subject:", report.server_subject.as_deref().map(printable));
            show("server issuer:", report.server_issuer.as_deref().map(printable));
            show("server expires:", report.server_not_after.clone());
            show("status:", report.status.map(|s| s.to_string()));
            show("total:", report.total_ms.map(|t| format!("{t} ms")));
            show("error:", report.error.as_deref().map(printable));
            show("reason:", report.reason.clone());
        }
        Ok(if report.error.is_none() && report.status.is_some_and(|s| s < 400) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }
}
