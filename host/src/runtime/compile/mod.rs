//! Components compiled and prepared for instantiation: once per distinct content in this
//! process (a reload that keeps a `.wasm` file does not compile it again), and across runs
//! through wasmtime's cache on disk (`disk.rs`).

pub(super) mod disk;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{HandlerError, HostState, Runtime};

/// How many compiled components the cache keeps (a reload only recompiles beyond this).
const COMPILED_CACHE_ENTRIES: usize = 256;

/// The largest component file `load` reads.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

impl Runtime {
    /// Compiles a route's component (built-in or file) and prepares it for instantiation.
    pub fn load_source(&self, source: &crate::config::ComponentSource) -> Result<ProxyPre<HostState>, HandlerError> {
        match source {
            crate::config::ComponentSource::Builtin(builtin) => {
                self.load_bytes(Path::new(&format!("<built-in {}>", builtin.name)), builtin.wasm)
            }
            crate::config::ComponentSource::File(path) => self.load(path),
        }
    }

    /// Compiles a component file and prepares it for instantiation. Only regular files of
    /// at most [`MAX_COMPONENT_BYTES`] are read (never a FIFO or a device).
    pub fn load(&self, path: &Path) -> Result<ProxyPre<HostState>, HandlerError> {
        let load_error = |reason: String| HandlerError::Load { path: path.to_path_buf(), reason };
        let bytes = crate::files::read_regular_file(path, MAX_COMPONENT_BYTES).map_err(|e| load_error(e.to_string()))?;
        self.load_bytes(path, &bytes)
    }

    /// Compiles component bytes, or takes them from the cache when the same bytes were
    /// compiled before; `path` names them in errors.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<ProxyPre<HostState>, HandlerError> {
        // SHA-256 output is always 32 bytes.
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        if let Some(pre) = self.cache().get(&digest) {
            return Ok(pre.clone());
        }
        let load_error = |reason: String| HandlerError::Load { path: path.to_path_buf(), reason };
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(&self.engine, bytes).map_err(|e| load_error(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| load_error(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| load_error(format!("not a wasi:http/proxy component: {e:#}")))?;
        let mut cache = self.cache();
        if cache.len() >= COMPILED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, pre.clone());
        Ok(pre)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ProxyPre<HostState>>> {
        match self.compiled.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How many components this runtime has compiled (cache hits do not count).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }
}
