//! `edgemtls cert`: create, inspect and manage the named client certificates.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use edgemtls_host::pki::{ExpiryStatus, ImportRequest, load_identity, rfc3339, validate_client_identity};
use edgemtls_host::store::{CertificateRecord, Deployment, NewCertificate, Store, validate_name};
use edgemtls_host::{Environment, parse_environments};
use time::OffsetDateTime;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Imports a client certificate and its key under a name.
    ///
    /// Accepts PEM (chain and key in separate files, or both in --cert), DER, PKCS#12 / PFX
    /// (password from --password-env) and PKCS#7 .p7b chains with a separate --key.
    Create {
        /// The name handlers use (a JavaScript identifier, at most 64 characters).
        #[arg(long)]
        name: String,
        /// The certificate file (PEM, DER, .p12/.pfx or .p7b).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The private key file, unless --cert carries it.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The environment variable that holds the PKCS#12 password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// An environment the certificate may be used in; repeatable.
        #[arg(long = "env", visible_alias = "environment-type", value_name = "ENV", required = true)]
        envs: Vec<String>,
    },
    /// Lists certificates.
    List {
        /// Only certificates usable in this environment.
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one certificate.
    Show {
        /// Name or id.
        reference: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replaces the environments of a certificate.
    ///
    /// Refused when a running deployment uses the certificate in an environment the new list
    /// leaves out, unless --force.
    Update {
        /// Name or id.
        reference: String,
        /// The new environments; repeatable.
        #[arg(long = "env", visible_alias = "environment-type", value_name = "ENV", required = true)]
        envs: Vec<String>,
        /// Change it even if a running deployment would lose the certificate.
        #[arg(long)]
        force: bool,
    },
    /// Disables a certificate: requests naming it are refused.
    ///
    /// Refused while a running deployment's config uses it (switch the config and run
    /// `edgemtls reload` first), unless --force.
    Disable {
        /// Name or id.
        reference: String,
        /// Disable it even if a running deployment uses it (its requests will fail).
        #[arg(long)]
        force: bool,
    },
    /// Enables a disabled certificate.
    Enable {
        /// Name or id.
        reference: String,
    },
    /// Deletes a disabled certificate.
    Delete {
        /// Name or id.
        reference: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Reports expiry and damaged records; exits 0 when all enabled certificates are valid,
    /// 1 on a warning, 2 when one is critical, expired or cannot be unsealed.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Makes a real mTLS request with a certificate and reports the handshake, the server's
    /// certificate, the status code and timings: the check before switching to it.
    Test {
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
    },
}

fn open(store_dir: &Path) -> anyhow::Result<Store> {
    Store::open(store_dir).with_context(|| format!("opening the store in '{}'", store_dir.display()))
}

/// Opens an existing store; commands that only read or change records never create one.
fn open_existing(store_dir: &Path) -> anyhow::Result<Store> {
    match Store::open_existing(store_dir) {
        Err(error @ edgemtls_host::store::StoreError::NoStore { .. }) => Err(error.into()),
        other => other.with_context(|| format!("opening the store in '{}'", store_dir.display())),
    }
}

/// All records, or none when there is no store yet.
fn list_records(store_dir: &Path) -> anyhow::Result<Vec<CertificateRecord>> {
    match Store::open_existing(store_dir) {
        Err(edgemtls_host::store::StoreError::NoStore { .. }) => Ok(Vec::new()),
        other => Ok(other.with_context(|| format!("opening the store in '{}'", store_dir.display()))?.list()?),
    }
}

impl CertCommand {
    pub fn execute(self, store_dir: &Path) -> anyhow::Result<ExitCode> {
        let now = OffsetDateTime::now_utc();
        match self {
            CertCommand::Create { name, cert, key, password_env, envs } => {
                create(store_dir, now, name, &cert, key.as_deref(), password_env.as_deref(), &envs)
            }
            CertCommand::List { env, json } => {
                let filter: Option<Environment> = env.as_deref().map(str::parse).transpose()?;
                let records: Vec<_> =
                    list_records(store_dir)?.into_iter().filter(|r| filter.is_none_or(|e| r.allows(e))).collect();
                let deployments = live_deployments(store_dir);
                if json {
                    let summaries: Vec<_> = records.iter().map(|r| with_usage(r, now, &deployments)).collect();
                    say!("{}", serde_json::to_string_pretty(&summaries)?);
                } else {
                    print_table(&records, now, &deployments);
                }
                Ok(ExitCode::SUCCESS)
            }
            CertCommand::Show { reference, json } => {
                let store = open_existing(store_dir)?;
                let record = store.find(&reference)?;
                let deployments = store.live_deployments()?;
                if json {
                    say!("{}", serde_json::to_string_pretty(&with_usage(&record, now, &deployments))?);
                } else {
                    print_details(&record, now, &deployments);
                }
                Ok(ExitCode::SUCCESS)
            }
            CertCommand::Update { reference, envs, force } => {
                let environments = parse_environments(&envs)?;
                let mut store = open_existing(store_dir)?;
                let record = store.rescope(&reference, &environments, force)?;
                if force {
                    tracing::warn!(certificate = %record.name, "scope changed with --force; deployments using it elsewhere lose it");
                }
                say!("certificate '{}' ({}) is now scoped to {}", record.name, record.id, env_list(&record));
                Ok(ExitCode::SUCCESS)
            }
            CertCommand::Disable { reference, force } => disable(store_dir, &reference, force),
            CertCommand::Enable { reference } => enable(store_dir, &reference),
            CertCommand::Delete { reference, yes } => {
                let mut store = open_existing(store_dir)?;
                let record = store.deletable(&reference)?;
                if !yes && !confirm(&format!("Delete certificate '{}' ({})?", record.name, record.id))? {
                    anyhow::bail!("not deleted");
                }
                let record = store.delete(&record.id)?;
                say!("deleted certificate '{}' ({})", record.name, record.id);
                Ok(ExitCode::SUCCESS)
            }
            CertCommand::Status { json } => status(store_dir, now, json),
            CertCommand::Test { reference, url, env, config, ca, json } => {
                test(store_dir, &reference, &url, env, config.as_deref(), ca.as_deref(), json)
            }
        }
    }
}

fn create(
    store_dir: &Path,
    now: OffsetDateTime,
    name: String,
    cert: &Path,
    key: Option<&Path>,
    password_env: Option<&str>,
    envs: &[String],
) -> anyhow::Result<ExitCode> {
    // Everything that can be checked without the store is checked first, so a bad
    // input never touches it.
    validate_name(&name)?;
    let environments = parse_environments(envs)?;
    let password = match password_env {
        Some(var) => Some(
            std::env::var(var).map_err(|_| anyhow::anyhow!("--password-env names '{var}', which is not set"))?,
        ),
        None => None,
    };
    let identity = load_identity(ImportRequest { cert_path: cert, key_path: key, password: password.as_deref() })?;
    for warning in &identity.warnings {
        eprintln!("warning: {warning}");
    }
    let metadata = validate_client_identity(&identity, now)?;

    let mut store = open(store_dir)?;
    let record = store.create(NewCertificate { name, environments, identity, metadata })?;
    let m = &record.metadata;
    say!(
        "created certificate '{}' ({}) for {}\n  subject: {}\n  expires: {} ({}, {} days left)",
        record.name,
        record.id,
        env_list(&record),
        printable(&m.subject),
        rfc3339(m.not_after),
        m.expiry_status(now),
        m.days_left(now)
    );
    Ok(ExitCode::SUCCESS)
}

fn test(
    store_dir: &Path,
    reference: &str,
    url: &str,
    env: Environment,
    config: Option<&Path>,
    ca: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use edgemtls_host::config::{Config, UpstreamTrust};
    let uri: http::Uri = url.parse().with_context(|| format!("invalid URL '{url}'"))?;
    let authority = edgemtls_host::upstream::Authority::of(&uri)
        .ok_or_else(|| anyhow::anyhow!("the URL '{url}' has no host"))?
        .to_string();
    let mut upstreams = match config {
        Some(path) => Config::load(path)?.upstreams,
        None => Vec::new(),
    };
    if let Some(ca) = ca {
        // The explicit CA replaces any config entry for this host.
        upstreams.retain(|u| !u.hosts.contains(&authority));
        upstreams.push(UpstreamTrust {
            hosts: vec![authority.clone()],
            ca_bundle: Some(edgemtls_host::pki::expand_tilde(ca)),
            verify: true,
            check_hostname: true,
            crl: Vec::new(),
            pin_spki_sha256: Vec::new(),
        });
    }
    for upstream in upstreams.iter().filter(|u| u.is_weakened()) {
        let what = if upstream.verify { "check_hostname = false" } else { "verify = false" };
        eprintln!("warning: upstreams ({}): {what} weakens upstream verification", upstream.hosts.join(", "));
    }
    let trust = std::sync::Arc::new(edgemtls_host::upstream::TrustProfiles::new(&upstreams)?);
    // An id works as well as a name; a missing store is a clear error, not a new store.
    let name = match open_existing(store_dir)?.find(reference) {
        Ok(record) => record.name,
        Err(_) => reference.to_string(),
    };
    let resolver = edgemtls_host::resolve::Resolver::open(store_dir, env, trust)?;
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

fn disable(store_dir: &Path, reference: &str, force: bool) -> anyhow::Result<ExitCode> {
    let mut store = open_existing(store_dir)?;
    let record = store.disable(reference, force)?;
    if force {
        tracing::warn!(certificate = %record.name, "disabled with --force; deployments still using it will fail their requests");
    }
    say!("certificate '{}' ({}) disabled", record.name, record.id);
    Ok(ExitCode::SUCCESS)
}

fn enable(store_dir: &Path, reference: &str) -> anyhow::Result<ExitCode> {
    let mut store = open_existing(store_dir)?;
    let record = store.set_enabled(reference, true)?;
    say!("certificate '{}' ({}) enabled", record.name, record.id);
    Ok(ExitCode::SUCCESS)
}

fn status(store_dir: &Path, now: OffsetDateTime, json: bool) -> anyhow::Result<ExitCode> {
    let store = match Store::open_existing(store_dir) {
        Err(edgemtls_host::store::StoreError::NoStore { .. }) => None,
        other => Some(other.with_context(|| format!("opening the store in '{}'", store_dir.display()))?),
    };
    let records = match &store {
        Some(store) => store.list()?,
        None => Vec::new(),
    };
    // A record whose key does not unseal cannot be served: `serve` skips it and fails only the
    // routes that name it, so this is where an operator learns of it before a request does.
    let problems: Vec<Option<String>> = records
        .iter()
        .map(|r| store.as_ref().and_then(|s| s.private_key(r).err()).map(|e| e.to_string()))
        .collect();
    let damaged_enabled = records.iter().zip(&problems).any(|(r, p)| r.enabled && p.is_some());
    // Disabled certificates are reported but cannot be served, so they do not set the exit code.
    let worst = records
        .iter()
        .filter(|r| r.enabled)
        .map(|r| r.metadata.expiry_status(now))
        .max()
        .unwrap_or(ExpiryStatus::Valid);
    if json {
        let items: Vec<_> = records
            .iter()
            .zip(&problems)
            .map(|(r, problem)| {
                serde_json::json!({
                    "id": r.id,
                    "name": r.name,
                    "enabled": r.enabled,
                    "damaged": problem.is_some(),
                    "problem": problem,
                    "environments": r.environments.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                    "not_after": rfc3339(r.metadata.not_after),
                    "days_left": r.metadata.days_left(now),
                    "expiry_status": r.metadata.expiry_status(now),
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&serde_json::json!({ "worst": worst, "certificates": items }))?);
    } else if records.is_empty() {
        say!("no certificates");
    } else {
        let rows: Vec<Vec<String>> = records
            .iter()
            .zip(&problems)
            .map(|(r, problem)| {
                let m = &r.metadata;
                let state = match (problem, r.enabled) {
                    (Some(_), _) => "damaged",
                    (None, true) => "enabled",
                    (None, false) => "disabled",
                };
                vec![
                    r.name.clone(),
                    state.into(),
                    rfc3339(m.not_after),
                    m.days_left(now).to_string(),
                    m.expiry_status(now).to_string(),
                ]
            })
            .collect();
        print_rows(&["NAME", "STATE", "NOT AFTER", "DAYS LEFT", "EXPIRY"], &rows);
        say!("worst: {worst}");
        for (record, problem) in records.iter().zip(&problems) {
            if let Some(problem) = problem {
                say!("{}: {}", printable(&record.name), printable(problem));
            }
        }
    }
    if damaged_enabled {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::from(match worst {
        ExpiryStatus::Valid => 0,
        ExpiryStatus::Warning => 1,
        ExpiryStatus::Critical | ExpiryStatus::Expired => 2,
    }))
}

/// Live deployments, or none when there is no store.
fn live_deployments(store_dir: &Path) -> Vec<Deployment> {
    Store::open_existing(store_dir).and_then(|s| s.live_deployments()).unwrap_or_default()
}

fn users<'a>(record: &CertificateRecord, deployments: &'a [Deployment]) -> Vec<&'a Deployment> {
    deployments.iter().filter(|d| d.certificates.contains(&record.name)).collect()
}

/// The JSON of a record plus `used_by`: the live deployments whose config references it.
fn with_usage(record: &CertificateRecord, now: OffsetDateTime, deployments: &[Deployment]) -> serde_json::Value {
    let mut value = serde_json::to_value(record.summary(now)).unwrap_or_default();
    let used_by: Vec<_> = users(record, deployments)
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "deployment": d.id, "environment": d.environment.as_str(), "config": d.config_path,
                "host": d.hostname, "pid": d.pid, "listen": d.listen,
            })
        })
        .collect();
    if let Some(object) = value.as_object_mut() {
        object.insert("used_by".into(), serde_json::Value::Array(used_by));
    }
    value
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("refusing to delete without confirmation: standard input is not a terminal; pass --yes");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

fn env_list(record: &CertificateRecord) -> String {
    record.environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
}

fn print_table(records: &[CertificateRecord], now: OffsetDateTime, deployments: &[Deployment]) {
    if records.is_empty() {
        say!("no certificates (add one with: edgemtls cert create --name NAME --cert FILE --key FILE --env development)");
        return;
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let m = &r.metadata;
            vec![
                r.name.clone(),
                r.id.clone(),
                env_list(r),
                if r.enabled { "enabled" } else { "disabled" }.into(),
                format!("{} ({}d)", m.expiry_status(now), m.days_left(now)),
                m.subject_cn.clone().unwrap_or_default(),
                match users(r, deployments).len() {
                    0 => "-".to_string(),
                    n => format!("{n} deployment(s)"),
                },
            ]
        })
        .collect();
    print_rows(&["NAME", "ID", "ENVIRONMENTS", "STATUS", "EXPIRY", "SUBJECT CN", "IN USE"], &rows);
}

/// `text` with control characters (escape sequences, newlines) shown as escapes: names and
/// subjects come from certificates, and must not forge lines or recolour a terminal.
fn printable(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|cell| printable(cell)).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        say!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn print_details(record: &CertificateRecord, now: OffsetDateTime, deployments: &[Deployment]) {
    let m = &record.metadata;
    let sans = if m.sans.is_empty() { "-".to_string() } else { printable(&m.sans.join(", ")) };
    say!("name:         {}", record.name);
    say!("id:           {}", record.id);
    say!("environments: {}", env_list(record));
    say!("enabled:      {}", record.enabled);
    say!("subject:      {}", printable(&m.subject));
    say!("issuer:       {}", printable(&m.issuer));
    say!("serial:       {}", m.serial);
    say!("SANs:         {sans}");
    say!("key:          {} ({} bits)", m.key_type, m.key_bits);
    say!("not before:   {}", rfc3339(m.not_before));
    say!("not after:    {}", rfc3339(m.not_after));
    say!("expiry:       {} ({} days left)", m.expiry_status(now), m.days_left(now));
    say!("chain:        {} certificate(s)", record.chain.len());
    say!("spki sha256:  {}", m.spki_sha256);
    say!("fingerprint:  {}", m.fingerprint_sha256);
    say!("created:      {}", rfc3339(record.created_at));
    say!("updated:      {}", rfc3339(record.updated_at));
    let used_by = users(record, deployments);
    if used_by.is_empty() {
        say!("used by:      -");
    }
    for (i, d) in used_by.iter().enumerate() {
        say!("{}{}", if i == 0 { "used by:      " } else { "              " }, d.describe());
    }
}
