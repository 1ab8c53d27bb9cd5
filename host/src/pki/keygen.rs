//! New key pairs for the development PKI, and the CA key's protection at rest.
//!
//! ECDSA and Ed25519 keys come from rcgen (ring); ring cannot generate RSA keys, so RSA keys
//! come from the RustCrypto `rsa` crate and are then signed with by ring like any other.
//! An encrypted key is PKCS#8 PBES2 (PBKDF2-SHA256, 600,000 rounds, AES-256-CBC), the
//! `ENCRYPTED PRIVATE KEY` that `openssl pkey` reads.

use rcgen::KeyPair;

use super::PkiError;
use crate::key_types::NewKeyType;

impl NewKeyType {
    /// Generates a key pair of this type.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        let failed = |e: rcgen::Error| PkiError::Generate(e.to_string());
        match self {
            Self::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed),
            Self::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(failed),
            Self::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(failed),
            Self::Rsa2048 => rsa_key(2048),
            Self::Rsa3072 => rsa_key(3072),
        }
    }
}

fn rsa_key(bits: usize) -> Result<KeyPair, PkiError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).map_err(|e| PkiError::Generate(format!("generating an RSA key: {e}")))?;
    let der = key.to_pkcs8_der().map_err(|e| PkiError::Generate(format!("encoding the RSA key: {e}")))?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).map_err(|e| PkiError::Generate(e.to_string()))
}

/// PBKDF2 rounds for an encrypted key: OWASP's figure for PBKDF2-HMAC-SHA256.
const PBKDF2_ROUNDS: u32 = 600_000;

/// The key as encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`).
pub fn encrypt_key(key: &KeyPair, passphrase: &str) -> Result<String, PkiError> {
    use pkcs8::der::pem::LineEnding;
    use ring::rand::SecureRandom;
    let failed = |what: &str| PkiError::Generate(format!("encrypting the key: {what}"));
    let rng = ring::rand::SystemRandom::new();
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    rng.fill(&mut salt).and_then(|()| rng.fill(&mut iv)).map_err(|_| failed("no randomness"))?;
    let params =
        pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(PBKDF2_ROUNDS, &salt, iv).map_err(|e| failed(&e.to_string()))?;
    let der = key.serialize_der();
    let info = pkcs8::PrivateKeyInfoRef::try_from(der.as_slice()).map_err(|e| failed(&e.to_string()))?;
    let encrypted = info.encrypt_with_params(params, passphrase).map_err(|e| failed(&e.to_string()))?;
    let pem = encrypted.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF).map_err(|e| failed(&e.to_string()))?;
    Ok(pem.to_string())
}

/// Why an encrypted key could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptFailure {
    /// The passphrase is wrong (or the file was altered).
    WrongPassphrase,
    /// It is not encrypted PKCS#8, or uses a scheme that is not supported.
    Unsupported,
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` (DER) into plain PKCS#8 DER.
pub fn decrypt_key(encrypted_der: &[u8], passphrase: &str) -> Result<Vec<u8>, DecryptFailure> {
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(encrypted_der).map_err(|_| DecryptFailure::Unsupported)?;
    match info.decrypt(passphrase) {
        Ok(document) => Ok(document.as_bytes().to_vec()),
        // A wrong passphrase shows as bad padding or a plaintext that is not PKCS#8.
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed) | pkcs8::Error::Asn1(_)) => {
            Err(DecryptFailure::WrongPassphrase)
        }
        Err(_) => Err(DecryptFailure::Unsupported),
    }
}
