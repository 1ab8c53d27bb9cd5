//! `edgemtls cert create`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use edgemtls_host::parse_environments;
use edgemtls_host::pkcs11::{DEFAULT_MODULE, DEFAULT_PIN_ENV, KeyUri, TokenSettings, check_certificate_key};
use edgemtls_host::pki::{ImportRequest, load_certificates, load_identity, rfc3339, validate_client_chain, validate_client_identity};
use edgemtls_host::store::{CertificateRecord, NewCertificate, NewTokenCertificate, validate_name};

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
    /// The private key file, unless --cert carries it; or the PKCS#11 URI of a key that stays
    /// in a token ('pkcs11:token=LABEL;object=KEY-LABEL'), which the store keeps instead of a key.
    #[arg(long, value_name = "FILE|URI")]
    key: Option<PathBuf>,
    /// The PKCS#11 module (shared library) of the token that holds --key.
    #[arg(long, value_name = "PATH", env = "EDGEMTLS_PKCS11_MODULE", default_value = DEFAULT_MODULE)]
    pkcs11_module: PathBuf,
    /// The environment variable that holds the token's user PIN (never the PIN itself).
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pin_env: String,
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
        if let Some(uri) = self.key.as_deref().and_then(|k| k.to_str()).filter(|k| KeyUri::is_uri(k)) {
            let uri = KeyUri::parse(uri)?;
            let settings = TokenSettings { module: self.pkcs11_module.clone(), pin_env: self.pin_env.clone() };
            return self.create_with_token_key(context, environments, uri, &settings);
        }
        let password = crate::commands::passphrase::from_env(self.password_env.as_deref())?;
        let identity =
            load_identity(ImportRequest { cert_path: &self.cert, key_path: self.key.as_deref(), password: password.as_deref() })?;
        for warning in &identity.warnings {
            eprintln!("warning: {warning}");
        }
        let metadata = validate_client_identity(&identity, now)?;

        let mut store = context.open()?;
        let record = store.create(NewCertificate { name: self.name, environments, identity, metadata })?;
        report(&record, now);
        Ok(ExitCode::SUCCESS)
    }

    /// The certificate from --cert, its key in a token: checked there (a challenge signed by
    /// the token verifies with the certificate's public key) before anything is written.
    fn create_with_token_key(
        self,
        context: &Context,
        environments: Vec<edgemtls_host::Environment>,
        uri: KeyUri,
        settings: &TokenSettings,
    ) -> anyhow::Result<ExitCode> {
        if self.password_env.is_some() {
            bail!("--password-env is for a key file or PKCS#12 file; a token key's PIN comes from --pin-env");
        }
        let chain = load_certificates(&self.cert, None)?;
        let metadata = validate_client_chain(&self.cert, &chain, context.now)?;
        let leaf = chain.first().ok_or_else(|| anyhow::anyhow!("'{}' holds no certificate", self.cert.display()))?;
        let warnings = check_certificate_key(&uri, settings, leaf, metadata.key_type)
            .map_err(|error| anyhow::anyhow!("cannot use the key in the token: {error} (nothing was stored)"))?;
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        let mut store = context.open()?;
        let record = store.create_with_token_key(NewTokenCertificate {
            name: self.name,
            environments,
            chain,
            metadata,
            key_uri: uri.to_string(),
        })?;
        report(&record, context.now);
        say!("  key: in the token ({})", record.key_location.shown());
        Ok(ExitCode::SUCCESS)
    }
}

fn report(record: &CertificateRecord, now: time::OffsetDateTime) {
    let m = &record.metadata;
    say!(
        "created certificate '{}' ({}) for {}\n  subject: {}\n  expires: {} ({}, {} days left)",
        record.name,
        record.id,
        env_list(record),
        printable(&m.subject),
        rfc3339(m.not_after),
        m.expiry_status(now),
        m.days_left(now)
    );
}
