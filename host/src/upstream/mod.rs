//! Outbound mutual TLS: trust for upstream servers, and one connection pool per identity.
//!
//! A [`ClientIdentity`] is a client certificate (or none) together with the connection
//! pools that present it. Pools belong to exactly one identity, so a connection opened with
//! one certificate is never reused for a request that named another one, or none: the bug
//! class of proxies that pool by `host:port` alone.

mod connector;
mod dns;
mod failure;
mod probe;
mod request_body;
mod tickets;
mod trust;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use connector::{LastTlsError, PeerGuard, RecentTlsError, RecordingConnector, RevocationGuard, refuse_if_revoked};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use wasmtime_wasi_http::{RequestOptions, WasiBody};

pub use crate::authority::{Authority, default_port};
pub use connector::{Forbidden, ForbiddenPeer, ListeningGuard, OwnListener, forbid_own_listener};
pub use failure::{Attempt, FailureReason, UpstreamFailure, classify};
pub use probe::{ProbeReport, probe};
pub use trust::{HostnameMismatch, PinMismatch, TrustError, TrustProfiles};

/// The HTTP client (and its connection pool) of one identity towards one trust profile.
type PooledClient = Client<RecordingConnector<RevocationGuard<HttpsConnector<PeerGuard<HttpConnector<dns::CachedResolver>>>>>, WasiBody>;

/// The client certificate an outbound request presents, if any.
pub struct Certificate {
    /// Store id of the certificate.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Record version; a change makes a new identity (and new pools).
    pub version: i64,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key that signs the handshakes.
    pub key: CertificateKey,
}

/// Where a client certificate's handshakes are signed.
#[derive(Debug)]
pub enum CertificateKey {
    /// With the unsealed private key. Lives only in host memory.
    Software(PrivateKeyDer<'static>),
    /// In a PKCS#11 token, which keeps the key.
    Token(Arc<crate::pkcs11::TokenKey>),
}

/// A client identity: a certificate (or none) and its connection pools, one per trust profile.
pub struct ClientIdentity {
    certificate: Option<Certificate>,
    trust: Arc<TrustProfiles>,
    clients: Box<[PoolSlot]>,
    /// The latest TLS error any of this identity's connections read.
    recent_tls_error: RecentTlsError,
}

/// Where one trust profile's pool lives. A profile that checks revocation checks each new
/// connection, so its pool is replaced every `crl_cache_ttl`: a server revoked after its
/// connections were pooled is asked again within that time (requests in flight keep theirs).
enum PoolSlot {
    Fixed(OnceLock<PooledClient>),
    Renewed { every: Duration, current: std::sync::Mutex<Option<(std::time::Instant, PooledClient)>> },
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// An identity that presents no client certificate.
    pub fn anonymous(trust: Arc<TrustProfiles>) -> Self {
        Self::new(None, trust)
    }

    /// An identity that presents `certificate`.
    pub fn with_certificate(certificate: Certificate, trust: Arc<TrustProfiles>) -> Self {
        Self::new(Some(certificate), trust)
    }

    fn new(certificate: Option<Certificate>, trust: Arc<TrustProfiles>) -> Self {
        let clients = (0..trust.len())
            .map(|profile| match trust.revocation(profile) {
                Some(revocation) => PoolSlot::Renewed { every: revocation.recheck_every(), current: Default::default() },
                None => PoolSlot::Fixed(OnceLock::new()),
            })
            .collect();
        Self { certificate, trust, clients, recent_tls_error: RecentTlsError::default() }
    }

    /// The certificate name, or `None` for the anonymous identity.
    pub fn name(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.name.as_str())
    }

    /// The certificate's store id, or `None` for the anonymous identity.
    pub fn certificate_id(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.id.as_str())
    }

    /// The trust profiles this identity was built against.
    pub fn trust(&self) -> &Arc<TrustProfiles> {
        &self.trust
    }

    /// The pooled client for `authority`, built on first use (and renewed, see [`PoolSlot`]).
    fn client(&self, authority: &Authority) -> Result<std::borrow::Cow<'_, PooledClient>, UpstreamFailure> {
        let profile = self.trust.profile_for(authority);
        let slot = self.clients.get(profile).ok_or_else(|| UpstreamFailure::new(FailureReason::Other, "trust profile out of range"))?;
        let build = || {
            let ConnectionRules { tls, revocation } = self.rules(profile)?;
            Ok::<_, UpstreamFailure>(build_client(tls, revocation, self.recent_tls_error.clone(), Protocols::Pooled))
        };
        match slot {
            PoolSlot::Fixed(once) => {
                if let Some(client) = once.get() {
                    return Ok(std::borrow::Cow::Borrowed(client));
                }
                let client = build()?;
                Ok(std::borrow::Cow::Borrowed(once.get_or_init(|| client)))
            }
            PoolSlot::Renewed { every, current } => {
                let mut current =
                    current.lock().map_err(|_| UpstreamFailure::new(FailureReason::Other, "connection pool lock poisoned"))?;
                match current.as_ref() {
                    Some((built, client)) if built.elapsed() < *every => Ok(std::borrow::Cow::Owned(client.clone())),
                    _ => {
                        let client = build()?;
                        *current = Some((std::time::Instant::now(), client.clone()));
                        Ok(std::borrow::Cow::Owned(client))
                    }
                }
            }
        }
    }

    /// How this identity connects to `authority`: what the pools use, and what `cert test`
    /// (`probe`) uses, so that a test never passes where serving refuses.
    pub(crate) fn rules_for(&self, authority: &Authority) -> Result<ConnectionRules, UpstreamFailure> {
        self.rules(self.trust.profile_for(authority))
    }

    fn rules(&self, profile: usize) -> Result<ConnectionRules, UpstreamFailure> {
        Ok(ConnectionRules { tls: self.client_config(profile)?, revocation: self.trust.revocation(profile) })
    }

    fn client_config(&self, profile: usize) -> Result<rustls::ClientConfig, UpstreamFailure> {
        let builder = rustls::ClientConfig::builder_with_provider(self.trust.provider())
            .with_protocol_versions(self.trust.tls_versions(profile))
            .map_err(|e| UpstreamFailure::new(FailureReason::Other, format!("cannot configure TLS: {e}")))?
            .dangerous()
            // Our verifier wraps WebPKI verification; see `trust.rs`.
            .with_custom_certificate_verifier(self.trust.verifier(profile));
        let mut config = match &self.certificate {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                // Not `with_client_auth_cert`: its key check parses the leaf with webpki,
                // which refuses X.509 v1 certificates that nginx, curl and OpenSSL servers
                // accept. Import already proved that the key matches the leaf.
                let key = match &cert.key {
                    CertificateKey::Software(key) => self.trust.provider().key_provider.load_private_key(key.clone_key()).map_err(|e| {
                        UpstreamFailure::new(FailureReason::Other, format!("certificate '{}': its key cannot sign: {e}", cert.name))
                    })?,
                    CertificateKey::Token(key) => key.tls_signing_key(),
                };
                let certified = rustls::sign::CertifiedKey::new(cert.chain.clone(), key);
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
            }
        };
        // This identity's own sessions, kept for bursts of new connections; see `tickets.rs`.
        config.resumption = rustls::client::Resumption::store(Arc::new(tickets::TicketStore::new()));
        Ok(config)
    }

    /// Sends `request` through this identity's pool for the request's authority.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, UpstreamFailure> {
        let authority = request_authority(&request)?;
        let client = self.client(&authority)?;
        self.send_with(&client, &authority, request, options).await
    }

    /// Sends `request`, which asks to switch protocols (a WebSocket), over a connection of
    /// its own: made with this identity's certificate and the authority's trust profile as
    /// the pool's are, but offering only HTTP/1.1 in ALPN (an upgrade is HTTP/1.1's) and
    /// never pooled, since the upgraded connection belongs to one tunnel. A 101 answer
    /// carries the upstream's connection, for `hyper::upgrade::on`.
    pub async fn send_upgrade(&self, request: http::Request<WasiBody>) -> Result<http::Response<WasiBody>, UpstreamFailure> {
        let authority = request_authority(&request)?;
        let ConnectionRules { tls, revocation } = self.rules_for(&authority)?;
        let client = build_client(tls, revocation, self.recent_tls_error.clone(), Protocols::UpgradeOnly);
        self.send_with(&client, &authority, request, None).await
    }

    async fn send_with(
        &self,
        client: &PooledClient,
        authority: &Authority,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, UpstreamFailure> {
        let authority = authority.clone();
        let attempt = Attempt { authority: &authority, certificate: self.name() };
        let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + first_byte;
        // A pooled connection the upstream closed just as it was handed out fails the request
        // before any answer; a bodiless GET or HEAD is safe to send again, once.
        let replay = replayable(&request);
        let body_failure = request_body::BodyFailure::default();
        let request = request.map(|body| body_failure.watch(body));
        let started = std::time::Instant::now();
        let mut result = tokio::time::timeout_at(deadline, client.request(request)).await;
        if let (Some(parts), Ok(Err(error))) = (replay, &result)
            && closed_before_answering(error)
        {
            let again = http::Request::from_parts(parts, http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
            result = tokio::time::timeout_at(deadline, client.request(again)).await;
        }
        let response = match result {
            // The request's own body failed: the cause is on our side, whatever hyper says.
            Ok(Err(_)) if let Some(cause) = body_failure.cause() => {
                return Err(UpstreamFailure::new(
                    FailureReason::RequestBodyFailed,
                    format!(
                        "the request body failed while it was sent to {authority}: {cause} (its caller went away, or its handler stopped writing it)"
                    ),
                ));
            }
            // The connection's own TLS error, when it recorded one, is the real cause; an error
            // tied to no connection takes one that a connection to the same upstream read
            // while this request was under way.
            Ok(result) => {
                result.map_err(|e| match LastTlsError::of(&e).or_else(|| self.recent_tls_error.since(started, &authority.to_string())) {
                    Some(tls) => classify(&tls, &attempt),
                    None => classify(&e, &attempt),
                })?
            }
            Err(_) => return Err(UpstreamFailure::response_timeout(&attempt, first_byte)),
        };
        Ok(response.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
    }
}

/// Everything a new connection of one identity to one trust profile is made with.
pub(crate) struct ConnectionRules {
    /// The profile's TLS versions and verifier (CA bundle, CRL files, pins, hostname check)
    /// with the identity's certificate.
    pub(crate) tls: rustls::ClientConfig,
    /// The profile's revocation checking, run after the handshake and before any request.
    pub(crate) revocation: Option<Arc<crate::revocation::UpstreamRevocation>>,
}

/// The parts of a GET or HEAD without a body, to send it again; `None` for anything else.
fn replayable(request: &http::Request<WasiBody>) -> Option<http::request::Parts> {
    let bodiless = request.headers().get(http::header::TRANSFER_ENCODING).is_none()
        && request.headers().get(http::header::CONTENT_LENGTH).is_none_or(|length| length == "0");
    if !(bodiless && matches!(*request.method(), http::Method::GET | http::Method::HEAD)) {
        return None;
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    Some(parts)
}

/// Whether the connection closed before any response: hyper's "incomplete message", or a
/// pooled HTTP/2 connection that had already ended when the request was handed to it
/// ("channel closed": an upstream that refused an earlier request's certificate after the
/// handshake closes the connection that request shared).
fn closed_before_answering(error: &hyper_util::client::legacy::Error) -> bool {
    crate::error_chain::causes(error)
        .find_map(|cause| cause.downcast_ref::<hyper::Error>())
        .is_some_and(|hyper_error| hyper_error.is_incomplete_message() || hyper_error.is_closed())
}

fn request_authority(request: &http::Request<WasiBody>) -> Result<Authority, UpstreamFailure> {
    let uri = request.uri();
    Authority::of(uri).ok_or_else(|| UpstreamFailure::new(FailureReason::InvalidRequest, format!("the URL '{uri}' has no host")))
}

/// What a client's connections offer and whether they are kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocols {
    /// HTTP/2 or HTTP/1.1 as ALPN decides, pooled.
    Pooled,
    /// HTTP/1.1 only, one connection per request, none kept: for an upgrade.
    UpgradeOnly,
}

fn build_client(
    config: rustls::ClientConfig,
    revocation: Option<Arc<crate::revocation::UpstreamRevocation>>,
    recent: RecentTlsError,
    protocols: Protocols,
) -> PooledClient {
    let mut http = HttpConnector::new_with_resolver(dns::CachedResolver::shared());
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let connector = match protocols {
        Protocols::Pooled => builder.enable_all_versions().wrap_connector(PeerGuard(http)),
        Protocols::UpgradeOnly => builder.enable_http1().wrap_connector(PeerGuard(http)),
    };
    let connector = RevocationGuard { inner: connector, revocation };
    let mut client = Client::builder(TokioExecutor::new());
    client.pool_idle_timeout(Duration::from_secs(90));
    if protocols == Protocols::UpgradeOnly {
        client.pool_max_idle_per_host(0);
    }
    client.build(RecordingConnector { inner: connector, recent })
}
