//! The async bridge: the store's API is synchronous and is called from plain threads and
//! async tasks alike, so PostgreSQL connections live on a one-thread runtime of their own and
//! a call waits for its answer there, at most [`QUERY_TIMEOUT`].

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// The longest any one statement (or connecting) may take before the store is called unreachable.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The runtime every PostgreSQL connection of this process lives on.
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("edgemtls-postgres")
                .enable_all()
                .build()
                .map_err(|error| format!("cannot start the PostgreSQL client: {error}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Waits for `future` from any thread (async or not), at most [`QUERY_TIMEOUT`].
pub(super) fn wait<T>(future: impl Future<Output = T>) -> Result<T, Timeout> {
    let runtime = runtime().map_err(|_| Timeout)?;
    // The timer belongs to the PostgreSQL runtime, whose thread drives it and the sockets;
    // this thread only waits.
    let timed = {
        let _context = runtime.enter();
        tokio::time::timeout(QUERY_TIMEOUT, future)
    };
    futures_executor::block_on(timed).map_err(|_| Timeout)
}

/// A statement or connection attempt took longer than [`QUERY_TIMEOUT`].
pub(super) struct Timeout;
