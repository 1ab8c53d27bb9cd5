//! `edgemtls`: the edge runtime for WebAssembly handlers that call upstreams over mutual TLS.

/// jemalloc instead of glibc's malloc: a profile of small proxied requests spent ~9% of the
/// CPU in glibc's malloc, free and arena consolidation; jemalloc took 15-25% off their CPU
/// per request (bench/README.md). Its background thread gives freed memory back to the
/// system within seconds of a load ending (mimalloc, also measured, kept 100 MB resident).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `println!` for command output: a reader that goes away (`edgemtls cert list | head -1`)
/// ends the command quietly, as it would a C tool, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::output_failed(error);
        }
    }};
}

mod commands;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The edge runtime for WebAssembly handlers that call upstream services over mutual TLS.
#[derive(Parser)]
#[command(name = "edgemtls", version, about, propagate_version = true)]
struct Cli {
    /// The store: a directory, or a shared PostgreSQL database as postgres://user:password@host/db
    /// (default: $EDGEMTLS_STORE, else .edgemtls in the working directory).
    #[arg(long, global = true, value_name = "DIR|URL")]
    store: Option<std::ffi::OsString>,

    /// Log format on stderr: `text` for people, `json` for machines.
    #[arg(long, global = true, value_name = "FORMAT", env = "EDGEMTLS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manages the named client certificates in the store.
    #[command(subcommand)]
    Cert(commands::cert::CertCommand),
    /// Whole-store operations: copy a store into another (a local one into a shared PostgreSQL).
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    /// A development PKI: a local CA that issues client and server certificates.
    #[command(subcommand)]
    Pki(commands::pki::PkiCommand),
    /// Makes a handler project (TypeScript, JavaScript or Rust) that builds and serves as it is.
    New(commands::new::NewCommand),
    /// Builds a JavaScript or TypeScript handler into a component (needs Node.js; serving does not).
    Build(commands::build::BuildCommand),
    /// Serves WebAssembly handlers as configured in edgemtls.toml.
    Serve(commands::serve::ServeCommand),
    /// Checks a config: components load and every certificate name resolves.
    Check(commands::serve::CheckCommand),
    /// Reloads a running host's config and waits until the new one serves.
    Reload(commands::serve::ReloadCommand),
    /// Runs a local HTTPS upstream that requires client certificates (for development).
    DevUpstream(commands::serve::DevUpstreamCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format == "json");
    let store = edgemtls_host::store::StoreLocation::resolve(cli.store.as_deref());
    let result = match cli.command {
        Command::Cert(command) => command.execute(&store),
        Command::Store(command) => command.execute(),
        Command::Build(command) => command.execute(),
        Command::New(command) => command.execute(),
        Command::Pki(command) => command.execute(),
        Command::Serve(command) => command.execute(&store),
        Command::Check(command) => command.execute(&store),
        Command::Reload(command) => command.execute(),
        Command::DevUpstream(command) => command.execute(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Standard output failed: a closed pipe ends the process like SIGPIPE would (status 141,
/// nothing printed); anything else is reported.
pub(crate) fn output_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}

/// The error and its causes, `: `-separated. Our errors either say their cause in their own
/// message or return it as `source()`, never both, so each cause is said once. An I/O error
/// is worded by its kind (`edgemtls_host::plain::io_error`), never as the system's "...
/// (os error N)".
fn describe(error: &anyhow::Error) -> String {
    let words: Vec<String> = error
        .chain()
        .map(|cause| match cause.downcast_ref::<std::io::Error>() {
            Some(io) => edgemtls_host::plain::io_error(io).into_owned(),
            None => cause.to_string(),
        })
        .collect();
    words.join(": ")
}
