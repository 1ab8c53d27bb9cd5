//! Compiled components kept on disk between runs (wasmtime's cache, keyed by the component's
//! hash and the compiler's settings): a host that starts again with the same `.wasm` files
//! loads them instead of compiling them, which for a 12 MiB JavaScript component is seconds.
//!
//! The cache holds native code that the host will run, so its directory must be writable by
//! this user alone: it is created with mode 0700, and one that others can write is not used.

use std::path::PathBuf;

use wasmtime::{Cache, CacheConfig};

/// The variable that names the directory, or turns the cache off with `off`.
pub const COMPILE_CACHE_ENV: &str = "EDGEMTLS_COMPILE_CACHE";

/// The cache for this process, or `None` (logged) when there is no safe place for one.
pub(in crate::runtime) fn open() -> Option<Cache> {
    let dir = match std::env::var_os(COMPILE_CACHE_ENV) {
        Some(value) if value == "off" => return None,
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => crate::files::cache_home()?.join("edgemtls").join("compiled"),
    };
    let dir = if dir.is_absolute() { dir } else { std::env::current_dir().ok()?.join(dir) };
    if let Err(reason) = private_dir(&dir) {
        tracing::warn!(dir = %dir.display(), %reason, "not caching compiled components (every start compiles them)");
        return None;
    }
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    match Cache::new(config) {
        Ok(cache) => Some(cache),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), error = %format!("{error:#}"), "not caching compiled components");
            None
        }
    }
}

/// Makes `dir` (mode 0700) if it is missing; refuses one that others can write.
fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    crate::files::create_private_dir(dir).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).map_err(|e| e.to_string())?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "it is writable by others (mode {:o}); it would hold code this host runs: chmod go-w it, or set {COMPILE_CACHE_ENV}",
                mode & 0o777
            ));
        }
    }
    Ok(())
}
