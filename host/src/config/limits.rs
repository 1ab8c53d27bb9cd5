//! `[limits]`: what each request, instance and connection may use, the keys as written, and
//! how they are read and checked.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Reader};

/// Limits applied to each request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline for a handler; over it the request gets 504. Default 30 s.
    pub request_timeout: Duration,
    /// Linear memory cap per instance; over it the request gets 500. Default 128 MiB.
    pub memory_bytes: usize,
    /// Outbound requests allowed per invocation. Default 32.
    pub max_outbound_requests: u32,
    /// Handler instances (running or warm) the host holds at once; beyond it requests get 503
    /// with `Retry-After`. Default 1,000.
    pub max_instances: u32,
    /// Time a client has to send a request's headers, and how long an idle keep-alive
    /// connection is kept. Default 60 s (nginx: `client_header_timeout` 60 s).
    pub header_timeout: Duration,
    /// Open client connections; beyond it a new connection is answered 503 and closed.
    /// Default 10,000.
    pub max_connections: u32,
    /// Once a response streams, how long it may go without a chunk before the handler is
    /// stopped; a download that makes progress is not cut by `request_timeout`. Default 30 s.
    pub stream_idle_timeout: Duration,
    /// WebSocket tunnels open at once; beyond it an upgrade is answered 503 with
    /// `Retry-After`. Default 1,000.
    pub max_websockets: u32,
    /// How long a WebSocket tunnel may carry nothing, in either direction, before it is
    /// closed. Default 60 s (nginx: `proxy_read_timeout` 60 s).
    pub websocket_idle_timeout: Duration,
}

impl Limits {
    /// The `[limits]` keys whose values differ between `self` and `other`, in the order the
    /// README lists them.
    pub fn changed_keys(&self, other: &Limits) -> Vec<&'static str> {
        // Destructured so that a new limit must be named here too.
        let Limits {
            request_timeout,
            memory_bytes,
            max_outbound_requests,
            max_instances,
            header_timeout,
            max_connections,
            stream_idle_timeout,
            max_websockets,
            websocket_idle_timeout,
        } = *self;
        [
            ("request_timeout_ms", request_timeout != other.request_timeout),
            ("memory_mib", memory_bytes != other.memory_bytes),
            ("max_outbound_requests", max_outbound_requests != other.max_outbound_requests),
            ("max_instances", max_instances != other.max_instances),
            ("header_timeout_ms", header_timeout != other.header_timeout),
            ("max_connections", max_connections != other.max_connections),
            ("stream_idle_timeout_ms", stream_idle_timeout != other.stream_idle_timeout),
            ("max_websockets", max_websockets != other.max_websockets),
            ("websocket_idle_timeout_ms", websocket_idle_timeout != other.websocket_idle_timeout),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            max_outbound_requests: 32,
            max_instances: 1000,
            header_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            stream_idle_timeout: Duration::from_secs(30),
            max_websockets: 1000,
            websocket_idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsToml {
    request_timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
    max_outbound_requests: Option<u32>,
    max_instances: Option<u32>,
    header_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    stream_idle_timeout_ms: Option<u64>,
    max_websockets: Option<u32>,
    websocket_idle_timeout_ms: Option<u64>,
}

impl Reader<'_> {
    /// The `[limits]` table, each value within its range.
    pub(super) fn limits(&self, raw: &LimitsToml) -> Result<Limits, ConfigError> {
        let invalid = |key: String, reason: String| self.invalid(key, reason);
        let defaults = Limits::default();
        let within = |field: &str, value: Option<u64>, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, ConfigError> {
            match value {
                Some(v) if !range.contains(&v) => {
                    Err(invalid(format!("limits.{field}"), format!("{v} is out of range: use {} to {}", range.start(), range.end())))
                }
                other => Ok(other),
            }
        };
        // Every range lies within u32 for counts, so the narrowing below cannot wrap.
        let millis = |field: &str, value: Option<u64>, default: Duration| -> Result<Duration, ConfigError> {
            Ok(within(field, value, 1..=3_600_000)?.map(Duration::from_millis).unwrap_or(default))
        };
        let count = |field: &str, value: Option<u32>, max: u64, default: u32| -> Result<u32, ConfigError> {
            Ok(within(field, value.map(u64::from), 1..=max)?.map(|n| n as u32).unwrap_or(default))
        };
        Ok(Limits {
            request_timeout: millis("request_timeout_ms", raw.request_timeout_ms, defaults.request_timeout)?,
            memory_bytes: within("memory_mib", raw.memory_mib, 1..=4096)?.map(|m| (m as usize) << 20).unwrap_or(defaults.memory_bytes),
            max_outbound_requests: count("max_outbound_requests", raw.max_outbound_requests, 10_000, defaults.max_outbound_requests)?,
            max_instances: count("max_instances", raw.max_instances, 10_000, defaults.max_instances)?,
            header_timeout: millis("header_timeout_ms", raw.header_timeout_ms, defaults.header_timeout)?,
            max_connections: count("max_connections", raw.max_connections, 1_000_000, defaults.max_connections)?,
            stream_idle_timeout: millis("stream_idle_timeout_ms", raw.stream_idle_timeout_ms, defaults.stream_idle_timeout)?,
            max_websockets: count("max_websockets", raw.max_websockets, 1_000_000, defaults.max_websockets)?,
            websocket_idle_timeout: millis("websocket_idle_timeout_ms", raw.websocket_idle_timeout_ms, defaults.websocket_idle_timeout)?,
        })
    }
}
