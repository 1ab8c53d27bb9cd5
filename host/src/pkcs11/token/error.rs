//! Why a token key cannot be used, and a module's answers in words.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use super::KeyUri;

/// Why a token key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The module cannot be loaded or initialised.
    #[error("cannot load the PKCS#11 module '{}': {reason}; install it or name another with --pkcs11-module or [pkcs11] module", module.display())]
    Module {
        /// The module's path.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// No slot holds the token.
    #[error("{token} is not present in the PKCS#11 module '{}' (tokens there: {present}); check the token is plugged in and its label", module.display())]
    NoToken {
        /// The token, as the URI names it.
        token: String,
        /// The module asked.
        module: PathBuf,
        /// The tokens the module has, or `none`.
        present: String,
    },
    /// There is no PIN to log in with.
    #[error("no PIN for {token}: {detail}")]
    NoPin {
        /// The token.
        token: String,
        /// What to do.
        detail: String,
    },
    /// The token refused the PIN.
    #[error(
        "{token} refused the PIN from {source_shown}: the PIN is wrong (a serving host does not try it again until restarted, so the token does not lock)"
    )]
    WrongPin {
        /// The token.
        token: String,
        /// Where the PIN came from.
        source_shown: String,
    },
    /// The token locked its user PIN.
    #[error("{token} has locked its user PIN after too many wrong attempts; unlock it with the security officer PIN")]
    PinLocked {
        /// The token.
        token: String,
    },
    /// The key is not in the token.
    #[error("there is no private {key}; list the token's keys (pkcs11-tool --list-objects) and check the URI's object= or id=")]
    NoKey {
        /// The key, as the URI names it.
        key: String,
    },
    /// More than one key matches.
    #[error("{count} private keys match the {key}; add id= to the URI to pick one")]
    Ambiguous {
        /// The key, as the URI names it.
        key: String,
        /// How many matched.
        count: usize,
    },
    /// The token's key is not the certificate's.
    #[error(
        "the {key} does not match the certificate's public key (a test signature did not verify); check the URI names the certificate's own key"
    )]
    Mismatch {
        /// The key.
        key: String,
    },
    /// The certificate's key type cannot be used through a token here.
    #[error("{key_type} keys cannot sign through a token here; use RSA or ECDSA P-256/P-384")]
    Unsupported {
        /// The key type.
        key_type: String,
    },
    /// The token failed an operation.
    #[error("{token} failed while {during}: {reason}")]
    Failed {
        /// The token.
        token: String,
        /// What edgemtls was doing.
        during: &'static str,
        /// The module's answer, in words.
        reason: String,
    },
    /// Every session of the token was busy past the deadline.
    #[error("{token} did not sign within {seconds} s (all its sessions are busy or it stopped answering)")]
    Timeout {
        /// The token.
        token: String,
        /// The deadline.
        seconds: u64,
    },
}
/// A module's answer in words, without the PKCS#11 function's name.
pub(super) fn words(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _) => "the token was removed".into(),
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _) => "the token closed the session".into(),
        CkError::Pkcs11(RvError::DeviceError | RvError::DeviceMemory, _) => "the device reported an error".into(),
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => "the key is gone from the token".into(),
        CkError::Pkcs11(RvError::MechanismInvalid, _) => "the token does not offer this signature mechanism".into(),
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => "the session is not logged in".into(),
        CkError::Pkcs11(RvError::CryptokiNotInitialized, _) => {
            "the module is stopped: restarting it to look for a token that had gone failed (it is tried again every 2 s)".into()
        }
        CkError::Pkcs11(RvError::GeneralError, _) => "the module reported a general error".into(),
        CkError::Pkcs11(rv, _) => rv.to_string(),
        other => other.to_string(),
    }
}

pub(super) fn failed<'a>(uri: &'a KeyUri, during: &'static str) -> impl Fn(CkError) -> TokenError + 'a {
    move |error| TokenError::Failed { token: uri.token_shown(), during, reason: words(&error) }
}
impl TokenError {
    /// Whether a fresh session may succeed where this one failed: the token was removed,
    /// unplugged or closed the session, and may be back.
    pub(in crate::pkcs11) fn retry_with_new_session(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::NoToken { .. })
    }
}
