//! Parsing and validating client certificates and keys, and a small dev PKI.
//!
//! Import accepts every format operators have at hand (PEM, DER, PKCS#12, PKCS#7) and turns
//! it into one shape, [`Identity`]: a leaf-first chain and a private key that is known to
//! match the leaf and to be usable by rustls. Validation then decides whether that identity
//! may become a client certificate in the store.

mod chain;
mod error;
mod fault;
mod import;
mod inspect;
mod issue;
mod keygen;
pub mod pem;
pub mod trust_files;
mod verify;
pub mod version1;

pub use crate::key_types::{KeyType, NewKeyType};
pub use chain::{ChainProblem, MAX_CHAIN_BYTES, MAX_CHAIN_LENGTH, chain_problem};
pub use error::PkiError;
pub use fault::{CertificateFault, ChainFault};
// Where a user names a file, `~` is their home; config and the store read paths that way too.
pub use crate::files::expand_tilde;
pub use import::{Identity, ImportRequest, MAX_FILE_SIZE, load_certificates, load_identity};
pub use inspect::{
    CertificateMetadata, ExpiryStatus, inspect_leaf, rfc3339, rfc3339_unix, subject_alt_names, validate_client_chain,
    validate_client_identity,
};
pub use issue::{CA_KEY_URI_FILE, DevCa, IssueOptions, IssuedFiles, file_stem, write_private_file};
pub use verify::{ParsedCrl, Purpose, VerifyProblem, VerifyTrust, signature_algorithms, verify};
