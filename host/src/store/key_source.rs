//! Where a store's master key comes from: a variable or a key file. Plain data that the
//! store's errors name and `seal.rs` reads the key from.

use std::path::PathBuf;

/// The environment variable that carries the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "EDGEMTLS_MASTER_KEY";

/// Where a master key came from, for error messages.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The `EDGEMTLS_MASTER_KEY` variable.
    Environment,
    /// A key file.
    File(PathBuf),
    /// Another variable, named on the command line (`store copy --from-key-env`).
    Variable(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Environment => write!(f, "{MASTER_KEY_ENV}"),
            KeySource::File(path) => write!(f, "key file '{}'", path.display()),
            KeySource::Variable(name) => write!(f, "{name}"),
        }
    }
}
