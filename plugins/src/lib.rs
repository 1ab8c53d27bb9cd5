//! The handlers edgemtls ships, as WebAssembly components embedded in the host.
//!
//! - `url-forward`: forwards method, path, query, headers and body to `baseUrl` + path.
//! - `url-rewrite`: forwards to a URL built from `rewritePattern`
//!   (`https://api.internal/v2/${params.id}?${query}`); a value from the caller is escaped
//!   as one path segment or one query value, by where its placeholder stands
//!   (`plugins/url-rewrite/src/lib.rs` says which).
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
    /// Every option it reads: any other is a mistake in the config.
    pub options: &'static [OptionSpec],
    /// Environment variables it reads as certificate names when no option names one.
    pub certificate_vars: &'static [&'static str],
}

/// One option a built-in handler reads from `wasi:config/store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The option's name, as written under `[routes.options]`.
    pub name: &'static str,
    /// What its value must be.
    pub kind: OptionKind,
    /// Whether the handler cannot work without it.
    pub required: bool,
}

/// What an option's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// Any text.
    Text,
    /// An absolute `http://` or `https://` URL.
    Url,
    /// An absolute `http://` or `https://` URL that the request's path and query are appended
    /// to: it has no query or fragment of its own.
    BaseUrl,
    /// `true` or `false`.
    Boolean,
    /// The name (or id) of a certificate in the store; empty means none.
    CertificateName,
}

const MTLS_CERTIFICATE: OptionSpec = OptionSpec { name: "mtlsCertificate", kind: OptionKind::CertificateName, required: false };
const FORWARD_CLIENT_CERT: OptionSpec = OptionSpec { name: "forwardClientCert", kind: OptionKind::Boolean, required: false };

/// Every built-in handler.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "url-forward",
        wasm: include_bytes!(env!("URL_FORWARD_WASM")),
        options: &[
            OptionSpec { name: "baseUrl", kind: OptionKind::BaseUrl, required: true },
            MTLS_CERTIFICATE,
            OptionSpec { name: "forwardSearch", kind: OptionKind::Boolean, required: false },
            FORWARD_CLIENT_CERT,
        ],
        certificate_vars: &[],
    },
    Builtin {
        name: "url-rewrite",
        wasm: include_bytes!(env!("URL_REWRITE_WASM")),
        options: &[OptionSpec { name: "rewritePattern", kind: OptionKind::Text, required: true }, MTLS_CERTIFICATE, FORWARD_CLIENT_CERT],
        certificate_vars: &[],
    },
    Builtin {
        name: "hello-mtls",
        wasm: include_bytes!(env!("HELLO_MTLS_WASM")),
        options: &[OptionSpec { name: "url", kind: OptionKind::Url, required: true }, MTLS_CERTIFICATE],
        certificate_vars: &["BACKEND_MTLS_CERT"],
    },
    Builtin {
        name: "mtls-auth",
        wasm: include_bytes!(env!("MTLS_AUTH_WASM")),
        options: &[
            OptionSpec { name: "baseUrl", kind: OptionKind::BaseUrl, required: true },
            MTLS_CERTIFICATE,
            FORWARD_CLIENT_CERT,
            OptionSpec { name: "allowedIssuers", kind: OptionKind::Text, required: false },
            OptionSpec { name: "allowedSubjects", kind: OptionKind::Text, required: false },
            OptionSpec { name: "requireBoundToken", kind: OptionKind::Boolean, required: false },
        ],
        certificate_vars: &[],
    },
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
    /// `mtls-auth`.
    pub const MTLS_AUTH: &str = env!("MTLS_AUTH_WASM");
}
