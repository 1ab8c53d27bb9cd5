//! Signing through a token from the TLS handshake: a few threads per token, each holding one
//! logged-in session, take signing jobs from a bounded queue. A handshake waits for its
//! signature with a deadline, so a token that hangs fails handshakes instead of holding them,
//! and the wait moves the async worker's other tasks elsewhere (`block_in_place`).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cryptoki::object::ObjectHandle;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::token::{SigningScheme, TokenError, TokenSession, TokenSettings};
use super::{KeyKind, KeyUri};

/// Sessions (and threads) per token: how many handshakes sign at once.
const SESSIONS_PER_TOKEN: usize = 4;
/// Signing jobs that may wait for a session; more fail at once as busy.
const QUEUE: usize = 256;
/// How long a handshake waits for its signature.
pub(super) const SIGN_DEADLINE: Duration = Duration::from_secs(3);

struct Job {
    uri: KeyUri,
    scheme: SigningScheme,
    message: Vec<u8>,
    reply: SyncSender<Result<Vec<u8>, TokenError>>,
}

/// The sessions of one token (one module, one token, one PIN source).
struct Pool {
    jobs: SyncSender<Job>,
}

type PoolKey = (std::path::PathBuf, Option<String>, Option<String>, String, Option<std::path::PathBuf>);

fn pools() -> &'static Mutex<HashMap<PoolKey, Arc<Pool>>> {
    static POOLS: OnceLock<Mutex<HashMap<PoolKey, Arc<Pool>>>> = OnceLock::new();
    POOLS.get_or_init(Mutex::default)
}

fn pool_for(uri: &KeyUri, settings: &TokenSettings) -> Arc<Pool> {
    let key =
        (settings.module_for(uri).to_path_buf(), uri.token.clone(), uri.serial.clone(), settings.pin_env.clone(), uri.pin_file.clone());
    let mut pools = pools().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    pools
        .entry(key)
        .or_insert_with(|| {
            let (jobs, queue) = sync_channel(QUEUE);
            let queue = Arc::new(Mutex::new(queue));
            // A wrong PIN is tried once per pool, never again: tokens lock after a few.
            let refused = Arc::new(Mutex::new(None));
            for index in 0..SESSIONS_PER_TOKEN {
                let (queue, refused, settings) = (queue.clone(), refused.clone(), settings.clone());
                let spawned =
                    std::thread::Builder::new().name(format!("edgemtls-pkcs11-{index}")).spawn(move || work(&settings, &queue, &refused));
                if let Err(error) = spawned {
                    tracing::error!(%error, "cannot start a token signing thread; the token signs with fewer sessions");
                }
            }
            Arc::new(Pool { jobs })
        })
        .clone()
}

/// One session's thread: signs jobs until every key of the token is gone.
fn work(settings: &TokenSettings, queue: &Mutex<Receiver<Job>>, refused: &Mutex<Option<TokenError>>) {
    let mut session: Option<(TokenSession, HashMap<KeyUri, ObjectHandle>)> = None;
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let answer = sign_job(settings, &mut session, refused, &job);
        // The handshake may have given up waiting; then nobody reads the answer.
        let _ = job.reply.try_send(answer);
    }
}

fn sign_job(
    settings: &TokenSettings,
    session: &mut Option<(TokenSession, HashMap<KeyUri, ObjectHandle>)>,
    refused: &Mutex<Option<TokenError>>,
    job: &Job,
) -> Result<Vec<u8>, TokenError> {
    if let Some(error) = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
        return Err(error);
    }
    // A session from before the token was removed fails once; a fresh one finds it again.
    for attempt in 0..2 {
        let (open, keys) = match session {
            Some(session) => session,
            None => match TokenSession::open(&job.uri, settings, false) {
                Ok(open) => session.insert((open, HashMap::new())),
                Err(error) => {
                    if matches!(error, TokenError::WrongPin { .. } | TokenError::PinLocked { .. }) {
                        *refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
                    }
                    return Err(error);
                }
            },
        };
        let signed = match keys.get(&job.uri) {
            Some(key) => Ok(*key),
            None => open.find_key(&job.uri).inspect(|key| {
                keys.insert(job.uri.clone(), *key);
            }),
        }
        .and_then(|key| open.sign(&job.uri, key, job.scheme, &job.message));
        match signed {
            Ok(signature) => return Ok(signature),
            Err(error) if error.retry_with_new_session() || matches!(error, TokenError::NoKey { .. }) => {
                *session = None;
                if attempt == 1 {
                    return Err(error);
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(TokenError::Failed { token: job.uri.token_shown(), during: "signing", reason: "no session could be opened".into() })
}

/// A private key in a token, signing through its token's pool.
#[derive(Debug)]
pub struct TokenKey {
    uri: KeyUri,
    kind: KeyKind,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl TokenKey {
    /// The key `uri` names, of the kind the certificate's public key says. Nothing is asked
    /// of the token until the first signature.
    pub fn new(uri: KeyUri, settings: &TokenSettings, kind: KeyKind) -> Self {
        let pool = pool_for(&uri, settings);
        Self { uri, kind, pool }
    }

    /// The URI of the key.
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// Signs `message` as `scheme` says, waiting at most [`SIGN_DEADLINE`].
    pub fn sign(&self, scheme: SigningScheme, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let timeout = || TokenError::Timeout { token: self.uri.token_shown(), seconds: SIGN_DEADLINE.as_secs() };
        let (reply, answer) = sync_channel(1);
        match self.pool.jobs.try_send(Job { uri: self.uri.clone(), scheme, message: message.to_vec(), reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(timeout()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(TokenError::Failed {
                    token: self.uri.token_shown(),
                    during: "signing",
                    reason: "its signing threads stopped".into(),
                });
            }
        }
        let wait = || answer.recv_timeout(SIGN_DEADLINE);
        // On a multi-threaded runtime's worker, let the runtime move this worker's other
        // tasks to another thread while the token signs.
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
            _ => wait(),
        };
        answer.map_err(|_| timeout())?
    }

    /// This key as rustls signs with it.
    pub fn tls_signing_key(self: &Arc<Self>) -> Arc<dyn SigningKey> {
        Arc::new(TlsKey { key: self.clone() })
    }
}

#[derive(Debug)]
struct TlsKey {
    key: Arc<TokenKey>,
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let ours: &[(SignatureScheme, SigningScheme)] = match self.key.kind {
            KeyKind::EcdsaP256 => &[(SignatureScheme::ECDSA_NISTP256_SHA256, SigningScheme::EcdsaP256Sha256)],
            KeyKind::EcdsaP384 => &[(SignatureScheme::ECDSA_NISTP384_SHA384, SigningScheme::EcdsaP384Sha384)],
            // PSS first: TLS 1.3 allows only PSS for RSA.
            KeyKind::Rsa => &[
                (SignatureScheme::RSA_PSS_SHA256, SigningScheme::RsaPssSha256),
                (SignatureScheme::RSA_PSS_SHA384, SigningScheme::RsaPssSha384),
                (SignatureScheme::RSA_PSS_SHA512, SigningScheme::RsaPssSha512),
                (SignatureScheme::RSA_PKCS1_SHA256, SigningScheme::RsaPkcs1Sha256),
                (SignatureScheme::RSA_PKCS1_SHA384, SigningScheme::RsaPkcs1Sha384),
                (SignatureScheme::RSA_PKCS1_SHA512, SigningScheme::RsaPkcs1Sha512),
            ],
        };
        let (tls, scheme) = ours.iter().find(|(tls, _)| offered.contains(tls))?;
        Some(Box::new(TlsSigner { key: self.key.clone(), tls: *tls, scheme: *scheme }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.kind {
            KeyKind::Rsa => SignatureAlgorithm::RSA,
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => SignatureAlgorithm::ECDSA,
        }
    }
}

#[derive(Debug)]
struct TlsSigner {
    key: Arc<TokenKey>,
    tls: SignatureScheme,
    scheme: SigningScheme,
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.scheme, message).map_err(|error| {
            static LIMIT: crate::log_limit::Limiter = crate::log_limit::Limiter::new();
            if LIMIT.permit() {
                tracing::error!(key = %self.key.uri, %error, "the token could not sign a TLS handshake; the request fails");
            }
            rustls::Error::Other(rustls::OtherError(Arc::new(error)))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.tls
    }
}
