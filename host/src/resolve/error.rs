//! Why a certificate name cannot be used, as the guest's typed error names it.

use time::OffsetDateTime;

use crate::Environment;
use crate::pki::{ChainProblem, rfc3339};

/// Why a certificate name cannot be used. These reach the guest as typed WIT errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No certificate has this name.
    #[error("certificate '{name}' not found")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The certificate is disabled.
    #[error("certificate '{name}' is disabled")]
    Disabled {
        /// The name.
        name: String,
    },
    /// The certificate is not scoped to the running environment.
    #[error("certificate '{name}' is not available in environment {environment}")]
    NotInEnvironment {
        /// The name.
        name: String,
        /// The environment the host runs in.
        environment: Environment,
    },
    /// The certificate has expired.
    #[error("certificate '{name}' expired at {}; import a renewed one under a new name and switch to it", rfc3339(*not_after))]
    Expired {
        /// The name.
        name: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The certificate is not valid yet.
    #[error("certificate '{name}' is not valid before {}", rfc3339(*not_before))]
    NotYetValid {
        /// The name.
        name: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// The stored key does not unseal.
    #[error(
        "certificate '{name}' cannot be used: its stored key does not unseal (another master key, or a damaged record); import it again under a new name"
    )]
    Damaged {
        /// The name.
        name: String,
    },
    /// The stored chain breaks a limit TLS peers impose (it was imported before the limit
    /// existed): presenting it would fail every request.
    #[error(
        "certificate '{name}' cannot be used: its record holds {problem}; import it again under a new name with only the leaf and the intermediates up to the CA, each once"
    )]
    BadChain {
        /// The name.
        name: String,
        /// The limit its chain breaks.
        problem: ChainProblem,
    },
}

impl ResolveError {
    /// The stable, machine-readable reason: `certificate-not-found`, `certificate-disabled`,
    /// `certificate-not-in-environment`, `certificate-expired`, `certificate-not-yet-valid`,
    /// `certificate-damaged`, `certificate-bad-chain`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "certificate-not-found",
            Self::Disabled { .. } => "certificate-disabled",
            Self::NotInEnvironment { .. } => "certificate-not-in-environment",
            Self::Expired { .. } => "certificate-expired",
            Self::NotYetValid { .. } => "certificate-not-yet-valid",
            Self::Damaged { .. } => "certificate-damaged",
            Self::BadChain { .. } => "certificate-bad-chain",
        }
    }
}
