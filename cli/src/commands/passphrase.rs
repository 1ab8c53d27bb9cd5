//! Passwords and passphrases: read from an environment variable the operator names, or asked
//! for on a terminal. Never taken as a command-line value, which other users can read.

use std::io::IsTerminal;

/// The value of `--password-env VAR`, when given (it may be empty: PKCS#12 files often have
/// an empty password).
pub fn from_env(var: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(value) => Ok(Some(value)),
        Err(_) => anyhow::bail!("--password-env names '{var}', which is not set"),
    }
}

/// A passphrase that must be had: from `--password-env VAR`, else asked on the terminal
/// (twice when `confirm`, for a new one). `what` names it in the prompt and the error.
pub fn required(var: Option<&str>, what: &str, confirm: bool) -> anyhow::Result<String> {
    if let Some(value) = from_env(var)? {
        anyhow::ensure!(!value.is_empty(), "{what} may not be empty: '{}' is set but empty", var.unwrap_or_default());
        return Ok(value);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "{what} is needed: name the environment variable that holds it with --password-env, or run on a terminal to be asked"
        );
    }
    let first = rpassword::prompt_password(format!("{what}: "))?;
    if first.is_empty() {
        anyhow::bail!("{what} may not be empty");
    }
    if confirm && rpassword::prompt_password(format!("{what} (again): "))? != first {
        anyhow::bail!("the two entries of {what} differ; nothing was written");
    }
    Ok(first)
}
