//! `edgemtls cert update | disable | enable | delete`: the commands that change a record.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use edgemtls_host::parse_environments;

use super::Context;
use super::output::env_list;

#[derive(Args)]
pub struct UpdateCommand {
    /// Name or id.
    reference: String,
    /// The new environments; repeatable.
    #[arg(long = "env", visible_alias = "environment-type", value_name = "ENV", required = true)]
    envs: Vec<String>,
    /// Change it even if a running deployment would lose the certificate.
    #[arg(long)]
    force: bool,
}

impl UpdateCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let environments = parse_environments(&self.envs)?;
        let mut store = context.open_existing()?;
        let record = store.rescope(&self.reference, &environments, self.force)?;
        if self.force {
            tracing::warn!(certificate = %record.name, "scope changed with --force; deployments using it elsewhere lose it");
        }
        say!("certificate '{}' ({}) is now scoped to {}", record.name, record.id, env_list(&record));
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct DisableCommand {
    /// Name or id.
    reference: String,
    /// Disable it even if a running deployment uses it (its requests will fail).
    #[arg(long)]
    force: bool,
}

impl DisableCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let mut store = context.open_existing()?;
        let record = store.disable(&self.reference, self.force)?;
        if self.force {
            tracing::warn!(certificate = %record.name, "disabled with --force; deployments still using it will fail their requests");
        }
        say!("certificate '{}' ({}) disabled", record.name, record.id);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct EnableCommand {
    /// Name or id.
    reference: String,
}

impl EnableCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let mut store = context.open_existing()?;
        let record = store.enable(&self.reference)?;
        say!("certificate '{}' ({}) enabled", record.name, record.id);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct DeleteCommand {
    /// Name or id.
    reference: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

impl DeleteCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let mut store = context.open_existing()?;
        // The store's own refusal (still enabled) comes before the question.
        let record = store.deletable(&self.reference)?;
        if !self.yes && !confirm(&format!("Delete certificate '{}' ({})?", record.name, record.id))? {
            anyhow::bail!("not deleted");
        }
        let record = store.delete(&record.id)?;
        say!("deleted certificate '{}' ({})", record.name, record.id);
        Ok(ExitCode::SUCCESS)
    }
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
