//! `edgemtls pki`: a development CA, so trying mTLS needs no openssl, and `pki verify` to
//! check certificates against any CA.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use edgemtls_host::pki::{DevCa, IssueOptions, NewKeyType};

mod verify;

use crate::commands::passphrase;

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
        /// Encrypt ca.key (PKCS#8, PBKDF2-SHA256 and AES-256) with a passphrase, read from
        /// the variable --password-env names, or asked for on a terminal.
        #[arg(long)]
        encrypt: bool,
        /// The environment variable that holds the CA key's passphrase.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The CA key's algorithm: p256, p384, ed25519, rsa2048 or rsa3072.
        #[arg(long, default_value = "p256", value_parser = parse_key_type)]
        key_type: NewKeyType,
    },
    /// Issues a client certificate (or a server certificate with --server) from a dev CA.
    Issue {
        /// The CA directory made by `pki init` (its ca.pem and ca.key).
        #[arg(long, value_name = "DIR", required_unless_present_all = ["ca_cert", "ca_key"], conflicts_with_all = ["ca_cert", "ca_key"])]
        ca: Option<PathBuf>,
        /// The CA certificate, when its files are named otherwise (ca-cert.pem); with --ca-key.
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA key, when its files are named otherwise (ca-key.pem); with --ca-cert.
        #[arg(long, value_name = "FILE", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
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
        /// The environment variable that holds the passphrase of an encrypted CA key (else it
        /// is asked for on a terminal).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The new key's algorithm: p256, p384, ed25519, rsa2048 or rsa3072 (some upstreams
        /// still require RSA).
        #[arg(long, default_value = "p256", value_parser = parse_key_type)]
        key_type: NewKeyType,
        /// Name this CRL distribution point (an http URL) in the certificate.
        #[arg(long, value_name = "URL")]
        crl_url: Option<String>,
        /// Name this OCSP responder (an http URL) in the certificate.
        #[arg(long, value_name = "URL")]
        ocsp_url: Option<String>,
    },
    /// Checks certificates against a CA (as `openssl verify -CAfile`): prints OK or the
    /// reason for each; exits 0 only when all verify.
    Verify(verify::VerifyCommand),
}

/// The CA's certificate and key files: `ca.pem` and `ca.key` in `--ca DIR` (as `pki init`
/// writes them), or `--ca-cert` and `--ca-key` as given.
fn ca_files(dir: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf)> {
    use edgemtls_host::pki::expand_tilde;
    if let (Some(cert), Some(key)) = (cert, key) {
        return Ok((expand_tilde(&cert), expand_tilde(&key)));
    }
    let Some(dir) = dir else {
        anyhow::bail!("name the CA: --ca DIR (holding ca.pem and ca.key), or --ca-cert FILE and --ca-key FILE");
    };
    let dir = expand_tilde(&dir);
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    // Checked here so the message can name the files --ca expects and the way to pass others,
    // which a plain "cannot read" does not.
    let missing: Vec<&str> =
        [("ca.pem", &cert), ("ca.key", &key)].into_iter().filter(|(_, path)| !path.exists()).map(|(name, _)| name).collect();
    if dir.is_dir() && !missing.is_empty() {
        anyhow::bail!(
            "'{}' has no {}: --ca DIR reads ca.pem and ca.key, the names `pki init` writes; for a CA whose files are named otherwise pass them with --ca-cert FILE --ca-key FILE",
            dir.display(),
            missing.join(" and "),
        );
    }
    Ok((cert, key))
}

fn parse_key_type(text: &str) -> Result<NewKeyType, String> {
    text.parse()
}

impl PkiCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            PkiCommand::Init { out, cn, days, force, encrypt, password_env, key_type } => {
                let out = edgemtls_host::pki::expand_tilde(&out);
                if out.join("ca.key").exists() && !force {
                    anyhow::bail!("'{}' already holds a CA (ca.key); pass --force to replace it", out.display());
                }
                if password_env.is_some() && !encrypt {
                    anyhow::bail!("--password-env is for an encrypted key: add --encrypt, or leave --password-env out");
                }
                let passphrase = match encrypt {
                    true => Some(passphrase::required(password_env.as_deref(), "the passphrase for the new CA key", true)?),
                    false => None,
                };
                let ca = DevCa::generate_with(&cn, days, key_type)?;
                let (cert, key) = ca.write_to(&out, passphrase.as_deref())?;
                let protection = if encrypt { "encrypted, mode 0600" } else { "mode 0600" };
                say!("created CA '{cn}'\n  certificate: {}\n  key:         {} ({protection})", cert.display(), key.display());
            }
            PkiCommand::Issue { ca, ca_cert, ca_key, cn, out, server, sans, days, force, password_env, key_type, crl_url, ocsp_url } => {
                let (cert_path, key_path) = ca_files(ca, ca_cert, ca_key)?;
                let passphrase = match DevCa::key_file_is_encrypted(&key_path) {
                    true => Some(passphrase::required(password_env.as_deref(), "the CA key's passphrase", false)?),
                    false => None,
                };
                let ca = DevCa::load_files(&cert_path, &key_path, passphrase.as_deref())
                    .with_context(|| format!("loading the CA from '{}' and '{}'", cert_path.display(), key_path.display()))?;
                let options = IssueOptions { common_name: cn.clone(), server, sans, days, key_type, crl_url, ocsp_url };
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
            PkiCommand::Verify(command) => return command.execute(),
        }
        Ok(ExitCode::SUCCESS)
    }
}
