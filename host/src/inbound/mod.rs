//! Inbound TLS: serving `listen` over TLS, verifying callers' client certificates, deciding
//! which callers reach which route, and handing the caller's identity to handlers as
//! request headers.
//!
//! A connection is verified once, right after its handshake ([`InboundTls::accept`]); each
//! request on it is then admitted or refused with a 401 problem by its route's rule
//! ([`admit`]), and carries the caller's identity ([`crate::identity_headers`]).

mod admission;
mod caller;
pub mod caller_headers;
mod listener;

pub use admission::{ListenerRule, admit};
pub use caller::{Caller, CallerProblem, PresentedCertificate, rfc4514};
pub use listener::{Accepted, HandshakeFailure, InboundTls, PreparedTls, TlsSetupError};
