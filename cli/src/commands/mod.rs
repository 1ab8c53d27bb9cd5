//! One module per top-level command; each has a `*Command` with `execute(self)`.

pub mod build;
pub mod cert;
pub mod new;
pub mod passphrase;
pub mod pki;
pub mod serve;
pub mod store;
