//! Where one identity keeps the TLS sessions its upstreams gave it, to resume them.
//!
//! TLS 1.3 tickets are single-use, and a pool opens connections in bursts: a batch of
//! callers that each need a new connection to one upstream takes a ticket each, at once.
//! rustls' own cache keeps 8 tickets per server, so the ninth connection of a burst made a
//! full handshake (client certificate, signatures and all): with 32 callers and a connection
//! per request, 30% of handshakes were full ones. This store keeps enough tickets for a
//! burst; servers hand out two per handshake (rustls and OpenSSL both), so it refills as
//! fast as it empties.
//!
//! A session authenticates as the certificate that made it, so a store belongs to exactly
//! one identity ([`super::ClientIdentity`] builds one per pool), never shared.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// TLS 1.3 tickets kept per server: more than the connections a burst opens to one upstream
/// on a busy host, few enough to stay small (a ticket is a few hundred bytes).
const TICKETS_PER_SERVER: usize = 64;

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
    /// Newest last.
    by_server: HashMap<ServerName<'static>, VecDeque<Tls13ClientSessionValue>>,
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
        if queue.len() == TICKETS_PER_SERVER {
            queue.pop_front();
        }
        queue.push_back(value);
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest: the one the server most likely still accepts.
        self.tickets().by_server.get_mut(server_name)?.pop_back()
    }
}
