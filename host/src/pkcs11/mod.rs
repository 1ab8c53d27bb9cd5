//! Private keys that stay in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library, SoftHSM2).
//!
//! The store keeps a key's URI ([`KeyUri`]) where it would keep a sealed key; the host signs
//! TLS handshakes through the token ([`TokenKey`]), and `cert create` checks the token's key
//! against the certificate first ([`check_certificate_key`]).

mod ca;
mod signing;
mod token;
mod uri;

pub use ca::{CaKeyOrigin, TokenCaKey};
pub use signing::TokenKey;
pub use token::{DEFAULT_MODULE, DEFAULT_PIN_ENV, SigningScheme, TokenError, TokenSettings};
pub use uri::{KeyUri, UriError};

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::FromDer;

use crate::pki::KeyType;

/// The module and PIN source `serve` uses for every token key (`[pkcs11]` in the config);
/// the defaults until configured.
fn configured() -> &'static std::sync::RwLock<TokenSettings> {
    static SETTINGS: std::sync::OnceLock<std::sync::RwLock<TokenSettings>> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(Default::default)
}

/// Sets the module and PIN source that identities built from now on use (a config load or
/// reload calls this before building its snapshot).
pub fn configure(settings: TokenSettings) {
    *configured().write().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
}

/// The module and PIN source set by [`configure`].
pub fn settings() -> TokenSettings {
    configured().read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// The kinds of key a token signs with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (PSS for TLS 1.3, PKCS#1 v1.5 where offered for TLS 1.2).
    Rsa,
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
}

impl KeyKind {
    /// The kind of a certificate's key type.
    pub fn of(key_type: KeyType) -> Result<Self, TokenError> {
        match key_type {
            KeyType::Rsa => Ok(Self::Rsa),
            KeyType::EcdsaP256 => Ok(Self::EcdsaP256),
            KeyType::EcdsaP384 => Ok(Self::EcdsaP384),
            other => Err(TokenError::Unsupported { key_type: other.to_string() }),
        }
    }

    /// The scheme of a test signature, and how to verify it.
    fn test_scheme(self) -> (SigningScheme, &'static dyn ring::signature::VerificationAlgorithm) {
        match self {
            Self::Rsa => (SigningScheme::RsaPssSha256, &ring::signature::RSA_PSS_2048_8192_SHA256),
            Self::EcdsaP256 => (SigningScheme::EcdsaP256Sha256, &ring::signature::ECDSA_P256_SHA256_ASN1),
            Self::EcdsaP384 => (SigningScheme::EcdsaP384Sha384, &ring::signature::ECDSA_P384_SHA384_ASN1),
        }
    }
}

/// Checks that the key `uri` names is in its token and is the private key of `leaf`: logs in,
/// signs a random challenge in the token and verifies it with the certificate's public key.
/// Returns warnings about how the token protects the key (not sensitive, or extractable).
pub fn check_certificate_key(
    uri: &KeyUri,
    settings: &TokenSettings,
    leaf: &CertificateDer<'_>,
    key_type: KeyType,
) -> Result<Vec<String>, TokenError> {
    let kind = KeyKind::of(key_type)?;
    let session = token::TokenSession::open(uri, settings, false)?;
    let key = session.find_key(uri)?;
    let (sensitive, extractable) = session.protection(uri, key)?;
    let mut challenge = [0u8; 32];
    getrandom::fill(&mut challenge).map_err(|e| TokenError::Failed {
        token: uri.token_shown(),
        during: "making a challenge",
        reason: e.to_string(),
    })?;
    let (scheme, algorithm) = kind.test_scheme();
    let signature = session.sign(uri, key, scheme, &challenge)?;
    let mismatch = || TokenError::Mismatch { key: uri.key_shown() };
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(leaf).map_err(|_| mismatch())?;
    let public_key = certificate.public_key().subject_public_key.data.to_vec();
    ring::signature::UnparsedPublicKey::new(algorithm, public_key).verify(&challenge, &signature).map_err(|_| mismatch())?;
    let mut warnings = Vec::new();
    if !sensitive {
        warnings.push(format!("the {} is not marked sensitive (CKA_SENSITIVE): the token may reveal it", uri.key_shown()));
    }
    if extractable {
        warnings.push(format!("the {} is extractable (CKA_EXTRACTABLE): it can be exported from the token", uri.key_shown()));
    }
    Ok(warnings)
}
