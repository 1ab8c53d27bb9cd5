//! `max_connections` against the open-file limit.
//!
//! Every connection is a file descriptor. A process that runs out of them cannot accept, so
//! callers beyond the limit wait in the listen backlog with no answer, instead of the 503 that
//! `max_connections` gives. So at start the host raises its soft limit to the hard limit (as
//! Go's runtime does, and as systemd advises programs that need many files: the low default
//! soft limit exists for `select()`, which nothing here uses), then serves at most as many
//! connections as the limit leaves room for, and says so when that is fewer than configured.

/// Files the host keeps open besides connections: the store and its WAL, the log, listeners,
/// the runtime's epoll and event descriptors, and room for a reload, the compilation cache,
/// revocation fetches and shedding one connection with its 503 (about 20 are open when idle).
pub(crate) const RESERVED_FILES: u64 = 32;

/// How many connections `open_files` descriptors can hold: those left beside
/// [`RESERVED_FILES`], halved because a request may hold an upstream connection as well.
/// `None` is no limit. Never more than `max_connections`, never fewer than one.
pub(crate) fn connection_cap(max_connections: u32, open_files: Option<u64>) -> u32 {
    let Some(open_files) = open_files else { return max_connections };
    let room = open_files.saturating_sub(RESERVED_FILES) / 2;
    u32::try_from(room).unwrap_or(u32::MAX).clamp(1, max_connections.max(1))
}

/// The process's open-file limits, as found at start and after raising the soft one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFileLimit {
    /// The soft limit before raising it (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit in force now.
    pub soft: Option<u64>,
    /// The hard limit, which an unprivileged process cannot raise.
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard one, if it is lower; returns the limits.
#[cfg(unix)]
pub(crate) fn raise_open_file_limit() -> OpenFileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let found = getrlimit(Resource::Nofile);
    let raise = match (found.current, found.maximum) {
        (Some(soft), Some(hard)) => hard > soft,
        // An unlimited hard limit: Linux still refuses more than `fs.nr_open`, and then the
        // soft limit stays as it is.
        (Some(_), None) => true,
        (None, _) => false,
    };
    if raise {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: found.maximum, maximum: found.maximum });
    }
    let now = getrlimit(Resource::Nofile);
    OpenFileLimit { before: found.current, soft: now.current, hard: now.maximum }
}

/// Elsewhere the limit is not known here.
#[cfg(not(unix))]
pub(crate) fn raise_open_file_limit() -> OpenFileLimit {
    OpenFileLimit { before: None, soft: None, hard: None }
}

/// `max_connections` as the open-file limit allows it, after raising that limit; logs what
/// it changed.
pub(crate) fn connection_limit(max_connections: u32) -> u32 {
    let limit = raise_open_file_limit();
    if limit.soft != limit.before
        && let Some(soft) = limit.soft
    {
        let before = limit.before.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        tracing::info!(before = %before, now = soft, "raised the open-file limit to its hard limit");
    }
    let cap = connection_cap(max_connections, limit.soft);
    // The default asks for more than many machines allow (10,000 against a common 20,000
    // files): capping it is routine, worth a line but not a warning at every start.
    let default = max_connections == crate::config::Limits::default().max_connections;
    if cap < max_connections && default {
        tracing::info!(max_connections, serving = cap, "serving at most {cap} connections at a time, as the open-file limit allows");
    } else if cap < max_connections {
        let soft = limit.soft.unwrap_or_default();
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            serving = cap,
            "max_connections = {max_connections} needs more open files than this process may have (limit {soft}): \
             serving at most {cap} connections at a time, which leaves {RESERVED_FILES} files for the store, log and \
             listeners and one for an upstream connection beside each; callers beyond them get 503. Raise the limit \
             (ulimit -n, or LimitNOFILE= in a systemd unit) to serve more"
        );
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_caps_max_connections() {
        // Room beside the reserve, halved for upstream connections.
        assert_eq!(connection_cap(10_000, Some(64)), 16);
        assert_eq!(connection_cap(10_000, Some(1024)), 496);
        // A generous limit, or none, leaves max_connections as configured.
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(3, Some(64)), 3);
        // A limit smaller than the reserve still serves one connection at a time.
        assert_eq!(connection_cap(10_000, Some(10)), 1);
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_limit() {
        let limit = raise_open_file_limit();
        assert!(limit.soft >= limit.before || limit.soft.is_none(), "{limit:?}");
        if let (Some(soft), Some(hard)) = (limit.soft, limit.hard) {
            assert!(soft <= hard, "{limit:?}");
        }
    }
}
