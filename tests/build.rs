//! Compiles every test guest in `guests/` (wasm32-wasip2, release) and exposes each as a
//! constant in `edgemtls_e2e::guests`. As in wasmtime's test-programs, a guest that no test
//! names fails the build: a guest without a test is dead weight that hides broken coverage.

use std::path::{Path, PathBuf};
include!("guest_check.rs");
include!("../build-support/guests.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("tests/ is inside the workspace").to_path_buf();
    let test_sources = [manifest.join("e2e"), root.join("cli/tests")];
    for dir in ["guest-sdk", "wit", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for dir in &test_sources {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let mut guests: Vec<String> = std::fs::read_dir(manifest.join("guests"))
        .expect("reading tests/guests")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    guests.sort();

    let sources = read_sources(&test_sources);
    let unused = unused_guests(&guests, &sources);
    assert!(
        unused.is_empty(),
        "test guests that no test uses: {} (use edgemtls_e2e::guests::NAME in a test under tests/e2e or cli/tests, or delete the guest)",
        unused.join(", ")
    );

    let packages: Vec<&str> = guests.iter().map(String::as_str).collect();
    let release = build_guests(&root, &packages);

    let mut constants = String::new();
    for guest in &guests {
        let path = release.join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(path.exists(), "{} was not built", path.display());
        constants.push_str(&format!(
            "/// `tests/guests/{guest}`.\npub const {}: &str = {:?};\n",
            constant(guest),
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(&out, constants).expect("writing the guest paths");
}

/// Every `.rs` file's text under `dirs`, concatenated.
fn read_sources(dirs: &[PathBuf]) -> String {
    let mut text = String::new();
    for dir in dirs {
        collect(dir, &mut text);
    }
    text
}

fn collect(dir: &Path, text: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, text);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}
