//! Helpers the test suites of several crates share (the host's store tests, the e2e tests and
//! the CLI tests): a throwaway PostgreSQL server ([`postgres`]), throwaway SoftHSM2 tokens
//! ([`softhsm`]) and how a test says that a real peer it needs is missing ([`peers`]). A crate of its own, so each suite depends on it
//! like on any other crate instead of compiling these files into itself.

pub mod peers;
pub mod postgres;
pub mod softhsm;
