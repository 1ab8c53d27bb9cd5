//! `edgemtls store copy`: moves every certificate from one store to another, for example a
//! developer's local store into the PostgreSQL store a fleet shares.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use edgemtls_host::store::{KEY_FILE, KeySource, MASTER_KEY_ENV, MasterKey, Store, StoreLocation};

/// Whole-store operations.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copies every certificate (id, name, environments, state, chain and key) into another
    /// store, sealing the keys with that store's master key.
    Copy(CopyCommand),
}

impl StoreCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Copy(command) => command.execute(),
        }
    }
}

#[derive(Args)]
pub struct CopyCommand {
    /// The store to copy from: a directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    from: OsString,
    /// The store to copy into (created if it does not exist).
    #[arg(long, value_name = "DIR|URL")]
    to: OsString,
    /// The variable that holds the source's master key (default: a directory's master.key,
    /// else EDGEMTLS_MASTER_KEY).
    #[arg(long, value_name = "VAR")]
    from_key_env: Option<String>,
    /// The variable that holds the destination's master key (default: EDGEMTLS_MASTER_KEY, else
    /// a directory's master.key, made for a new store).
    #[arg(long, value_name = "VAR")]
    to_key_env: Option<String>,
}

impl CopyCommand {
    fn execute(self) -> anyhow::Result<ExitCode> {
        let from = StoreLocation::parse(&self.from);
        let to = StoreLocation::parse(&self.to);
        if from == to {
            bail!("--from and --to name the same store ({from})");
        }
        // Read and unseal everything first: a source that cannot be read in full writes nothing.
        let source_key = key(&from, self.from_key_env.as_deref(), "--from-key-env", true)?;
        let source = Store::open_existing_with_key(&from, source_key).with_context(|| format!("opening the source store {from}"))?;
        let mut records = Vec::new();
        for record in source.list()? {
            let key = source
                .private_key(&record)
                .with_context(|| format!("reading certificate '{}' from {from} (nothing was copied)", record.name))?;
            records.push((record, key));
        }
        drop(source);

        let destination_key = key(&to, self.to_key_env.as_deref(), "--to-key-env", false)?;
        let mut destination = Store::open_with_key(&to, destination_key).with_context(|| format!("opening the destination store {to}"))?;
        // A name the destination already has is fine when it is the same certificate (a copy
        // run again); another certificate under that name stops the copy before it starts.
        let mut copy = Vec::new();
        let mut already = 0;
        let mut conflicts = Vec::new();
        for (record, key) in records {
            match destination.find(&record.name) {
                Ok(existing) if existing.metadata.fingerprint_sha256 == record.metadata.fingerprint_sha256 => already += 1,
                Ok(existing) => conflicts.push(format!(
                    "'{}' (here {}, there {})",
                    record.name, record.metadata.fingerprint_sha256, existing.metadata.fingerprint_sha256
                )),
                // Ids are kept, so another certificate under this one's id is a clash too.
                Err(edgemtls_host::store::StoreError::NotFound(_)) => match destination.find(&record.id) {
                    Ok(existing) => {
                        conflicts.push(format!("'{}' (its id {} is certificate '{}' there)", record.name, record.id, existing.name))
                    }
                    Err(edgemtls_host::store::StoreError::NotFound(_)) => copy.push((record, key)),
                    Err(error) => return Err(error).with_context(|| format!("reading the destination store {to}")),
                },
                Err(error) => return Err(error).with_context(|| format!("reading the destination store {to}")),
            }
        }
        if !conflicts.is_empty() {
            bail!(
                "{to} already has other certificates under these names or ids: {}; rename or delete them there first (nothing was copied)",
                conflicts.join(", ")
            );
        }
        let total = copy.len();
        for (done, (record, key)) in copy.into_iter().enumerate() {
            destination.copy_in(&record, key).with_context(|| {
                format!("copying '{}' into {to} ({done} of {total} copied; run the command again to copy the rest)", record.name)
            })?;
        }
        let already = if already > 0 { format!("; {already} already there") } else { String::new() };
        say!("copied {total} certificate{} from {from} to {to}{already}", if total == 1 { "" } else { "s" });
        Ok(ExitCode::SUCCESS)
    }
}

/// The master key for one side of a copy: the named variable; for a source directory, its
/// own key file before `EDGEMTLS_MASTER_KEY` (a developer's store keeps its key beside it,
/// while the variable holds the fleet's); otherwise the store's usual rules.
fn key(location: &StoreLocation, variable: Option<&str>, flag: &str, source: bool) -> anyhow::Result<Option<(MasterKey, KeySource)>> {
    if let Some(name) = variable {
        return match MasterKey::from_variable(name)? {
            Some(found) => Ok(Some(found)),
            None => bail!("{flag} {name}: the variable is not set"),
        };
    }
    match location {
        StoreLocation::Directory(dir) if source => Ok(MasterKey::from_file(&dir.join(KEY_FILE))?),
        StoreLocation::Postgres(_) if std::env::var_os(MASTER_KEY_ENV).is_none() => {
            let side = if source { "source" } else { "destination" };
            bail!("the {side} {location} is a shared store: set {MASTER_KEY_ENV} (or {flag} VAR) to its master key")
        }
        _ => Ok(None),
    }
}
