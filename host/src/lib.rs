//! The edgemtls host library.
//!
//! edgemtls runs WebAssembly request handlers whose outbound requests present a client
//! certificate they name. This crate holds everything but the command line:
//!
//! - [`store`]: the certificate store (SQLite, private keys sealed with AES-256-GCM);
//! - [`pki`]: importing and validating certificates and keys, and a dev CA;
//! - [`Environment`]: the stages a certificate is scoped to.
#![deny(missing_docs)]

mod environment;
pub mod pki;
pub mod store;

pub use environment::{Environment, UnknownEnvironment, parse_environments};
pub mod config;
pub mod deployment;
pub mod drain;

pub mod files;
pub mod log_limit;
pub mod metrics;
pub mod resolve;
pub mod runtime;
pub mod server;
pub mod upstream;
