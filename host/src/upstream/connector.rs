//! The connector under every upstream pool: it refuses peers no guest may reach, and its
//! connections remember the TLS error that ended them.
//!
//! Forbidden peers are link-local addresses (cloud metadata services live at 169.254.169.254),
//! unspecified addresses, and this process's own listeners (the admin listener, and the one
//! serving routes: a route calling its own host would multiply every request until the host
//! is busy), whatever name or address the request used: the check is on the address actually
//! connected to, before any request byte is sent.
//!
//! A TLS 1.3 server refuses a client certificate after the handshake, so the alert fails a
//! later read inside the connection's task, not the request. By the time the request fails,
//! hyper's client has reduced that cause to "connection was not ready" or, over HTTP/2, to
//! text. Each connection therefore records the first TLS error it reads and hands the record
//! to the client as connection info, which every client error carries.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpInfo};

use super::Authority;

/// This process's listeners: the addresses its own guests must never reach. Process-wide
/// because it is a fact about the process (what it listens on), shared by every config
/// version and pool.
static OWN_LISTENERS: RwLock<Vec<(SocketAddr, OwnListener)>> = RwLock::new(Vec::new());

/// Which of this process's listeners an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnListener {
    /// `admin_listen`: `/healthz`, `/metrics`, `POST /reload`.
    Admin,
    /// `listen`: the routes (over TLS when `[tls]` is set).
    Routes,
}

/// Records that this process listens on `addr` until the returned guard is dropped (then a
/// later listener or upstream may use the port again).
pub fn forbid_own_listener(addr: SocketAddr, listener: OwnListener) -> ListeningGuard {
    if let Ok(mut listeners) = OWN_LISTENERS.write() {
        listeners.push((addr, listener));
    }
    ListeningGuard { addr, listener }
}

/// Keeps a listener forbidden to guests while it lives; see [`forbid_own_listener`].
#[derive(Debug)]
#[must_use = "the listener is forbidden only while the guard lives"]
pub struct ListeningGuard {
    addr: SocketAddr,
    listener: OwnListener,
}

impl Drop for ListeningGuard {
    fn drop(&mut self) {
        if let Ok(mut listeners) = OWN_LISTENERS.write()
            && let Some(index) = listeners.iter().position(|entry| *entry == (self.addr, self.listener))
        {
            listeners.swap_remove(index);
        }
    }
}

/// A connection to a peer no guest may reach.
#[derive(Debug, thiserror::Error)]
#[error("{peer} may not be called from a handler: it {why}")]
pub struct ForbiddenPeer {
    /// The address connected to.
    pub peer: SocketAddr,
    /// Why.
    pub why: Forbidden,
}

/// Why a guest may not reach a peer; displays as the end of a sentence ("it ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Forbidden {
    /// A link-local address or a cloud metadata service.
    #[error("is link-local or a cloud metadata address")]
    Metadata,
    /// `0.0.0.0` or `::`.
    #[error("is an unspecified address")]
    Unspecified,
    /// This host's `admin_listen`.
    #[error("is this host's admin listener")]
    AdminListener,
    /// This host's own `listen`: the request would come back to this host.
    #[error("is this host's own listener, so the request would come back to this host (a loop)")]
    OwnListener,
}

/// Cloud metadata services that are not link-local: AWS over IPv6, Alibaba Cloud.
const METADATA_ADDRESSES: &[IpAddr] =
    &[IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200))];

/// Why a guest may not reach `peer`, if it may not. `local` is our side of an established
/// connection: a peer with our own address is this host, whichever interface it used.
fn forbidden(peer: SocketAddr, local: Option<IpAddr>) -> Option<Forbidden> {
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let ip = unmapped(peer.ip());
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local || METADATA_ADDRESSES.contains(&ip) {
        return Some(Forbidden::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    let this_host = ip.is_loopback() || local.map(unmapped) == Some(ip);
    // A listener on 0.0.0.0 or :: is reached through any address of this host, one on a
    // loopback address through any loopback address (the kernel refuses the others, but
    // refusing them here says why).
    let reaches = |listener: &SocketAddr| {
        let listener_ip = unmapped(listener.ip());
        listener.port() == peer.port() && (listener_ip == ip || ((listener_ip.is_unspecified() || listener_ip.is_loopback()) && this_host))
    };
    let listeners = OWN_LISTENERS.read().ok()?;
    let (_, which) = listeners.iter().find(|(addr, _)| reaches(addr))?;
    Some(match which {
        OwnListener::Admin => Forbidden::AdminListener,
        OwnListener::Routes => Forbidden::OwnListener,
    })
}

/// The first TLS error a connection read, shared with the client as connection info (and
/// passed on to its identity's [`RecentTlsError`]).
#[derive(Clone, Default)]
pub(crate) struct LastTlsError {
    first: Arc<Mutex<Option<rustls::Error>>>,
    authority: String,
    recent: RecentTlsError,
}

impl LastTlsError {
    fn record(&self, error: &std::io::Error) {
        if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            self.record_tls(tls);
        }
    }

    fn record_tls(&self, tls: &rustls::Error) {
        if let Ok(mut slot) = self.first.lock()
            && slot.is_none()
        {
            *slot = Some(tls.clone());
            self.recent.record(&self.authority, tls);
        }
    }

    fn recorded(&self) -> bool {
        self.first.lock().map_or(true, |first| first.is_some())
    }

    /// The recorded error of the connection a client error happened on, if any.
    pub(crate) fn of(error: &hyper_util::client::legacy::Error) -> Option<rustls::Error> {
        let mut extensions = http::Extensions::new();
        error.connect_info()?.get_extras(&mut extensions);
        let recorded = extensions.get::<LastTlsError>()?;
        recorded.first.lock().ok()?.clone()
    }
}

/// Wraps the TCP connector: refuses forbidden peers after the TCP connect and before TLS, so
/// a refused peer never sees our server name or certificate (address literals are refused
/// before any packet is sent).
#[derive(Clone)]
pub(crate) struct PeerGuard<C>(pub(crate) C);

fn refused(peer: SocketAddr, why: Forbidden) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, ForbiddenPeer { peer, why })
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<http::Uri> for PeerGuard<C>
where
    C: tower_service::Service<http::Uri>,
    C::Response: Connection,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let literal = Authority::of(&uri).and_then(|a| Some(SocketAddr::new(a.ip()?, a.port())));
        if let Some(peer) = literal
            && let Some(why) = forbidden(peer, None)
        {
            return Box::pin(async move { Err(refused(peer, why).into()) });
        }
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let connection = connecting.await.map_err(Into::into)?;
            let mut extras = http::Extensions::new();
            connection.connected().get_extras(&mut extras);
            if let Some(info) = extras.get::<HttpInfo>()
                && let Some(why) = forbidden(info.remote_addr(), Some(info.local_addr().ip()))
            {
                return Err(refused(info.remote_addr(), why).into());
            }
            Ok(connection)
        })
    }
}

/// Wraps the TLS connector: when the connection's trust profile checks revocation, asks the
/// server certificate's issuer (`revocation::UpstreamRevocation`) after the handshake and
/// before the connection is handed to the pool, so no request is sent to a revoked server.
#[derive(Clone)]
pub(crate) struct RevocationGuard<C> {
    pub(crate) inner: C,
    pub(crate) revocation: Option<Arc<crate::revocation::UpstreamRevocation>>,
}

type TlsOverTcp = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

impl<C> tower_service::Service<http::Uri> for RevocationGuard<C>
where
    C: tower_service::Service<http::Uri, Response = TlsOverTcp>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = TlsOverTcp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let authority = Authority::of(&uri).map(|a| a.to_string()).unwrap_or_else(|| uri.to_string());
        let connecting = self.inner.call(uri);
        let revocation = self.revocation.clone();
        Box::pin(async move {
            let connection = connecting.await.map_err(Into::into)?;
            if let hyper_rustls::MaybeHttpsStream::Https(tls) = &connection {
                refuse_if_revoked(revocation.as_deref(), &authority, tls.inner().get_ref().1).await?;
            }
            Ok(connection)
        })
    }
}

/// Asks the issuer of the certificate `session`'s server presented, when `revocation` is
/// set; a revoked (or, without soft-fail, unknown) one fails the connection with the
/// [`RevocationRefusal`](crate::revocation::RevocationRefusal) that `classify` reads.
pub(crate) async fn refuse_if_revoked(
    revocation: Option<&crate::revocation::UpstreamRevocation>,
    authority: &str,
    session: &rustls::ClientConnection,
) -> std::io::Result<()> {
    let Some(revocation) = revocation else { return Ok(()) };
    let chain = session.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    revocation.check(authority, &chain).await.map_err(|refusal| std::io::Error::new(std::io::ErrorKind::PermissionDenied, refusal))
}

/// The latest TLS error any connection of one identity read, with the authority it was
/// connected to and when. A request that fails before hyper tied it to a connection (a new
/// HTTP/2 connection that ended before the request could be sent) carries no connection
/// info, so its cause is looked up here instead.
#[derive(Clone, Default)]
pub(crate) struct RecentTlsError(Arc<Mutex<Option<(std::time::Instant, String, rustls::Error)>>>);

impl RecentTlsError {
    fn record(&self, authority: &str, error: &rustls::Error) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((std::time::Instant::now(), authority.to_string(), error.clone()));
        }
    }

    /// The TLS error a connection to `authority` read at or after `since`, if any.
    pub(crate) fn since(&self, since: std::time::Instant, authority: &str) -> Option<rustls::Error> {
        let slot = self.0.lock().ok()?;
        let (at, seen, error) = slot.as_ref()?;
        (*at >= since && seen == authority).then(|| error.clone())
    }
}

/// Wraps the TLS connector so that each of its connections records its TLS error, for the
/// connection and for the identity.
#[derive(Clone)]
pub(crate) struct RecordingConnector<C> {
    pub(crate) inner: C,
    pub(crate) recent: RecentTlsError,
}

impl<C> tower_service::Service<http::Uri> for RecordingConnector<C>
where
    C: tower_service::Service<http::Uri, Response = TlsOverTcp>,
    C::Future: Send + 'static,
{
    type Response = Recording;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let authority = Authority::of(&uri).map(|a| a.to_string()).unwrap_or_default();
        let last = LastTlsError { first: Arc::default(), authority, recent: self.recent.clone() };
        let connecting = self.inner.call(uri);
        Box::pin(async move { Ok(Recording { inner: connecting.await?, last }) })
    }
}

/// A connection that records its first TLS error.
pub(crate) struct Recording {
    inner: TlsOverTcp,
    last: LastTlsError,
}

impl Recording {
    /// A write failed. When the upstream closed the connection with a reason, that reason
    /// may be unread: a TLS 1.3 server checks our client certificate after our side of the
    /// handshake has ended, refuses it with an alert and closes, and the request's bytes then
    /// meet a reset. The alert is in the socket's receive queue, where no read has reached
    /// it yet (the runtime has not seen the socket readable), and it is the failure, not the
    /// lost connection: hand what the socket holds to rustls. The connection is dead either
    /// way, so nothing read here is wanted otherwise.
    fn write_failed(&mut self, error: &std::io::Error) {
        self.last.record(error);
        if self.last.recorded() {
            return;
        }
        let hyper_rustls::MaybeHttpsStream::Https(tls) = &mut self.inner else { return };
        let (tcp, session) = tls.inner_mut().get_mut();
        let socket = socket2::SockRef::from(tcp.inner().inner());
        let mut received = [0u8; 4096];
        // A few reads at most: the alert comes first, as the upstream sent nothing else.
        for _ in 0..4 {
            // The socket does not block: an empty queue is `WouldBlock`, and ends this.
            let Ok(length @ 1..) = std::io::Read::read(&mut &*socket, &mut received) else { return };
            if session.read_tls(&mut &received[..length]).is_err() {
                return;
            }
            if let Err(tls_error) = session.process_new_packets() {
                return self.last.record_tls(&tls_error);
            }
        }
    }
}

impl Connection for Recording {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.last.clone())
    }
}

impl Read for Recording {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(error)) = &poll {
            self.last.record(error);
        }
        poll
    }
}

impl Write for Recording {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(error)) = &poll {
            self.write_failed(error);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(error)) = &poll {
            self.write_failed(error);
        }
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(error)) = &poll {
            self.write_failed(error);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_tls_error_counts_only_for_its_upstream_and_after_the_request_began() {
        let recent = RecentTlsError::default();
        let before = std::time::Instant::now();
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        recent.record("billing.internal:443", &alert);
        assert_eq!(recent.since(before, "billing.internal:443"), Some(alert));
        assert_eq!(recent.since(before, "other.internal:443"), None);
        assert_eq!(recent.since(std::time::Instant::now() + std::time::Duration::from_secs(1), "billing.internal:443"), None);
    }

    #[test]
    fn a_listener_on_every_address_is_reached_through_any_address_of_this_host() {
        // A port no other test of this process listens on (the list is process-wide).
        let port = 7;
        let peer = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
        let local = |ip: &str| Some(ip.parse::<IpAddr>().unwrap());
        let guard = forbid_own_listener(peer("0.0.0.0"), OwnListener::Routes);
        for (to, from) in
            [("127.0.0.1", None), ("127.0.0.5", None), ("::1", None), ("::ffff:127.0.0.1", None), ("10.1.2.3", local("10.1.2.3"))]
        {
            assert_eq!(forbidden(peer(to), from), Some(Forbidden::OwnListener), "{to}");
        }
        // Another machine with that port, and another port here, are not this listener.
        assert_eq!(forbidden(peer("10.1.2.3"), local("10.9.9.9")), None);
        assert_eq!(forbidden(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port + 1), None), None);
        drop(guard);
        assert_eq!(forbidden(peer("127.0.0.1"), None), None, "a stopped listener's port is free again");
    }
}
