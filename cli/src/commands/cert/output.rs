//! What the cert commands print: tables, details, the JSON of a record with its users, and
//! escaping of text that comes from certificates.

use edgemtls_host::pki::rfc3339;
use edgemtls_host::revocation::{RevocationStatus, check_stored};
use edgemtls_host::store::{CertificateRecord, Deployment, KeyLocation};
use time::OffsetDateTime;

/// How long one issuer gets to answer `cert status` / `cert show`.
const REVOCATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What each record's issuer says about it (its OCSP responder or CRL distribution points,
/// a few records at a time), or `None` for each when `offline`.
pub(super) fn revocation(records: &[CertificateRecord], offline: bool) -> Vec<Option<RevocationStatus>> {
    if offline {
        return vec![None; records.len()];
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let detail = format!("cannot start the network client: {error}");
            return vec![Some(RevocationStatus::Unknown { detail }); records.len()];
        }
    };
    runtime.block_on(async {
        // A few at a time: a store of thousands must not open thousands of connections.
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut checks = tokio::task::JoinSet::new();
        for (index, record) in records.iter().enumerate() {
            let (chain, permits) = (record.chain.clone(), permits.clone());
            checks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, check_stored(&chain, REVOCATION_TIMEOUT).await)
            });
        }
        let unanswered = RevocationStatus::Unknown { detail: "the check did not finish".into() };
        let mut statuses = vec![Some(unanswered); records.len()];
        while let Some(Ok((index, status))) = checks.join_next().await {
            statuses[index] = Some(status);
        }
        statuses
    })
}

fn users<'a>(record: &CertificateRecord, deployments: &'a [Deployment]) -> Vec<&'a Deployment> {
    deployments.iter().filter(|d| d.certificates.contains(&record.name)).collect()
}

/// The JSON of a record plus `used_by`: the live deployments whose config references it.
pub(super) fn with_usage(record: &CertificateRecord, now: OffsetDateTime, deployments: &[Deployment]) -> serde_json::Value {
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

pub(super) fn env_list(record: &CertificateRecord) -> String {
    record.environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
}

pub(super) fn print_table(records: &[CertificateRecord], now: OffsetDateTime, deployments: &[Deployment]) {
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
                key_place(r).into(),
                match users(r, deployments).len() {
                    0 => "-".to_string(),
                    n => format!("{n} deployment(s)"),
                },
            ]
        })
        .collect();
    print_rows(&["NAME", "ID", "ENVIRONMENTS", "STATUS", "EXPIRY", "SUBJECT CN", "KEY", "IN USE"], &rows);
}

/// Where a record's key lives, in one word for tables.
pub(super) fn key_place(record: &CertificateRecord) -> &'static str {
    match record.key_location {
        KeyLocation::Store => "store",
        KeyLocation::Token(_) => "token",
    }
}

/// `text` with control characters (escape sequences, newlines) shown as escapes: names and
/// subjects come from certificates, and must not forge lines or recolour a terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

pub(super) fn print_rows(header: &[&str], rows: &[Vec<String>]) {
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

pub(super) fn print_details(
    record: &CertificateRecord,
    now: OffsetDateTime,
    deployments: &[Deployment],
    revocation: Option<&RevocationStatus>,
) {
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
    match &record.key_location {
        KeyLocation::Store => say!("key location: sealed in the store"),
        KeyLocation::Token(uri) => say!("key location: in a PKCS#11 token, {}", printable(uri)),
    }
    say!("not before:   {}", rfc3339(m.not_before));
    say!("not after:    {}", rfc3339(m.not_after));
    say!("expiry:       {} ({} days left)", m.expiry_status(now), m.days_left(now));
    say!("chain:        {} certificate(s)", record.chain.len());
    match revocation {
        None => say!("revocation:   not checked (--offline)"),
        Some(RevocationStatus::NotPublished) => say!("revocation:   none published (the certificate names no OCSP responder or CRL)"),
        Some(status) => say!("revocation:   {}: {}", status.word(), printable(&status.detail().unwrap_or_default())),
    }
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
