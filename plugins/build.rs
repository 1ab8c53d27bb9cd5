//! Compiles the guest components (wasm32-wasip2, release): the built-in handlers that the
//! host embeds and the example plugin. Each path is exposed to the crate as an `env!`
//! constant. Test guests are the test crate's (`tests/build.rs`).

use std::path::PathBuf;
use std::process::Command;

/// (cargo package, constant name, wasm file stem)
const GUESTS: &[(&str, &str, &str)] = &[
    ("url-forward", "URL_FORWARD_WASM", "url_forward"),
    ("url-rewrite", "URL_REWRITE_WASM", "url_rewrite"),
    ("hello-mtls", "HELLO_MTLS_WASM", "hello_mtls"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("plugins/ is inside the workspace").to_path_buf();
    for dir in ["guest-sdk", "plugins/hello-mtls", "plugins/url-forward", "plugins/url-rewrite", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // A separate target dir: the outer cargo holds the lock on the main one.
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for (package, _, _) in GUESTS {
        command.args(["-p", package]);
    }
    let status = command.status().expect("running cargo for the guests");
    assert!(
        status.success(),
        "building the guests failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
    );
    for (_, constant, stem) in GUESTS {
        let path = target_dir.join("wasm32-wasip2/release").join(format!("{stem}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        println!("cargo:rustc-env={constant}={}", path.display());
    }
}
