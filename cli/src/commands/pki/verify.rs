//! `edgemtls pki verify`: checks certificates against a CA, as `openssl verify -CAfile`
//! does, and says why one fails in plain words.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgemtls_host::pki::{Purpose, VerifyTrust, load_certificates, verify};

#[derive(clap::Args)]
pub struct VerifyCommand {
    /// The trusted CA: a certificate file (PEM or DER) or a directory of them, such as one
    /// made by `pki init` (its key is not read). Repeatable.
    #[arg(long, value_name = "DIR|FILE", required = true)]
    ca: Vec<PathBuf>,
    /// Intermediate CA certificates that may complete a chain (not trusted by themselves).
    /// Certificates that come after the leaf in a CERT file are used the same way. Repeatable.
    #[arg(long, value_name = "FILE")]
    untrusted: Vec<PathBuf>,
    /// A CRL (PEM or DER); once given, a certificate whose issuer has no CRL here fails, as
    /// with `openssl verify -crl_check`. Repeatable.
    #[arg(long, value_name = "FILE")]
    crl: Vec<PathBuf>,
    /// What the certificates must be good for: TLS `client` or `server` authentication, or
    /// `any` (either).
    #[arg(long, value_enum, default_value = "any")]
    purpose: PurposeArg,
    /// The environment variable holding the password of PKCS#12 files.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The certificates to check: PEM, DER, PKCS#12 (.p12/.pfx) or PKCS#7 (.p7b).
    #[arg(value_name = "CERT", required = true)]
    certs: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PurposeArg {
    Client,
    Server,
    Any,
}

impl VerifyCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let password = crate::commands::passphrase::from_env(self.password_env.as_deref())?;
        let mut trust = VerifyTrust::default();
        let expand = edgemtls_host::pki::expand_tilde;
        for path in &self.ca {
            trust.add_cas(&expand(path)).map_err(|reason| anyhow::anyhow!("--ca {reason}"))?;
        }
        for path in &self.untrusted {
            trust.add_intermediates(&expand(path)).map_err(|reason| anyhow::anyhow!("--untrusted: {reason}"))?;
        }
        for path in &self.crl {
            trust.add_crls(&expand(path)).map_err(|reason| anyhow::anyhow!("--crl {reason}"))?;
        }
        let purpose = match self.purpose {
            PurposeArg::Client => Purpose::Client,
            PurposeArg::Server => Purpose::Server,
            PurposeArg::Any => Purpose::Any,
        };
        let now = rustls_pki_types::UnixTime::now();
        let mut failed = 0;
        for path in &self.certs {
            // A file that cannot be read is one failure among the others, not the end of the run.
            let verdict = load_certificates(path, password.as_deref()).map_err(|error| crate::describe(&error.into())).and_then(|certs| {
                let (leaf, chain) = certs.split_first().context("no certificate").map_err(|e| e.to_string())?;
                verify(leaf, chain, &trust, purpose, now).map_err(|problem| problem.to_string())
            });
            match verdict {
                Ok(()) => say!("{}: OK", path.display()),
                Err(reason) => {
                    failed += 1;
                    say!("{}: FAILED: {reason}", path.display());
                }
            }
        }
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }
}
