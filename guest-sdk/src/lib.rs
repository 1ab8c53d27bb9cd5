//! Write edgemtls request handlers in Rust.
//!
//! A handler is a standard `wasi:http/proxy` component. This crate adds the two things
//! edgemtls handlers need: options from `wasi:config/store`, and outbound requests that
//! present a client certificate chosen by name. The host resolves the name in the
//! environment it runs in; the guest never sees certificate or key bytes.
//!
//! # Examples
//!
//! ```no_run
//! use edgemtls_guest::{IncomingRequest, Request, Response};
//!
//! struct Hello;
//!
//! impl edgemtls_guest::Handler for Hello {
//!     fn handle(_request: IncomingRequest) -> Response {
//!         let url = edgemtls_guest::config("url").unwrap_or_default();
//!         let name = std::env::var("BACKEND_MTLS_CERT").unwrap_or_default();
//!         match Request::get(&url).mtls_certificate(&name).send() {
//!             // The upstream body streams through; nothing is buffered whole.
//!             Ok(upstream) => Response::new(upstream.status).with_body(upstream.body),
//!             // Tells "certificate not found / disabled / ..." apart, as problem+json.
//!             Err(error) => error.into_response(),
//!         }
//!     }
//! }
//!
//! edgemtls_guest::handler!(Hello);
//! ```
#![deny(missing_docs)]

mod body;
mod caller;
mod error;
mod fetch;
mod incoming;
mod problem;

pub use body::Body;
pub use caller::{CLIENT_CERT, CLIENT_CERT_CHAIN, ClientCertificate, IDENTITY_HEADER_PREFIX};
pub use error::{CertificateError, FetchError, UpstreamFailure};
pub use fetch::{Forward, Request, forward, forward_by_route_options, forward_with_client_cert};
pub use incoming::{HOP_BY_HOP, Handler, IncomingRequest, Response, run_handler};

/// The `wasi` crate this SDK is built on, for direct use of any WASI interface.
pub use wasi;

#[allow(missing_docs, unsafe_code, reason = "wit-bindgen generated code")]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "edgemtls:mtls/guest-imports",
        with: {
            "wasi:http/types@0.2.12": ::wasi::http::types,
            "wasi:io/streams@0.2.12": ::wasi::io::streams,
            "wasi:io/error@0.2.12": ::wasi::io::error,
            "wasi:io/poll@0.2.12": ::wasi::io::poll,
            "wasi:clocks/monotonic-clock@0.2.12": ::wasi::clocks::monotonic_clock,
            "wasi:config/store@0.2.0-rc.1": generate,
        },
    });
}

/// An option of this handler's route (`[routes.options]` in `edgemtls.toml`).
pub fn config(key: &str) -> Option<String> {
    bindings::wasi::config::store::get(key).ok().flatten()
}

/// Every option of this handler's route.
pub fn config_all() -> Vec<(String, String)> {
    bindings::wasi::config::store::get_all().unwrap_or_default()
}

/// Exports a [`Handler`] as the component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! handler {
    ($handler:ty) => {
        #[doc(hidden)]
        pub struct __EdgemtlsExport;

        impl $crate::wasi::exports::http::incoming_handler::Guest for __EdgemtlsExport {
            fn handle(
                request: $crate::wasi::http::types::IncomingRequest,
                response_out: $crate::wasi::http::types::ResponseOutparam,
            ) {
                $crate::run_handler::<$handler>(request, response_out)
            }
        }

        $crate::wasi::http::proxy::export!(__EdgemtlsExport with_types_in $crate::wasi);
    };
}
