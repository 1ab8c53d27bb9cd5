//! Integration tests of the `edgemtls` command line.
//!
//! Every test runs the real binary with `--store` pointing into its own temporary directory
//! and without `EDGEMTLS_MASTER_KEY`, so tests never share state nor touch the user's store.
//! Certificates are made with rcgen inside the tests; the tests marked "openssl" use files made
//! by the `openssl` command and skip (with a message on stderr) when it is not installed.

mod cli {
    mod cert_test;
    pub mod common;
    mod connections;
    mod failures;
    mod formats;
    mod guests;
    mod js_handlers;
    mod manage;
    mod nginx_setups;
    mod openssl;
    pub use edgemtls_test_support::peers;
    mod pkcs11;
    mod pki;
    mod pki_verify;
    mod plain_words;
    mod quick_start;
    mod scaffold;
    mod serve;
    mod shared_store;
    pub use edgemtls_test_support::softhsm;
    mod status;
    mod store_files;
    mod two_nodes;
    mod validation;
    mod version1;
}
