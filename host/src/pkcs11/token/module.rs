//! Loading a PKCS#11 module once per process, and restarting it (at most every 2 s) to look
//! for a token that had gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::TokenError;
use super::error::words;

/// How often a module may be restarted to look for a token that is not there: a restart
/// ends every session of the module, so a token that stays away must not cause one per handshake.
const RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// A loaded module. Every call into it holds `generation` shared; a restart (`C_Finalize`,
/// `C_Initialize`) holds it exclusively, so it never runs under another call, and bumps it:
/// sessions from an older generation are gone and are never closed (their handles may
/// already name new sessions).
pub(super) struct Module {
    path: PathBuf,
    pub(super) pkcs11: Pkcs11,
    pub(super) generation: RwLock<u64>,
    last_start: Mutex<Instant>,
}

impl Module {
    /// Restarts the module, unless it started less than [`RESTART_INTERVAL`] ago: some
    /// modules (SoftHSM2 among them) list the tokens they found at start only, so a token that
    /// came back is seen only by a new start. Whether it restarted.
    pub(super) fn restart_if_due(&self) -> bool {
        let mut last_start = self.last_start.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last_start.elapsed() < RESTART_INTERVAL {
            return false;
        }
        let mut generation = self.generation.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Finalizing a module that a failed start left uninitialised is refused; that is fine.
        let _ = self.pkcs11.clone().finalize();
        if let Err(error) = initialize(&self.pkcs11) {
            tracing::warn!(module = %self.path.display(), error = %words(&error), "cannot restart the PKCS#11 module; trying again later");
        }
        *generation += 1;
        *last_start = Instant::now();
        true
    }
}

fn initialize(pkcs11: &Pkcs11) -> Result<(), CkError> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The loaded modules, by path. PKCS#11 wants one `C_Initialize` per module per process.
fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

/// The module at `path`, loaded and initialised once.
pub(super) fn module(path: &Path) -> Result<Arc<Module>, TokenError> {
    let mut modules = modules().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    let fail = |reason: String| TokenError::Module { module: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| fail(e.to_string()))?;
    initialize(&pkcs11).map_err(|error| fail(words(&error)))?;
    let module = Arc::new(Module { path: path.to_path_buf(), pkcs11, generation: RwLock::new(0), last_start: Mutex::new(Instant::now()) });
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}
