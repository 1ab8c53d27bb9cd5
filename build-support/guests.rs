// Shared by the build scripts that compile guests (`plugins/build.rs`, `tests/build.rs`),
// through `include!`: one way to run cargo for wasm32-wasip2.

/// Builds `packages` for wasm32-wasip2 (release) into `<root>/target/guests` and returns the
/// directory holding the `.wasm` files. A separate target dir: the outer cargo holds the lock
/// on the main one; both build scripts share this one, so cargo's lock makes them take turns
/// and the guest SDK is compiled once.
fn build_guests(root: &std::path::Path, packages: &[&str]) -> std::path::PathBuf {
    println!("cargo:rerun-if-changed={}", root.join("build-support/guests.rs").display());
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().expect("running cargo for the guests");
    assert!(
        status.success(),
        "building the guests ({}) failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)",
        packages.join(", ")
    );
    target_dir.join("wasm32-wasip2/release")
}
