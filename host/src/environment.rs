//! The stages a certificate may be used in and a host may run in.

use std::fmt;
use std::str::FromStr;

/// A deployment stage. A certificate lists the environments it may be used in; a host runs in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Environment {
    /// Local development (the default for `serve` and `cert list`).
    Development,
    /// Preview / staging deployments.
    Preview,
    /// Production.
    Production,
}

impl Environment {
    /// All environments, in their canonical order.
    pub const ALL: [Environment; 3] = [Environment::Development, Environment::Preview, Environment::Production];

    /// The lowercase name used in the CLI, config files and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Preview => "preview",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An environment name that is not one of `development`, `preview`, `production`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment '{0}': expected one of development, preview, production")]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Short forms match what Zuplo and Wrangler users type.
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Environment::Development),
            "preview" | "staging" => Ok(Environment::Preview),
            "production" | "prod" => Ok(Environment::Production),
            _ => Err(UnknownEnvironment(s.to_string())),
        }
    }
}

/// Parses a list of environment names into a sorted set without duplicates.
pub fn parse_environments<I, S>(names: I) -> Result<Vec<Environment>, UnknownEnvironment>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut envs = Vec::new();
    for name in names {
        let env: Environment = name.as_ref().parse()?;
        if !envs.contains(&env) {
            envs.push(env);
        }
    }
    envs.sort();
    Ok(envs)
}
