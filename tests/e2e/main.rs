#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
//! End-to-end tests: the host serves real components; upstreams are real TLS servers that
//! require client certificates and report which certificate each connection presented.

mod harness;
use edgemtls_test_support::peers;

mod connections;
mod egress;
mod environments;
mod execution;
mod failures;
mod forward;
mod handlers;
mod inbound;
mod isolation;
mod limits;
mod nginx;
mod operations;
mod revocation;
mod rotation;
mod startup;
mod trust;
mod websocket;
mod wit_contract;
