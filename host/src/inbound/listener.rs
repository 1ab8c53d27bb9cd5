//! The TLS side of the listener: the server certificate, the callers' trust (CAs and CRLs),
//! the handshake, and reloading all of it when its files change.
//!
//! The handshake proves that a caller holds the key of the certificate it presents, but it
//! does not decide whether that certificate is trusted: the chain is verified right after,
//! once per connection, so that a refused caller gets a 401 problem that says why (expired,
//! unknown issuer, revoked) instead of a bare TLS alert. It is verified again at the next
//! request after the CAs or CRLs change (each load of them has a version) or the
//! certificate expires.
//!
//! With `[tls] revocation`, a chain that verifies is then put to its issuer (OCSP, the CRLs
//! its certificate names: `revocation/`, shared with upstreams, so its cache and one-fetch-
//! at-a-time hold across both), and put again at the first request after the CRL cache TTL.
//! The question is asked on the connection's own task, each source within the configured
//! timeout: a slow responder delays that caller, never the other connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::caller::{Caller, CallerProblem};
use crate::config::{ClientAuth, TlsListener};
use crate::pki::version1;

/// The largest certificate, key, CA or CRL file read.
const MAX_TLS_FILE_BYTES: u64 = 32 << 20;

/// Why the TLS listener cannot be set up from its files.
#[derive(Debug, Clone, thiserror::Error)]
#[error("[tls] {key} '{path}': {reason}", path = path.display())]
pub struct TlsSetupError {
    /// The key in `[tls]` that names the file.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why, in plain words.
    pub reason: String,
}

/// Why a handshake did not complete; the label of `edgemtls_inbound_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The caller sent nothing (or not enough) within the header timeout.
    Timeout,
    /// The caller closed the connection.
    Closed,
    /// No TLS version, cipher suite or signature scheme in common.
    Incompatible,
    /// The caller's CertificateVerify does not match its certificate.
    BadClientSignature,
    /// The caller sent an alert.
    AlertReceived,
    /// Anything else the caller got wrong (not TLS, bad messages).
    Protocol,
}

impl HandshakeFailure {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Incompatible => "incompatible",
            Self::BadClientSignature => "bad-client-signature",
            Self::AlertReceived => "alert-received",
            Self::Protocol => "protocol",
        }
    }

    fn of(error: &std::io::Error) -> Self {
        let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
            return match error.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Self::Closed,
                _ => Self::Protocol,
            };
        };
        match tls {
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => Self::Incompatible,
            rustls::Error::AlertReceived(_) => Self::AlertReceived,
            rustls::Error::InvalidCertificate(_) => Self::BadClientSignature,
            _ => Self::Protocol,
        }
    }
}

/// An accepted TLS connection: the stream, the negotiated protocol and the caller.
pub struct Accepted {
    /// The decrypted stream.
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// Whether ALPN chose HTTP/2.
    pub http2: bool,
    /// Who is calling.
    pub caller: Caller,
}

/// Numbers each [`Loaded`], so a connection can tell that the trust its caller was verified
/// with has been replaced.
static TRUST_VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The server's TLS settings as loaded from their files.
struct Loaded {
    /// This load's number (see [`TRUST_VERSIONS`]).
    version: u64,
    settings: TlsListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// Verifies callers' chains after the handshake; `None` when `client_auth = "none"`.
    callers: Option<Arc<dyn ClientCertVerifier>>,
    /// Asks the issuers of verified callers' certificates; `None` when `revocation` is off.
    revocation: Option<Arc<crate::revocation::UpstreamRevocation>>,
    /// When each file was last changed, to notice a change.
    stamps: Vec<Option<SystemTime>>,
}

/// New settings read from their files, not yet serving.
pub struct PreparedTls(Arc<Loaded>);

/// The TLS listener's state: swapped whole when its files or the config change.
pub struct InboundTls {
    current: ArcSwap<Loaded>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for InboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTls").field("client_auth", &self.current.load().settings.client_auth).finish_non_exhaustive()
    }
}

impl InboundTls {
    /// Reads the certificate, key, CAs and CRLs that `settings` names.
    pub fn load(settings: &TlsListener) -> Result<Self, TlsSetupError> {
        if settings.revocation.checks() && settings.revocation.soft_fail {
            tracing::warn!("[tls] revocation_soft_fail = true admits a caller when its certificate's revocation status cannot be learned");
        }
        Ok(Self { current: ArcSwap::from_pointee(Loaded::read(settings)?), reloading: Mutex::new(()) })
    }

    /// Reads the files of new settings (a config reload), to [`install`](Self::install)
    /// once the rest of the config is valid too.
    pub fn prepare(settings: &TlsListener) -> Result<PreparedTls, TlsSetupError> {
        Ok(PreparedTls(Arc::new(Loaded::read(settings)?)))
    }

    /// Serves new connections with `prepared`.
    pub fn install(&self, prepared: PreparedTls) {
        let _one = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.current.store(prepared.0);
    }

    /// Reads the files again if any changed since they were loaded. A bad new file is
    /// logged, and the listener keeps what it had: a certificate being replaced file by
    /// file is picked up once the set is consistent.
    pub fn reload_if_changed(&self) {
        let _one = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        if stamps(&current.settings) == current.stamps {
            return;
        }
        match Loaded::read(&current.settings) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                tracing::info!("the TLS listener's certificate, key, CA or CRL files changed; reloaded them");
            }
            Err(error) => {
                crate::warn_limited!(%error, "the TLS listener's files changed but cannot be used; still serving with the previous ones")
            }
        }
    }

    /// The listener's `client_auth` and loopback exemption.
    pub fn rule(&self) -> super::ListenerRule {
        let current = self.current.load();
        super::ListenerRule { client_auth: current.settings.client_auth, exempt_loopback: current.settings.client_auth_exempt_loopback }
    }

    /// Completes the handshake (within `timeout`) and verifies the caller's certificate.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Result<Accepted, HandshakeFailure> {
        let current = self.current.load_full();
        let stream = match tokio::time::timeout(timeout, current.acceptor.accept(stream)).await {
            Err(_elapsed) => return Err(HandshakeFailure::Timeout),
            Ok(Err(error)) => return Err(HandshakeFailure::of(&error)),
            Ok(Ok(stream)) => stream,
        };
        let (_, connection) = stream.get_ref();
        let http2 = connection.alpn_protocol() == Some(b"h2");
        let chain = connection.peer_certificates().filter(|chain| !chain.is_empty()).map(<[CertificateDer<'static>]>::to_vec);
        let caller = match (chain, &current.callers) {
            (Some(chain), Some(verifier)) => judge(&current, verifier, &chain).await,
            _ => Caller::anonymous(),
        };
        Ok(Accepted { stream, http2, caller })
    }

    /// The caller of a connection as the listener sees it now: `None` while its verdict
    /// still holds, else verified again. A CRL that revokes it, or a CA taken out of
    /// `client_ca`, takes effect at its next request, not its next connection; so does the
    /// end of its certificate's validity, and (with `revocation`) what its issuer says once
    /// the CRL cache TTL has passed since it was last asked.
    pub async fn recheck(&self, caller: &Caller) -> Option<Caller> {
        let chain = caller.chain.as_ref()?;
        let current = self.current.load_full();
        let expired = time::OffsetDateTime::now_utc().unix_timestamp() > caller.valid_until;
        let ask_again = caller.revocation_due.is_some_and(|due| Instant::now() >= due);
        if caller.trust_version == current.version && !expired && !ask_again {
            return None;
        }
        Some(match &current.callers {
            Some(verifier) => judge(&current, verifier, chain).await,
            // client_auth = "none" now: nothing is verified, so nothing is vouched for.
            None => Caller::presented(
                chain,
                Err(CallerProblem::Invalid("the listener no longer verifies client certificates".into())),
                current.version,
            ),
        })
    }
}

/// The caller that presented `chain`, as `current` judges it: its chain verified, then,
/// when that holds and `revocation` is on, its issuer asked.
async fn judge(current: &Loaded, verifier: &Arc<dyn ClientCertVerifier>, chain: &[CertificateDer<'static>]) -> Caller {
    let verified = verdict(verifier, chain);
    let Some(revocation) = current.revocation.as_ref().filter(|_| verified.is_ok()) else {
        return Caller::presented(chain, verified, current.version);
    };
    let subject = X509Certificate::from_der(&chain[0]).map(|(_, leaf)| super::caller::rfc4514(leaf.subject())).unwrap_or_default();
    let asked = revocation
        .check_caller(&subject, chain)
        .await
        .map_err(|refusal| if refusal.revoked { CallerProblem::Revoked } else { CallerProblem::RevocationUnknown(refusal.detail) });
    let mut caller = Caller::presented(chain, asked, current.version);
    caller.revocation_due = Some(Instant::now() + revocation.recheck_every());
    caller
}

fn verdict(verifier: &Arc<dyn ClientCertVerifier>, chain: &[CertificateDer<'static>]) -> Result<(), CallerProblem> {
    verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map(|_| ()).map_err(|error| CallerProblem::from_tls(&error))
}

fn stamps(settings: &TlsListener) -> Vec<Option<SystemTime>> {
    settings.files().map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok()).collect()
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    crate::files::read_regular_file(path, MAX_TLS_FILE_BYTES).map_err(|e| TlsSetupError {
        key,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Loaded {
    fn read(settings: &TlsListener) -> Result<Self, TlsSetupError> {
        // Stamps first: a file changed while it is read is read again at the next check.
        let stamps = stamps(settings);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let fail = |key: &'static str, path: &Path, reason: String| TlsSetupError { key, path: path.to_path_buf(), reason };

        let chain =
            crate::pki::pem::certificates(&read("cert", &settings.cert)?).map_err(|e| fail("cert", &settings.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(fail(
                "cert",
                &settings.cert,
                "no CERTIFICATE section; give the server's certificate chain as PEM, leaf first".into(),
            ));
        }
        let key = crate::pki::pem::private_key(&read("key", &settings.key)?).map_err(|e| fail("key", &settings.key, e.to_string()))?;

        let callers = match settings.client_auth {
            ClientAuth::None => None,
            ClientAuth::Optional | ClientAuth::Required => Some(caller_verifier(settings, &provider)?),
        };
        let handshake: Arc<dyn ClientCertVerifier> = match &callers {
            Some(verifier) => {
                Arc::new(DeferredClientVerifier { inner: verifier.clone(), algorithms: provider.signature_verification_algorithms })
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("cert", &settings.cert, e.to_string()))?
            .with_client_cert_verifier(handshake)
            .with_single_cert(chain, key)
            .map_err(|error| {
                let reason = match error {
                    rustls::Error::InconsistentKeys(_) => "the key in tls.key does not belong to this certificate".to_string(),
                    // Not served: most clients (Python, Go, browsers, rustls) refuse a
                    // version 1 server certificate too, since it names no host (no subjectAltName).
                    rustls::Error::InvalidCertificate(error) if version1::is_version_1_error(&error) => {
                        format!("cannot be used as a server certificate: {}", version1::explanation(version1::Role::Server))
                    }
                    other => format!("cannot be used as a server certificate: {other}"),
                };
                fail("cert", &settings.cert, reason)
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let revocation = match (&callers, settings.revocation.checks()) {
            (Some(_), true) => Some(Arc::new(caller_revocation(settings)?)),
            _ => None,
        };
        let version = TRUST_VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            version,
            settings: settings.clone(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            callers,
            revocation,
            stamps,
        })
    }
}

/// WebPKI verification of callers' chains: `client_ca` as roots, the `clientAuth` usage,
/// validity dates, and the CRLs (a caller whose issuer has no CRL here is not refused for it).
fn caller_verifier(settings: &TlsListener, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for path in &settings.client_ca {
        crate::pki::trust_files::add_ca_bundle(path, &mut roots).map_err(|reason| TlsSetupError {
            key: "client_ca",
            path: path.clone(),
            reason,
        })?;
    }
    let mut crls = Vec::new();
    for path in &settings.crl {
        crls.extend(crate::pki::trust_files::read_crls(path, provider).map_err(|reason| TlsSetupError {
            key: "crl",
            path: path.clone(),
            reason,
        })?);
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    // Every CA and CRL was checked above: what is left is a bundle with no root at all,
    // which `[tls]` parsing already refuses.
    builder.build().map_err(|_| TlsSetupError {
        key: "client_ca",
        path: settings.client_ca.first().cloned().unwrap_or_default(),
        reason: "no CA certificate to verify callers with".into(),
    })
}

/// The revocation checking of `[tls] revocation`, with the `client_ca` certificates to find
/// a caller's issuer in when the caller does not send it.
fn caller_revocation(settings: &TlsListener) -> Result<crate::revocation::UpstreamRevocation, TlsSetupError> {
    let mut client_cas = Vec::new();
    for path in &settings.client_ca {
        client_cas.extend(crate::pki::trust_files::read_ca_bundle(path).map_err(|reason| TlsSetupError {
            key: "client_ca",
            path: path.clone(),
            reason,
        })?);
    }
    Ok(crate::revocation::UpstreamRevocation::for_callers(settings.revocation, client_cas))
}

/// Asks for a client certificate and checks the caller's proof of its key, but leaves the
/// chain to [`InboundTls::accept`] (see the module docs).
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// To check the signature of a caller whose certificate webpki will not parse.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.inner.verify_tls12_signature(message, cert, dss) {
            Err(rustls::Error::InvalidCertificate(error)) if version1::is_version_1_error(&error) => {
                verify_with_leaf_key(message, cert, dss, &self.algorithms, false)
            }
            other => other,
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.inner.verify_tls13_signature(message, cert, dss) {
            Err(rustls::Error::InvalidCertificate(error)) if version1::is_version_1_error(&error) => {
                verify_with_leaf_key(message, cert, dss, &self.algorithms, true)
            }
            other => other,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks a handshake signature against the public key of a certificate webpki will not
/// parse (X.509 version 1). The handshake only proves that the caller holds that key; the
/// certificate itself is refused right after, as any other, with a 401 that names the
/// version and the fix, rather than with a bare TLS alert.
fn verify_with_leaf_key(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    use x509_parser::prelude::FromDer as _;
    let bad_encoding = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding);
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).map_err(|_| bad_encoding())?;
    let spki = SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
    if tls13 {
        return rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms);
    }
    // TLS 1.2 names a scheme that several algorithms may implement: as rustls does, any
    // of them that verifies the signature will do.
    let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad_encoding())?;
    let candidates = algorithms.mapping.iter().filter(|(scheme, _)| *scheme == dss.scheme).flat_map(|(_, algs)| algs.iter());
    for algorithm in candidates {
        if key.verify_signature(*algorithm, message, dss.signature()).is_ok() {
            return Ok(HandshakeSignatureValid::assertion());
        }
    }
    Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))
}
