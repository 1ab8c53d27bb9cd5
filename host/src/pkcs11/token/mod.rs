//! Talking to a PKCS#11 module: loading it once per process, finding the token and the key a
//! URI names, logging in, and signing.

mod der;
mod error;
mod keys;
mod module;
mod session;
mod signature;

use std::path::Path;

use cryptoki::types::AuthPin;

pub use self::error::TokenError;
pub(super) use self::session::TokenSession;
pub use self::signature::SigningScheme;
use super::KeyUri;

// The settings are plain data in the config (`[pkcs11]`); how they are used is here.
pub use crate::config::{DEFAULT_MODULE, DEFAULT_PIN_ENV, TokenSettings};

impl TokenSettings {
    /// The module that serves `uri`.
    pub fn module_for<'a>(&'a self, uri: &'a KeyUri) -> &'a Path {
        uri.module_path.as_deref().unwrap_or(&self.module)
    }

    /// Where the PIN for `uri` comes from, for messages.
    pub(super) fn pin_shown(&self, uri: &KeyUri) -> String {
        match &uri.pin_file {
            Some(path) => format!("the file '{}'", path.display()),
            None => format!("the environment variable {}", self.pin_env),
        }
    }

    pub(super) fn pin(&self, uri: &KeyUri) -> Result<AuthPin, TokenError> {
        let pin = match &uri.pin_file {
            Some(path) => crate::files::read_regular_file(path, 4096)
                .map_err(|error| TokenError::NoPin {
                    token: uri.token_shown(),
                    detail: format!("cannot read '{}': {error}", path.display()),
                })
                .map(|bytes| String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_string())?,
            None => std::env::var(&self.pin_env).map_err(|_| TokenError::NoPin {
                token: uri.token_shown(),
                detail: format!("set the environment variable {} (or name another with --pin-env or [pkcs11] pin_env)", self.pin_env),
            })?,
        };
        Ok(AuthPin::from(pin))
    }
}
