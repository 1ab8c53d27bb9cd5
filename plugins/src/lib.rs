//! The handlers edgemtls ships, as WebAssembly components embedded in the host.
//!
//! - `url-forward`: forwards method, path, query, headers and body to `baseUrl` + path.
//! - `url-rewrite`: forwards to a URL built from `rewritePattern`
//!   (`https://api.internal/v2/${params.id}?${query}`).
//! - `hello-mtls`: the example from the README.
//!
//! All take `mtlsCertificate`; any option value may be `$env(NAME)`.
#![deny(missing_docs)]

/// A handler that ships with edgemtls, usable in `edgemtls.toml` by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// The name used as `handler = "..."`.
    pub name: &'static str,
    /// The component bytes.
    pub wasm: &'static [u8],
}

/// Every built-in handler.
pub const BUILTINS: &[Builtin] = &[
    Builtin { name: "url-forward", wasm: include_bytes!(env!("URL_FORWARD_WASM")) },
    Builtin { name: "url-rewrite", wasm: include_bytes!(env!("URL_REWRITE_WASM")) },
    Builtin { name: "hello-mtls", wasm: include_bytes!(env!("HELLO_MTLS_WASM")) },
];

/// The built-in handler called `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Paths of the compiled components, for tests and benchmarks that load them from disk.
pub mod paths {
    /// `url-forward`.
    pub const URL_FORWARD: &str = env!("URL_FORWARD_WASM");
    /// `url-rewrite`.
    pub const URL_REWRITE: &str = env!("URL_REWRITE_WASM");
    /// `hello-mtls`.
    pub const HELLO_MTLS: &str = env!("HELLO_MTLS_WASM");
    /// The test probe (`tests/guests/mtls-probe`): fetches what its request headers say and
    /// misbehaves on request. Not a built-in.
    pub const MTLS_PROBE: &str = env!("MTLS_PROBE_WASM");
}
