//! `edgemtls cert list | show | status`: the commands that report on records.

use std::process::ExitCode;

use clap::Args;
use edgemtls_host::Environment;
use edgemtls_host::pki::{ExpiryStatus, chain_problem, rfc3339};
use edgemtls_host::resolve::ResolveError;
use edgemtls_host::revocation::RevocationStatus;

use super::Context;
use super::output::{key_place, print_details, print_rows, print_table, printable, revocation, with_usage};

#[derive(Args)]
pub struct ListCommand {
    /// Only certificates usable in this environment.
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl ListCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let now = context.now;
        let filter: Option<Environment> = self.env.as_deref().map(str::parse).transpose()?;
        let store = context.open_if_any()?;
        let records = match &store {
            Some(store) => store.list()?,
            None => Vec::new(),
        };
        let records: Vec<_> = records.into_iter().filter(|r| filter.is_none_or(|e| r.allows(e))).collect();
        // Usage is extra information: a list is still shown when it cannot be read.
        let deployments = store.and_then(|s| s.live_deployments().ok()).unwrap_or_default();
        if self.json {
            let summaries: Vec<_> = records.iter().map(|r| with_usage(r, now, &deployments)).collect();
            say!("{}", serde_json::to_string_pretty(&summaries)?);
        } else {
            print_table(&records, now, &deployments);
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct ShowCommand {
    /// Name or id.
    reference: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Do not ask the issuer's CRL whether the certificate is revoked.
    #[arg(long)]
    offline: bool,
}

impl ShowCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let store = context.open_existing()?;
        let record = store.find(&self.reference)?;
        let deployments = store.live_deployments()?;
        let revocation = revocation(std::slice::from_ref(&record), self.offline).pop().flatten();
        if self.json {
            let mut value = with_usage(&record, context.now, &deployments);
            if let Some(object) = value.as_object_mut() {
                object.insert("revocation".into(), serde_json::to_value(&revocation)?);
            }
            say!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print_details(&record, context.now, &deployments, revocation.as_ref());
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct StatusCommand {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Do not ask issuers' CRLs whether certificates are revoked.
    #[arg(long)]
    offline: bool,
}

impl StatusCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let now = context.now;
        let store = context.open_if_any()?;
        let records = match &store {
            Some(store) => store.list()?,
            None => Vec::new(),
        };
        // A record whose key does not unseal, or whose chain breaks a limit, cannot be served:
        // `serve` skips it and fails only the routes that name it, so this is where an operator
        // learns of it before a request does. The words are the ones `serve` logs.
        let problems: Vec<Option<String>> = records
            .iter()
            .map(|r| match chain_problem(&r.chain) {
                Some(problem) => Some(ResolveError::BadChain { name: r.name.clone(), problem }.to_string()),
                None => store.as_ref().and_then(|s| s.private_key(r).err()).map(|e| e.to_string()),
            })
            .collect();
        let damaged_enabled = records.iter().zip(&problems).any(|(r, p)| r.enabled && p.is_some());
        // A revoked certificate is refused by any upstream that checks: as bad as expired.
        let revocations = revocation(&records, self.offline);
        let revoked_enabled =
            records.iter().zip(&revocations).any(|(r, s)| r.enabled && matches!(s, Some(RevocationStatus::Revoked { .. })));
        // Disabled certificates are reported but cannot be served, so they do not set the exit code.
        let worst = records.iter().filter(|r| r.enabled).map(|r| r.metadata.expiry_status(now)).max().unwrap_or(ExpiryStatus::Valid);
        if self.json {
            let items: Vec<_> = records
                .iter()
                .zip(&problems)
                .zip(&revocations)
                .map(|((r, problem), revocation)| {
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
                        "revocation": revocation,
                        "key_location": r.key_location.shown(),
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
                .zip(&revocations)
                .map(|((r, problem), revocation)| {
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
                        revocation.as_ref().map_or("not checked", |s| s.word()).into(),
                        key_place(r).into(),
                    ]
                })
                .collect();
            print_rows(&["NAME", "STATE", "NOT AFTER", "DAYS LEFT", "EXPIRY", "REVOCATION", "KEY"], &rows);
            say!("worst: {worst}");
            for (record, problem) in records.iter().zip(&problems) {
                if let Some(problem) = problem {
                    say!("{}: {}", printable(&record.name), printable(problem));
                }
            }
            for (record, status) in records.iter().zip(&revocations) {
                if let Some(status @ (RevocationStatus::Revoked { .. } | RevocationStatus::Unknown { .. })) = status {
                    let detail = status.detail().unwrap_or_default();
                    say!("{}: {}", printable(&record.name), printable(&detail));
                }
            }
        }
        if damaged_enabled || revoked_enabled {
            return Ok(ExitCode::from(2));
        }
        Ok(ExitCode::from(match worst {
            ExpiryStatus::Valid => 0,
            ExpiryStatus::Warning => 1,
            ExpiryStatus::Critical | ExpiryStatus::Expired => 2,
        }))
    }
}
