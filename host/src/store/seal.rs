//! Sealing private keys at rest with AES-256-GCM under a master key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::{KeySource, MASTER_KEY_ENV, StoreError};

/// The 32-byte key that seals every private key in a store. Clones share the key.
#[derive(Clone)]
pub struct MasterKey {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses a base64-encoded 32-byte key.
    pub fn from_base64(text: &str, source: &KeySource) -> Result<Self, StoreError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| StoreError::MasterKey {
            reason: format!("{source} is not valid base64 ({}); make a key with `openssl rand -base64 32`", base64_problem(&e)),
        })?;
        Self::from_bytes(&bytes)
            .map_err(|_| StoreError::MasterKey { reason: format!("{source} must decode to 32 bytes, got {}", bytes.len()) })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, ring::error::Unspecified> {
        Ok(Self { key: std::sync::Arc::new(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes)?)) })
    }

    /// Generates a fresh random key and returns it with its base64 form.
    pub fn generate() -> Result<(Self, String), StoreError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| StoreError::MasterKey { reason: "the system random generator failed".into() })?;
        let key = Self::from_bytes(&bytes).map_err(|_| StoreError::MasterKey { reason: "cannot build AES-256-GCM key".into() })?;
        Ok((key, STANDARD.encode(bytes)))
    }

    /// Makes a new key and publishes it as `key_file` (mode 0600) in one step: the file is
    /// written whole under a temporary name and linked into place, which fails if the file
    /// exists. So a reader never sees a partial key, and when several processes open a new
    /// store at once, one key wins and every process uses it.
    pub fn create_file(key_file: &Path) -> Result<(Self, KeySource), StoreError> {
        let (key, text) = Self::generate()?;
        let temporary = key_file.with_file_name(format!(
            ".{}.{}-{}",
            key_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id(),
            random_hex::<8>()?
        ));
        let io = |error| StoreError::Io { path: key_file.to_path_buf(), error };
        crate::pki::write_private_file(&temporary, format!("{text}\n").as_bytes())
            .map_err(|e| StoreError::MasterKey { reason: e.to_string() })?;
        let linked = std::fs::hard_link(&temporary, key_file);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                // The new name must survive a crash too.
                if let Some(dir) = key_file.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok((key, KeySource::File(key_file.to_path_buf())))
            }
            // Another process published its key first: use that one.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(key_file).map_err(io)?;
                let source = KeySource::File(key_file.to_path_buf());
                Ok((Self::from_base64(&text, &source)?, source))
            }
            Err(error) => Err(io(error)),
        }
    }

    /// Reads the key from `EDGEMTLS_MASTER_KEY`; `None` when it is not set.
    pub fn from_env() -> Result<Option<(Self, KeySource)>, StoreError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) => Ok(Some((Self::from_base64(&text, &KeySource::Environment)?, KeySource::Environment))),
            Err(_) => Ok(None),
        }
    }

    /// Reads the key from the variable `name`; `None` when it is not set.
    pub fn from_variable(name: &str) -> Result<Option<(Self, KeySource)>, StoreError> {
        let source = KeySource::Variable(name.to_string());
        match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => Ok(Some((Self::from_base64(&text, &source)?, source))),
            _ => Ok(None),
        }
    }

    /// Reads the key from `key_file` alone (not the environment); `None` when there is none.
    pub fn from_file(key_file: &Path) -> Result<Option<(Self, KeySource)>, StoreError> {
        match std::fs::read_to_string(key_file) {
            Ok(text) if text.trim().is_empty() => Err(StoreError::EmptyKeyFile { path: key_file.to_path_buf(), sealed_anything: true }),
            Ok(text) => {
                let source = KeySource::File(key_file.to_path_buf());
                Ok(Some((Self::from_base64(&text, &source)?, source)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Io { path: key_file.to_path_buf(), error }),
        }
    }

    /// Reads the key from `EDGEMTLS_MASTER_KEY`, or from `key_file` if that exists.
    /// Returns `None` when neither is there.
    pub fn from_env_or_file(key_file: &Path) -> Result<Option<(Self, KeySource)>, StoreError> {
        match Self::from_env()? {
            Some(found) => Ok(Some(found)),
            None => Self::from_file(key_file),
        }
    }

    /// Encrypts `plaintext`, binding it to `context` (the record id): the output is
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| StoreError::MasterKey { reason: "the system random generator failed".into() })?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| StoreError::MasterKey { reason: "sealing failed".into() })?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Decrypts what [`MasterKey::seal`] produced for the same `context`. Fails, rather than
    /// returning garbage, for another key, another context or altered bytes.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out).ok()?;
        Some(plain.to_vec())
    }
}

/// `N` random bytes from the system generator, as lower-case hex: record ids, deployment
/// ids, temporary file names.
pub(crate) fn random_hex<const N: usize>() -> Result<String, StoreError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| StoreError::MasterKey { reason: "the system random generator failed".into() })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What is wrong with base64 text, in words (base64's own text is "Invalid padding" or
/// "Invalid symbol 61, offset 4.").
fn base64_problem(error: &base64::DecodeError) -> String {
    use base64::DecodeError as E;
    match error {
        E::InvalidByte(offset, byte) | E::InvalidLastSymbol(offset, byte) if byte.is_ascii_graphic() => {
            format!("character {} is '{}'", offset + 1, char::from(*byte))
        }
        E::InvalidByte(offset, _) | E::InvalidLastSymbol(offset, _) => format!("character {} is not a base64 character", offset + 1),
        E::InvalidLength(_) | E::InvalidPadding => "characters are missing or extra at its end".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_refuses_other_key_or_context() -> Result<(), StoreError> {
        let (key, _) = MasterKey::generate()?;
        let (other, _) = MasterKey::generate()?;
        let sealed = key.seal("cert_1", b"secret key bytes")?;
        assert_eq!(key.open("cert_1", &sealed).as_deref(), Some(&b"secret key bytes"[..]));
        assert!(other.open("cert_1", &sealed).is_none());
        assert!(key.open("cert_2", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(key.open("cert_1", &tampered).is_none());
        assert!(!sealed.windows(16).any(|w| w == b"secret key bytes"));
        Ok(())
    }

    #[test]
    fn bad_master_key_text_is_named() {
        let err = MasterKey::from_base64("c2hvcnQ=", &KeySource::Environment).unwrap_err();
        assert!(err.to_string().contains("EDGEMTLS_MASTER_KEY must decode to 32 bytes, got 5"), "{err}");
        let padding = MasterKey::from_base64("c2hvcnQ", &KeySource::Environment).unwrap_err().to_string();
        assert!(padding.contains("EDGEMTLS_MASTER_KEY is not valid base64 (characters are missing or extra at its end)"), "{padding}");
        let symbol = MasterKey::from_base64("c2h*cnQ=", &KeySource::Environment).unwrap_err().to_string();
        assert!(symbol.contains("(character 4 is '*')"), "{symbol}");
    }
}
