//! Where one identity keeps the TLS sessions its upstreams gave it, to resume them.
//!
//! TLS 1.3 tickets are single-use, and a pool opens connections in bursts: a batch of
//! callers that each need a new connection to one upstream takes a ticket each, at once.
//! rustls' own cache keeps 8 tickets per server, so the ninth connection of a burst made a
//! full handshake (client certificate, signatures and all): with 32 callers and a connection
//! per request, 30% of handshakes were full ones. This store keeps enough tickets for a
//! burst; servers hand out one or two per handshake (rustls two, OpenSSL two after a full
//! handshake and one after a resumed one), so it refills as fast as it empties. Tickets
//! carry the server's certificate chain (a few KiB each), so those beyond the 8 rustls
//! keeps are for bursts only: one not taken within 30 s is dropped when the store is next
//! used, and an identity that stopped opening connections in bursts soon holds no more than
//! rustls' own cache would.
//!
//! A session authenticates as the certificate that made it, so a store belongs to exactly
//! one identity ([`super::ClientIdentity`] builds one per pool), never shared.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::NamedGroup;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls_pki_types::ServerName;

/// TLS 1.3 tickets kept per server at most: as many connections as a burst opens to one
/// upstream at once (32 callers in the bench), few enough to stay small.
const TICKETS_PER_SERVER: usize = 32;

/// Tickets per server kept however old, as rustls' cache keeps them.
const ALWAYS_KEPT: usize = 8;

/// How long a ticket beyond [`ALWAYS_KEPT`] waits to be taken before it is dropped.
const BURST_TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// Servers remembered, as many as rustls' default cache remembers; the first added is
/// forgotten first.
const SERVERS: usize = 32;

/// An identity's resumable sessions.
#[derive(Debug)]
pub(crate) struct TicketStore {
    /// Key-exchange hints and TLS 1.2 sessions (one per server): rustls' cache does these.
    hints_and_tls12: ClientSessionMemoryCache,
    tls13: Mutex<Tickets>,
}

#[derive(Debug, Default)]
struct Tickets {
    /// When each arrived, and the ticket; newest last.
    by_server: HashMap<ServerName<'static>, VecDeque<(Instant, Tls13ClientSessionValue)>>,
    /// Servers in the order they were first added.
    order: VecDeque<ServerName<'static>>,
}

impl TicketStore {
    pub(crate) fn new() -> Self {
        Self { hints_and_tls12: ClientSessionMemoryCache::new(SERVERS * 8), tls13: Mutex::default() }
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, Tickets> {
        // A panic while holding the lock leaves at worst a ticket too many or too few.
        self.tls13.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.hints_and_tls12.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.hints_and_tls12.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.hints_and_tls12.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.hints_and_tls12.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.hints_and_tls12.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut tickets = self.tickets();
        let Tickets { by_server, order } = &mut *tickets;
        if !by_server.contains_key(&server_name) {
            if order.len() == SERVERS
                && let Some(oldest) = order.pop_front()
            {
                by_server.remove(&oldest);
            }
            order.push_back(server_name.clone());
        }
        let queue = by_server.entry(server_name).or_default();
        let now = Instant::now();
        drop_stale(queue, now);
        if queue.len() == TICKETS_PER_SERVER {
            queue.pop_front();
        }
        queue.push_back((now, value));
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let mut tickets = self.tickets();
        let queue = tickets.by_server.get_mut(server_name)?;
        drop_stale(queue, Instant::now());
        // The newest: the one the server most likely still accepts.
        queue.pop_back().map(|(_, ticket)| ticket)
    }
}

/// Drops the oldest tickets beyond [`ALWAYS_KEPT`] that waited longer than
/// [`BURST_TICKET_LIFETIME`].
fn drop_stale<T>(queue: &mut VecDeque<(Instant, T)>, now: Instant) {
    while queue.len() > ALWAYS_KEPT && queue.front().is_some_and(|(arrived, _)| now.duration_since(*arrived) > BURST_TICKET_LIFETIME) {
        queue.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_beyond_those_rustls_keeps_last_only_for_bursts() {
        let start = Instant::now();
        let old = start.checked_sub(BURST_TICKET_LIFETIME * 2).unwrap_or(start);
        let mut queue: VecDeque<(Instant, usize)> = (0..20).map(|n| (if n < 15 { old } else { start }, n)).collect();
        drop_stale(&mut queue, start);
        // The 12 oldest go; 8 are always kept, here 3 old and the 5 fresh ones.
        assert_eq!(queue.iter().map(|(_, n)| *n).collect::<Vec<_>>(), (12..20).collect::<Vec<_>>());
        let mut fresh: VecDeque<(Instant, usize)> = (0..20).map(|n| (start, n)).collect();
        drop_stale(&mut fresh, start);
        assert_eq!(fresh.len(), 20, "a burst's tickets stay while they are fresh");
    }
}
