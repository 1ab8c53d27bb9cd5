//! Compiles the guest components (wasm32-wasip2, release): the built-in handlers that the
//! host embeds and the example plugin. Each path is exposed to the crate as an `env!`
//! constant. Test guests are the test crate's (`tests/build.rs`).

use std::path::PathBuf;

include!("../build-support/guests.rs");

/// (cargo package, constant name, wasm file stem)
const GUESTS: &[(&str, &str, &str)] = &[
    ("url-forward", "URL_FORWARD_WASM", "url_forward"),
    ("url-rewrite", "URL_REWRITE_WASM", "url_rewrite"),
    ("hello-mtls", "HELLO_MTLS_WASM", "hello_mtls"),
    ("mtls-auth", "MTLS_AUTH_WASM", "mtls_auth"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("plugins/ is inside the workspace").to_path_buf();
    for dir in ["guest-sdk", "plugins/hello-mtls", "plugins/url-forward", "plugins/url-rewrite", "plugins/mtls-auth", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let packages: Vec<&str> = GUESTS.iter().map(|(package, _, _)| *package).collect();
    let release = build_guests(&root, &packages);
    for (_, constant, stem) in GUESTS {
        let path = release.join(format!("{stem}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        println!("cargo:rustc-env={constant}={}", path.display());
    }
}
