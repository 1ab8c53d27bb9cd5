//! Talking to a PKCS#11 module: loading it once per process, finding the token and the key a
//! URI names, logging in, and signing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::KeyUri;

// The settings are plain data in the config (`[pkcs11]`); how they are used is here.
pub use crate::config::{DEFAULT_MODULE, DEFAULT_PIN_ENV, TokenSettings};

impl TokenSettings {
    /// The module that serves `uri`.
    pub fn module_for<'a>(&'a self, uri: &'a KeyUri) -> &'a Path {
        uri.module_path.as_deref().unwrap_or(&self.module)
    }

    /// Where the PIN for `uri` comes from, for messages.
    fn pin_shown(&self, uri: &KeyUri) -> String {
        match &uri.pin_file {
            Some(path) => format!("the file '{}'", path.display()),
            None => format!("the environment variable {}", self.pin_env),
        }
    }

    fn pin(&self, uri: &KeyUri) -> Result<AuthPin, TokenError> {
        let pin = match &uri.pin_file {
            Some(path) => crate::files::read_regular_file(path, 4096)
                .map_err(|error| TokenError::NoPin {
                    token: uri.token_shown(),
                    detail: format!("cannot read '{}': {error}", path.display()),
                })
                .map(|bytes| String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_string())?,
            None => std::env::var(&self.pin_env).map_err(|_| TokenError::NoPin {
                token: uri.token_shown(),
                detail: format!("set the environment variable {} (or name another with --pin-env or [pkcs11] pin_env)", self.pin_env),
            })?,
        };
        Ok(AuthPin::from(pin))
    }
}

/// Why a token key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The module cannot be loaded or initialised.
    #[error("cannot load the PKCS#11 module '{}': {reason}; install it or name another with --pkcs11-module or [pkcs11] module", module.display())]
    Module {
        /// The module's path.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// No slot holds the token.
    #[error("{token} is not present in the PKCS#11 module '{}' (tokens there: {present}); check the token is plugged in and its label", module.display())]
    NoToken {
        /// The token, as the URI names it.
        token: String,
        /// The module asked.
        module: PathBuf,
        /// The tokens the module has, or `none`.
        present: String,
    },
    /// There is no PIN to log in with.
    #[error("no PIN for {token}: {detail}")]
    NoPin {
        /// The token.
        token: String,
        /// What to do.
        detail: String,
    },
    /// The token refused the PIN.
    #[error(
        "{token} refused the PIN from {source_shown}: the PIN is wrong (a serving host does not try it again until restarted, so the token does not lock)"
    )]
    WrongPin {
        /// The token.
        token: String,
        /// Where the PIN came from.
        source_shown: String,
    },
    /// The token locked its user PIN.
    #[error("{token} has locked its user PIN after too many wrong attempts; unlock it with the security officer PIN")]
    PinLocked {
        /// The token.
        token: String,
    },
    /// The key is not in the token.
    #[error("there is no private {key}; list the token's keys (pkcs11-tool --list-objects) and check the URI's object= or id=")]
    NoKey {
        /// The key, as the URI names it.
        key: String,
    },
    /// More than one key matches.
    #[error("{count} private keys match the {key}; add id= to the URI to pick one")]
    Ambiguous {
        /// The key, as the URI names it.
        key: String,
        /// How many matched.
        count: usize,
    },
    /// The token's key is not the certificate's.
    #[error(
        "the {key} does not match the certificate's public key (a test signature did not verify); check the URI names the certificate's own key"
    )]
    Mismatch {
        /// The key.
        key: String,
    },
    /// The certificate's key type cannot be used through a token here.
    #[error("{key_type} keys cannot sign through a token here; use RSA or ECDSA P-256/P-384")]
    Unsupported {
        /// The key type.
        key_type: String,
    },
    /// The token failed an operation.
    #[error("{token} failed while {during}: {reason}")]
    Failed {
        /// The token.
        token: String,
        /// What edgemtls was doing.
        during: &'static str,
        /// The module's answer, in words.
        reason: String,
    },
    /// Every session of the token was busy past the deadline.
    #[error("{token} did not sign within {seconds} s (all its sessions are busy or it stopped answering)")]
    Timeout {
        /// The token.
        token: String,
        /// The deadline.
        seconds: u64,
    },
}

/// How often a module may be restarted to look for a token that is not there: a restart
/// ends every session of the module, so a token that stays away must not cause one per handshake.
const RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// A loaded module. Every call into it holds `generation` shared; a restart (`C_Finalize`,
/// `C_Initialize`) holds it exclusively, so it never runs under another call, and bumps it:
/// sessions from an older generation are gone and are never closed (their handles may
/// already name new sessions).
pub(super) struct Module {
    path: PathBuf,
    pkcs11: Pkcs11,
    generation: RwLock<u64>,
    last_start: Mutex<Instant>,
}

impl Module {
    /// Restarts the module, unless it started less than [`RESTART_INTERVAL`] ago: some
    /// modules (SoftHSM2 among them) list the tokens they found at start only, so a token that
    /// came back is seen only by a new start. Whether it restarted.
    fn restart_if_due(&self) -> bool {
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

/// A module's answer in words, without the PKCS#11 function's name.
fn words(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _) => "the token was removed".into(),
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _) => "the token closed the session".into(),
        CkError::Pkcs11(RvError::DeviceError | RvError::DeviceMemory, _) => "the device reported an error".into(),
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => "the key is gone from the token".into(),
        CkError::Pkcs11(RvError::MechanismInvalid, _) => "the token does not offer this signature mechanism".into(),
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => "the session is not logged in".into(),
        CkError::Pkcs11(RvError::CryptokiNotInitialized, _) => {
            "the module is stopped: restarting it to look for a token that had gone failed (it is tried again every 2 s)".into()
        }
        CkError::Pkcs11(RvError::GeneralError, _) => "the module reported a general error".into(),
        CkError::Pkcs11(rv, _) => rv.to_string(),
        other => other.to_string(),
    }
}

fn failed<'a>(uri: &'a KeyUri, during: &'static str) -> impl Fn(CkError) -> TokenError + 'a {
    move |error| TokenError::Failed { token: uri.token_shown(), during, reason: words(&error) }
}

/// A logged-in session on the token a URI names.
pub(super) struct TokenSession {
    /// Always `Some` until dropped.
    session: Option<Session>,
    module: Arc<Module>,
    /// The module's generation the session belongs to.
    generation: u64,
}

impl Drop for TokenSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let generation = self.module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *generation == self.generation {
                let _ = session.close();
            }
        }
    }
}

impl TokenSession {
    /// Finds the token, opens a session (read-write if `write`) and logs the user in. A token
    /// that is not there is looked for again after a restart of its module, when one is due.
    pub(super) fn open(uri: &KeyUri, settings: &TokenSettings, write: bool) -> Result<Self, TokenError> {
        let module_path = settings.module_for(uri);
        let module = module(module_path)?;
        // A token the module does not list, or a module that fails (a restart while the token
        // was away may have left it stopped), may do better after a restart.
        let outcome = match Self::open_on(&module, uri, settings, write) {
            Ok(Err(_)) | Err(TokenError::Failed { .. }) if module.restart_if_due() => Self::open_on(&module, uri, settings, write),
            outcome => outcome,
        };
        match outcome? {
            Ok(session) => Ok(session),
            Err(present) => {
                let present = if present.is_empty() { "none".to_string() } else { present.join(", ") };
                Err(TokenError::NoToken { token: uri.token_shown(), module: module_path.to_path_buf(), present })
            }
        }
    }

    /// [`TokenSession::open`] on the module as it is; `Ok(Err(labels))` when the token is not
    /// among the tokens it lists.
    fn open_on(module: &Arc<Module>, uri: &KeyUri, settings: &TokenSettings, write: bool) -> Result<Result<Self, Vec<String>>, TokenError> {
        let generation = module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pkcs11 = &module.pkcs11;
        let slots = pkcs11.get_slots_with_token().map_err(failed(uri, "listing its slots"))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = pkcs11.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_string();
            let serial = info.serial_number().trim_end().to_string();
            let matches = uri.token.as_ref().is_none_or(|t| *t == label) && uri.serial.as_ref().is_none_or(|s| *s == serial);
            if matches && found.is_none() {
                found = Some(slot);
            }
            if !label.is_empty() {
                present.push(format!("'{label}'"));
            }
        }
        let Some(slot) = found else { return Ok(Err(present)) };
        // Sessions are closed by `TokenSession`'s drop, and only while their generation lives.
        let session = if write { pkcs11.open_rw_session_no_drop(slot) } else { pkcs11.open_ro_session_no_drop(slot) }
            .map_err(failed(uri, "opening a session"))?;
        let refused = |session: Session, error: TokenError| {
            let _ = session.close();
            Err(error)
        };
        let pin = match settings.pin(uri) {
            Ok(pin) => pin,
            Err(error) => return refused(session, error),
        };
        match session.login(UserType::User, Some(&pin)) {
            // Login is per token and application: another session of this process did it.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                return refused(session, TokenError::WrongPin { token: uri.token_shown(), source_shown: settings.pin_shown(uri) });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return refused(session, TokenError::PinLocked { token: uri.token_shown() }),
            Err(error) => return refused(session, failed(uri, "logging in")(error)),
        }
        let generation = *generation;
        Ok(Ok(Self { session: Some(session), module: module.clone(), generation }))
    }

    /// The session for one call, while the module cannot restart under it.
    fn call(&self, uri: &KeyUri) -> Result<(RwLockReadGuard<'_, u64>, &Session), TokenError> {
        let generation = self.module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &self.session {
            Some(session) if *generation == self.generation => Ok((generation, session)),
            _ => Err(TokenError::Failed {
                token: uri.token_shown(),
                during: "using its session",
                reason: "the module was restarted to look for a token that had gone".into(),
            }),
        }
    }

    /// The private key the URI names.
    pub(super) fn find_key(&self, uri: &KeyUri) -> Result<ObjectHandle, TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let (_calls, session) = self.call(uri)?;
        let found = session.find_objects(&template).map_err(failed(uri, "looking for the key"))?;
        match found.as_slice() {
            [key] => Ok(*key),
            [] => Err(TokenError::NoKey { key: uri.key_shown() }),
            many => Err(TokenError::Ambiguous { key: uri.key_shown(), count: many.len() }),
        }
    }

    /// Whether the key is marked sensitive, and whether it is extractable (unknown counts as
    /// the unsafe answer).
    pub(super) fn protection(&self, uri: &KeyUri, key: ObjectHandle) -> Result<(bool, bool), TokenError> {
        let (_calls, session) = self.call(uri)?;
        let attributes = session
            .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(failed(uri, "reading the key's attributes"))?;
        let (mut sensitive, mut extractable) = (false, true);
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(value) => sensitive = value,
                Attribute::Extractable(value) => extractable = value,
                _ => {}
            }
        }
        Ok((sensitive, extractable))
    }

    /// Signs `message` with `key` as `scheme` says, in the encoding TLS and X.509 use.
    pub(super) fn sign(&self, uri: &KeyUri, key: ObjectHandle, scheme: SigningScheme, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let (_calls, session) = self.call(uri)?;
        let sign = |mechanism: &Mechanism<'_>, data: &[u8]| session.sign(mechanism, key, data).map_err(failed(uri, "signing"));
        match scheme {
            SigningScheme::RsaPkcs1Sha256 => sign(&Mechanism::Sha256RsaPkcs, message),
            SigningScheme::RsaPkcs1Sha384 => sign(&Mechanism::Sha384RsaPkcs, message),
            SigningScheme::RsaPkcs1Sha512 => sign(&Mechanism::Sha512RsaPkcs, message),
            SigningScheme::RsaPssSha256 => {
                sign(&Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32)), message)
            }
            SigningScheme::RsaPssSha384 => {
                sign(&Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48)), message)
            }
            SigningScheme::RsaPssSha512 => {
                sign(&Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64)), message)
            }
            // The token signs a digest; the hash is computed here, as CKM_ECDSA expects.
            SigningScheme::EcdsaP256Sha256 => {
                let digest = ring::digest::digest(&ring::digest::SHA256, message);
                ecdsa_der(&sign(&Mechanism::Ecdsa, digest.as_ref())?).ok_or_else(|| bad_signature(uri))
            }
            SigningScheme::EcdsaP384Sha384 => {
                let digest = ring::digest::digest(&ring::digest::SHA384, message);
                ecdsa_der(&sign(&Mechanism::Ecdsa, digest.as_ref())?).ok_or_else(|| bad_signature(uri))
            }
        }
    }
}

fn pss(hash_alg: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams { hash_alg, mgf, s_len: salt.into() }
}

fn bad_signature(uri: &KeyUri) -> TokenError {
    TokenError::Failed { token: uri.token_shown(), during: "signing", reason: "the token returned a malformed ECDSA signature".into() }
}

/// A signature algorithm a token key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256 (salt of 32 bytes).
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512.
    RsaPssSha512,
    /// ECDSA on P-256 with SHA-256 (DER-encoded signature).
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384 (DER-encoded signature).
    EcdsaP384Sha384,
}

/// PKCS#11 returns ECDSA signatures as r || s; TLS and X.509 carry the DER SEQUENCE of two INTEGERs.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(der_sequence(&[der_integer(r), der_integer(s)].concat()))
}

/// An RSAPublicKey (PKCS#1) from its modulus and exponent: what X.509 puts in the key's bit string.
fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    der_sequence(&[der_integer(modulus), der_integer(exponent)].concat())
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(start) => &bytes[start..],
        None => &[0u8][..],
    };
    // A leading 1 bit would make it negative.
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tagged(0x02, &content)
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    der_tagged(0x30, content)
}

fn der_tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The DER OIDs of the curves, as CKA_EC_PARAMS holds them.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

impl TokenSession {
    /// The public key of the key pair the URI names (its CKO_PUBLIC_KEY object): its kind and
    /// the bytes of the certificate's subjectPublicKey bit string.
    pub(super) fn public_key(&self, uri: &KeyUri) -> Result<(super::KeyKind, Vec<u8>), TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let (_calls, session) = self.call(uri)?;
        let found = session.find_objects(&template).map_err(failed(uri, "looking for the public key"))?;
        let [key] = found.as_slice() else {
            return Err(TokenError::Failed {
                token: uri.token_shown(),
                during: "looking for the public key",
                reason: format!("{} public keys match the URI (one is needed, beside the private key)", found.len()),
            });
        };
        let wanted = [
            AttributeType::KeyType,
            AttributeType::EcParams,
            AttributeType::EcPoint,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
        ];
        let attributes = session.get_attributes(*key, &wanted).map_err(failed(uri, "reading the public key"))?;
        let (mut key_type, mut params, mut point, mut modulus, mut exponent) = (None, None, None, None, None);
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(value) => key_type = Some(value),
                Attribute::EcParams(value) => params = Some(value),
                Attribute::EcPoint(value) => point = Some(value),
                Attribute::Modulus(value) => modulus = Some(value),
                Attribute::PublicExponent(value) => exponent = Some(value),
                _ => {}
            }
        }
        let unsupported = || TokenError::Unsupported { key_type: "this token key's".into() };
        match key_type {
            Some(k) if k == cryptoki::object::KeyType::EC => {
                let kind = match params.as_deref() {
                    Some(P256_PARAMS) => super::KeyKind::EcdsaP256,
                    Some(P384_PARAMS) => super::KeyKind::EcdsaP384,
                    _ => return Err(TokenError::Unsupported { key_type: "ECDSA on this curve: only P-256 and P-384".into() }),
                };
                let point = point.ok_or_else(unsupported)?;
                // CKA_EC_POINT is the DER OCTET STRING of the point; some modules give it bare.
                let bare = match point.as_slice() {
                    [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
                    [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
                    _ => point,
                };
                Ok((kind, bare))
            }
            Some(k) if k == cryptoki::object::KeyType::RSA => {
                let (modulus, exponent) = modulus.zip(exponent).ok_or_else(unsupported)?;
                Ok((super::KeyKind::Rsa, rsa_public_key(&modulus, &exponent)))
            }
            _ => Err(unsupported()),
        }
    }

    /// Generates a key pair in the token, labelled and identified as the URI says: the private
    /// key sensitive and never extractable, so it cannot leave the token.
    pub(super) fn generate(&self, uri: &KeyUri, kind: super::KeyKind, rsa_bits: u64) -> Result<(), TokenError> {
        let mut common = Vec::new();
        if let Some(label) = &uri.object {
            common.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            common.push(Attribute::Id(id.clone()));
        }
        let (mechanism, mut public) = match kind {
            super::KeyKind::EcdsaP256 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P256_PARAMS.to_vec())]),
            super::KeyKind::EcdsaP384 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P384_PARAMS.to_vec())]),
            super::KeyKind::Rsa => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![Attribute::ModulusBits(rsa_bits.into()), Attribute::PublicExponent(vec![0x01, 0x00, 0x01])],
            ),
        };
        public.extend([Attribute::Token(true), Attribute::Private(false), Attribute::Verify(true)]);
        public.extend(common.iter().cloned());
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        private.extend(common);
        let (_calls, session) = self.call(uri)?;
        session.generate_key_pair(&mechanism, &public, &private).map_err(failed(uri, "generating a key pair"))?;
        Ok(())
    }
}

impl TokenError {
    /// Whether a fresh session may succeed where this one failed: the token was removed,
    /// unplugged or closed the session, and may be back.
    pub(super) fn retry_with_new_session(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::NoToken { .. })
    }
}
