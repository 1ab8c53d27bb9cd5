//! The dev PKI's CA key in a token: rcgen signs certificates and CRLs through it, so the CA
//! key never exists outside the token.

use std::sync::{Arc, Mutex};

use super::token::{SigningScheme, TokenError, TokenSession, TokenSettings};
use super::{KeyKind, KeyUri, TokenKey};
use crate::pki::NewKeyType;

/// A CA key held by a token: its public key (read from the token) and a signer.
#[derive(Debug)]
pub struct TokenCaKey {
    key: Arc<TokenKey>,
    public_key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    scheme: SigningScheme,
    /// Why the last signature failed: rcgen's error cannot carry the token's words.
    last_error: Mutex<Option<TokenError>>,
}

/// What [`TokenCaKey::open_or_generate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKeyOrigin {
    /// The key was already in the token.
    Existing,
    /// The key pair was generated in the token now.
    Generated,
}

impl TokenCaKey {
    /// The key the URI names; with `generate`, a missing key is generated in the token first
    /// (sensitive, never extractable) as that type.
    pub fn open_or_generate(
        uri: &KeyUri,
        settings: &TokenSettings,
        generate: Option<NewKeyType>,
    ) -> Result<(Self, CaKeyOrigin), TokenError> {
        let session = TokenSession::open(uri, settings, generate.is_some())?;
        let origin = match (session.find_key(uri), generate) {
            (Ok(_), _) => CaKeyOrigin::Existing,
            (Err(TokenError::NoKey { .. }), Some(key_type)) => {
                let (kind, bits) = match key_type {
                    NewKeyType::P256 => (KeyKind::EcdsaP256, 0),
                    NewKeyType::P384 => (KeyKind::EcdsaP384, 0),
                    NewKeyType::Rsa2048 => (KeyKind::Rsa, 2048),
                    NewKeyType::Rsa3072 => (KeyKind::Rsa, 3072),
                    NewKeyType::Ed25519 => return Err(TokenError::Unsupported { key_type: "Ed25519".into() }),
                };
                session.generate(uri, kind, bits)?;
                CaKeyOrigin::Generated
            }
            (Err(error), _) => return Err(error),
        };
        let (kind, public_key) = session.public_key(uri)?;
        let (algorithm, scheme) = match kind {
            KeyKind::EcdsaP256 => (&rcgen::PKCS_ECDSA_P256_SHA256, SigningScheme::EcdsaP256Sha256),
            KeyKind::EcdsaP384 => (&rcgen::PKCS_ECDSA_P384_SHA384, SigningScheme::EcdsaP384Sha384),
            KeyKind::Rsa => (&rcgen::PKCS_RSA_SHA256, SigningScheme::RsaPkcs1Sha256),
        };
        let key = Arc::new(TokenKey::new(uri.clone(), settings, kind));
        Ok((Self { key, public_key, algorithm, scheme, last_error: Mutex::new(None) }, origin))
    }

    /// The URI of the key.
    pub fn uri(&self) -> &KeyUri {
        self.key.uri()
    }

    /// Why the last signature failed, if one did.
    pub fn last_error(&self) -> Option<TokenError> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl rcgen::PublicKeyData for TokenCaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for TokenCaKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(self.scheme, message).map_err(|error| {
            *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            rcgen::Error::RemoteKeyError
        })
    }
}
