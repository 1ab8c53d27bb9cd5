//! End-to-end tests: the host serves real components; upstreams are real TLS servers that
//! require client certificates and report which certificate each connection presented.

mod harness;

mod environments;
mod failures;
mod isolation;
mod limits;
mod nginx;
mod wit_contract;
