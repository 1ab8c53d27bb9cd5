//! `[pkcs11]`: the PKCS#11 module and PIN variable through which keys kept in a token sign.
//! Plain data that `pkcs11` (which talks to the module) reads, the keys as written, and how
//! they are read and checked.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Reader};

/// The module `cert create`, `pki init` and `serve` load when nothing names another: SoftHSM2
/// as Debian installs it.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The environment variable the token's PIN is read from when nothing names another.
pub const DEFAULT_PIN_ENV: &str = "EDGEMTLS_PKCS11_PIN";

/// Where the module and the PIN come from; the PIN itself is read only when logging in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSettings {
    /// The PKCS#11 module (a shared library). A URI's `module-path` takes precedence.
    pub module: PathBuf,
    /// The environment variable that holds the user PIN. A URI's `pin-source` takes precedence.
    pub pin_env: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self { module: PathBuf::from(DEFAULT_MODULE), pin_env: DEFAULT_PIN_ENV.into() }
    }
}

/// `[pkcs11]`: where token keys are signed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pkcs11Toml {
    module: Option<String>,
    pin_env: Option<String>,
}

impl Reader<'_> {
    pub(super) fn pkcs11(&self, raw: Pkcs11Toml) -> Result<TokenSettings, ConfigError> {
        let mut settings = TokenSettings::default();
        if let Some(module) = raw.module {
            settings.module = self.existing_file("pkcs11.module", &module)?;
        }
        if let Some(pin_env) = raw.pin_env {
            // The name of a variable, never the PIN: a PIN-like value here is a mistake.
            let valid = !pin_env.is_empty()
                && pin_env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !pin_env.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(self.invalid(
                    "pkcs11.pin_env".into(),
                    "must name the environment variable that holds the PIN (letters, digits and '_'), not the PIN".into(),
                ));
            }
            settings.pin_env = pin_env;
        }
        Ok(settings)
    }
}
