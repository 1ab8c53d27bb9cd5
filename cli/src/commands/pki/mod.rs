//! `edgemtls pki`: a development CA, so trying mTLS needs no openssl, and `pki verify` to
//! check certificates against any CA.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use edgemtls_host::pkcs11::{CaKeyOrigin, DEFAULT_MODULE, DEFAULT_PIN_ENV, KeyUri, TokenSettings};
use edgemtls_host::pki::{CA_KEY_URI_FILE, DevCa, IssueOptions, NewKeyType};

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
        /// Keep the CA key in a PKCS#11 token: the key this URI names
        /// ('pkcs11:token=LABEL;object=KEY-LABEL'), generated there (never extractable) if the
        /// token has none. DIR gets ca.pem and ca.key.uri, no key file.
        #[arg(long, value_name = "URI", conflicts_with = "encrypt")]
        key: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Issues a client certificate (or a server certificate with --server) from a dev CA.
    Issue {
        /// The CA directory made by `pki init` (its ca.pem and ca.key).
        #[arg(long, value_name = "DIR", required_unless_present_all = ["ca_cert", "ca_key"], conflicts_with_all = ["ca_cert", "ca_key"])]
        ca: Option<PathBuf>,
        /// The CA certificate, when its files are named otherwise (ca-cert.pem); with --ca-key.
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA key, when its files are named otherwise (ca-key.pem), or the PKCS#11 URI of a
        /// CA key in a token; with --ca-cert.
        #[arg(long, value_name = "FILE|URI", requires = "ca_cert")]
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
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Checks certificates against a CA (as `openssl verify -CAfile`): prints OK or the
    /// reason for each; exits 0 only when all verify.
    Verify(verify::VerifyCommand),
}

/// The module and PIN variable of a CA key in a token.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The PKCS#11 module (shared library) of the token that holds the CA key.
    #[arg(long, value_name = "PATH", env = "EDGEMTLS_PKCS11_MODULE", default_value = DEFAULT_MODULE)]
    pkcs11_module: PathBuf,
    /// The environment variable that holds the token's user PIN (never the PIN itself).
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pin_env: String,
}

impl TokenArgs {
    fn settings(&self) -> TokenSettings {
        TokenSettings { module: self.pkcs11_module.clone(), pin_env: self.pin_env.clone() }
    }
}

/// The CA key's URI when the key is in a token: `--ca-key pkcs11:…`, or `ca.key.uri` in a
/// `--ca DIR` that has no `ca.key`.
fn token_ca_key(dir: Option<&PathBuf>, key: Option<&PathBuf>) -> anyhow::Result<Option<KeyUri>> {
    if let Some(key) = key.and_then(|k| k.to_str()).filter(|k| KeyUri::is_uri(k)) {
        return Ok(Some(KeyUri::parse(key)?));
    }
    let Some(dir) = dir.map(|d| edgemtls_host::pki::expand_tilde(d)) else { return Ok(None) };
    let uri_file = dir.join(CA_KEY_URI_FILE);
    if dir.join("ca.key").exists() || !uri_file.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&uri_file).with_context(|| format!("reading '{}'", uri_file.display()))?;
    Ok(Some(KeyUri::parse(text.trim()).with_context(|| format!("in '{}'", uri_file.display()))?))
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
            PkiCommand::Init { out, cn, days, force, encrypt, password_env, key_type, key, token } => {
                let out = edgemtls_host::pki::expand_tilde(&out);
                for existing in ["ca.key", CA_KEY_URI_FILE] {
                    if out.join(existing).exists() && !force {
                        anyhow::bail!("'{}' already holds a CA ({existing}); pass --force to replace it", out.display());
                    }
                }
                if let Some(key) = key {
                    let uri = KeyUri::parse(&key)?;
                    let (ca, origin) = DevCa::generate_in_token(&cn, days, key_type, &uri, &token.settings())?;
                    // A file CA replaced by a token CA leaves no key file behind to be used instead.
                    let old_key = out.join("ca.key");
                    let (cert, uri_file) = ca.write_to(&out, None)?;
                    if old_key.exists() {
                        std::fs::remove_file(&old_key).with_context(|| format!("removing the old '{}'", old_key.display()))?;
                    }
                    let how = match origin {
                        CaKeyOrigin::Existing => "the token's existing key",
                        CaKeyOrigin::Generated => "generated in the token now, sensitive and not extractable",
                    };
                    say!(
                        "created CA '{cn}'\n  certificate: {}\n  key:         {uri} ({how})\n  named in:    {}",
                        cert.display(),
                        uri_file.display()
                    );
                    return Ok(ExitCode::SUCCESS);
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
                // A token CA replaced by a file CA: its URI must not outlive it.
                let old_uri = out.join(CA_KEY_URI_FILE);
                if old_uri.exists() {
                    std::fs::remove_file(&old_uri).with_context(|| format!("removing the old '{}'", old_uri.display()))?;
                }
                let protection = if encrypt { "encrypted, mode 0600" } else { "mode 0600" };
                say!("created CA '{cn}'\n  certificate: {}\n  key:         {} ({protection})", cert.display(), key.display());
            }
            PkiCommand::Issue {
                ca,
                ca_cert,
                ca_key,
                cn,
                out,
                server,
                sans,
                days,
                force,
                password_env,
                key_type,
                crl_url,
                ocsp_url,
                token,
            } => {
                let ca = match token_ca_key(ca.as_ref(), ca_key.as_ref())? {
                    Some(uri) => {
                        let cert_path = match (&ca_cert, &ca) {
                            (Some(cert), _) => edgemtls_host::pki::expand_tilde(cert),
                            (None, Some(dir)) => edgemtls_host::pki::expand_tilde(dir).join("ca.pem"),
                            (None, None) => anyhow::bail!("name the CA: --ca DIR, or --ca-cert FILE with --ca-key"),
                        };
                        DevCa::load_with_token_key(&cert_path, &uri, &token.settings())
                            .with_context(|| format!("loading the CA from '{}' and the {}", cert_path.display(), uri.key_shown()))?
                    }
                    None => {
                        let (cert_path, key_path) = ca_files(ca, ca_cert, ca_key)?;
                        let passphrase = match DevCa::key_file_is_encrypted(&key_path) {
                            true => Some(passphrase::required(password_env.as_deref(), "the CA key's passphrase", false)?),
                            false => None,
                        };
                        DevCa::load_files(&cert_path, &key_path, passphrase.as_deref())
                            .with_context(|| format!("loading the CA from '{}' and '{}'", cert_path.display(), key_path.display()))?
                    }
                };
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
