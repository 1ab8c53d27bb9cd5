//! The edgemtls host library.
//!
//! edgemtls runs WebAssembly request handlers whose outbound requests present a client
//! certificate they name. This crate holds everything but the command line; the repository's
//! `ARCHITECTURE.md` follows a request and a certificate name through these modules.
//!
//! - [`server`]: listener, connections, routing, reloads, admin endpoints, problem responses;
//! - [`inbound`]: the TLS listener, callers' client certificates, route admission;
//! - [`identity_headers`]: the headers that carry a verified caller's identity to handlers
//!   (config refuses them as `caller_headers` names, so they are a leaf of their own);
//! - [`runtime`]: compiled components, warm instance pools, deadlines and limits per request;
//! - [`upstream`]: client identities, trust profiles, pooled mTLS connections, failures;
//! - [`resolve`]: certificate names to identities, from an in-memory snapshot of the store;
//! - [`store`]: the certificate store (SQLite, keys sealed with AES-256-GCM, records MACed);
//! - [`deployment`]: this host's registration in the store (what it serves, which names);
//! - [`config`]: `edgemtls.toml`: routes, options, limits, egress, upstream trust;
//! - [`pkcs11`]: keys that stay in a hardware token, signing through it;
//! - [`pki`]: importing and validating certificates and keys, PEM, a dev CA;
//! - [`drain`]: knowing when requests on a previous config have finished;
//! - [`metrics`], [`log_limit`], [`files`]: Prometheus metrics, rate-limited warnings,
//!   bounded reads of regular files;
//! - [`plain`]: I/O errors in plain words for the messages people read;
//! - [`Environment`]: the stages a certificate is scoped to.
#![deny(missing_docs)]

mod authority;
mod environment;
mod error_chain;
mod hop_by_hop;
pub mod identity_headers;
mod key_types;
pub mod pkcs11;
pub mod pki;
mod problem;
pub mod store;

pub use environment::{Environment, UnknownEnvironment, parse_environments};
pub use problem::Problem;
mod background;
pub mod config;
pub mod deployment;
pub mod drain;
pub mod files;
pub mod inbound;
pub mod log_limit;
pub mod metrics;
pub mod plain;
pub mod resolve;
pub mod revocation;
pub mod runtime;
pub mod server;
pub mod shell;
pub mod upstream;
