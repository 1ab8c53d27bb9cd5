//! `edgemtls`: the edge runtime for WebAssembly handlers that call upstreams over mutual TLS.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The edge runtime for WebAssembly handlers that call upstream services over mutual TLS.
#[derive(Parser)]
#[command(name = "edgemtls", version, about, propagate_version = true)]
struct Cli {
    /// The store directory (default: $EDGEMTLS_STORE, else .edgemtls in the working directory).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manages the named client certificates in the store.
    #[command(subcommand)]
    Cert(commands::cert::CertCommand),
    /// A development PKI: a local CA that issues client and server certificates.
    #[command(subcommand)]
    Pki(commands::pki::PkiCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let store_dir = edgemtls_host::store::store_dir(cli.store.as_deref());
    let result = match cli.command {
        Command::Cert(command) => command.execute(&store_dir),
        Command::Pki(command) => command.execute(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
