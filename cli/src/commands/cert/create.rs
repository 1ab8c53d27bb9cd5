//! `edgemtls cert create`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use edgemtls_host::parse_environments;
use edgemtls_host::pki::{ImportRequest, load_identity, rfc3339, validate_client_identity};
use edgemtls_host::store::{NewCertificate, validate_name};

use super::Context;
use super::output::{env_list, printable};

#[derive(Args)]
pub struct CreateCommand {
    /// The name handlers use (a JavaScript identifier, at most 64 characters).
    #[arg(long)]
    name: String,
    /// The certificate file (PEM, DER, .p12/.pfx or .p7b).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The private key file, unless --cert carries it.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The environment variable that holds the password of a PKCS#12 file or an encrypted key.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// An environment the certificate may be used in; repeatable.
    #[arg(long = "env", visible_alias = "environment-type", value_name = "ENV", required = true)]
    envs: Vec<String>,
}

impl CreateCommand {
    pub fn execute(self, context: &Context) -> anyhow::Result<ExitCode> {
        let now = context.now;
        // Everything that can be checked without the store is checked first, so a bad
        // input never touches it.
        validate_name(&self.name)?;
        let environments = parse_environments(&self.envs)?;
        let password = crate::commands::passphrase::from_env(self.password_env.as_deref())?;
        let identity =
            load_identity(ImportRequest { cert_path: &self.cert, key_path: self.key.as_deref(), password: password.as_deref() })?;
        for warning in &identity.warnings {
            eprintln!("warning: {warning}");
        }
        let metadata = validate_client_identity(&identity, now)?;

        let mut store = context.open()?;
        let record = store.create(NewCertificate { name: self.name, environments, identity, metadata })?;
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
}
