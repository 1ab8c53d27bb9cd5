//! `edgemtls cert`: create, inspect and manage the named client certificates.
//!
//! One `*Command` per subcommand, each with `execute(self, &Context)`; the [`Context`] opens
//! the store once per command.

mod change;
mod create;
mod list;
mod output;
mod test;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use edgemtls_host::store::{Store, StoreError, StoreLocation};
use time::OffsetDateTime;

use change::{DeleteCommand, DisableCommand, EnableCommand, UpdateCommand};
use create::CreateCommand;
use list::{ListCommand, ShowCommand, StatusCommand};
use test::TestCommand;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Imports a client certificate and its key under a name.
    ///
    /// Accepts PEM (chain and key in separate files, or both in --cert), DER, PKCS#12 / PFX
    /// (password from --password-env) and PKCS#7 .p7b chains with a separate --key.
    Create(CreateCommand),
    /// Lists certificates.
    List(ListCommand),
    /// Shows one certificate.
    Show(ShowCommand),
    /// Replaces the environments of a certificate.
    ///
    /// Refused when a running deployment uses the certificate in an environment the new list
    /// leaves out, unless --force.
    Update(UpdateCommand),
    /// Disables a certificate: requests naming it are refused.
    ///
    /// Refused while a running deployment's config uses it (switch the config and run
    /// `edgemtls reload` first), unless --force.
    Disable(DisableCommand),
    /// Enables a disabled certificate.
    Enable(EnableCommand),
    /// Deletes a disabled certificate.
    Delete(DeleteCommand),
    /// Reports expiry and damaged records; exits 0 when all enabled certificates are valid,
    /// 1 on a warning, 2 when one is critical, expired or cannot be unsealed.
    Status(StatusCommand),
    /// Makes a real mTLS request with a certificate and reports the handshake, the server's
    /// certificate, the status code and timings: the check before switching to it.
    Test(TestCommand),
}

impl CertCommand {
    pub fn execute(self, store: &StoreLocation) -> anyhow::Result<ExitCode> {
        let context = Context { store, now: OffsetDateTime::now_utc() };
        match self {
            Self::Create(command) => command.execute(&context),
            Self::List(command) => command.execute(&context),
            Self::Show(command) => command.execute(&context),
            Self::Update(command) => command.execute(&context),
            Self::Disable(command) => command.execute(&context),
            Self::Enable(command) => command.execute(&context),
            Self::Delete(command) => command.execute(&context),
            Self::Status(command) => command.execute(&context),
            Self::Test(command) => command.execute(&context),
        }
    }
}

/// What every cert command works with: the store directory and one "now" for the command.
pub struct Context<'a> {
    store: &'a StoreLocation,
    now: OffsetDateTime,
}

impl Context<'_> {
    /// Opens the store, creating it if there is none.
    fn open(&self) -> anyhow::Result<Store> {
        self.opened(Store::open(self.store))
    }

    /// Opens an existing store; commands that only read or change records never create one.
    fn open_existing(&self) -> anyhow::Result<Store> {
        match Store::open_existing(self.store) {
            Err(error @ StoreError::NoStore { .. }) => Err(error.into()),
            other => self.opened(other),
        }
    }

    /// The store, or `None` when there is none yet (reports then show no certificates).
    fn open_if_any(&self) -> anyhow::Result<Option<Store>> {
        match Store::open_existing(self.store) {
            Err(StoreError::NoStore { .. }) => Ok(None),
            other => Ok(Some(self.opened(other)?)),
        }
    }

    /// A directory store's errors name files inside it, so they say which store; a shared
    /// store's errors name its URL themselves.
    fn opened(&self, result: Result<Store, StoreError>) -> anyhow::Result<Store> {
        match self.store {
            StoreLocation::Directory(dir) => result.with_context(|| format!("opening the store in '{}'", dir.display())),
            StoreLocation::Postgres(_) => Ok(result?),
        }
    }
}
