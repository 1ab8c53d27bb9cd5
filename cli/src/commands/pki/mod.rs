//! `edgemtls pki`: a development CA, so trying mTLS needs no openssl.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use edgemtls_host::pki::{DevCa, IssueOptions};

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Creates a development CA (ca.pem, ca.key) in DIR.
    Init {
        /// The directory to write the CA into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "edgemtls development CA")]
        cn: String,
        /// Validity in days (1 to 36500).
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Overwrite an existing CA in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Issues a client certificate (or a server certificate with --server) from a dev CA.
    Issue {
        /// The CA directory made by `pki init`.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The subject common name; also names the output files (<CN>.pem, <CN>.key).
        #[arg(long)]
        cn: String,
        /// The directory to write the certificate and key into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Issue a server certificate (serverAuth) instead of a client certificate (clientAuth).
        #[arg(long)]
        server: bool,
        /// A subject alternative name (DNS name or IP address); repeatable.
        #[arg(long = "san", value_name = "HOST")]
        sans: Vec<String>,
        /// Validity in days (1 to 36500).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Overwrite existing files for this common name.
        #[arg(long)]
        force: bool,
    },
}

impl PkiCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            PkiCommand::Init { out, cn, days, force } => {
                let out = edgemtls_host::pki::expand_tilde(&out);
                if out.join("ca.key").exists() && !force {
                    anyhow::bail!("'{}' already holds a CA (ca.key); pass --force to replace it", out.display());
                }
                let ca = DevCa::generate(&cn, days)?;
                let (cert, key) = ca.write_to(&out)?;
                say!("created CA '{cn}'\n  certificate: {}\n  key:         {} (mode 0600)", cert.display(), key.display());
            }
            PkiCommand::Issue { ca, cn, out, server, sans, days, force } => {
                let ca_dir = edgemtls_host::pki::expand_tilde(&ca);
                let ca = DevCa::load(&ca_dir).with_context(|| format!("loading the CA in '{}'", ca_dir.display()))?;
                let options = IssueOptions { common_name: cn.clone(), server, sans, days };
                let out = edgemtls_host::pki::expand_tilde(&out);
                let existing = out.join(format!("{}.key", edgemtls_host::pki::file_stem(&cn)));
                if existing.exists() && !force {
                    anyhow::bail!("'{}' already exists; pass --force to replace it", existing.display());
                }
                let files = ca.issue_to(&options, &out)?;
                let kind = if server { "server" } else { "client" };
                say!(
                    "issued {kind} certificate '{cn}'\n  certificate: {}\n  key:         {} (mode 0600)",
                    files.cert.display(),
                    files.key.display()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
