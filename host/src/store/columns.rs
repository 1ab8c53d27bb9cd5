//! A record as the backends store it: environments and chain as text, the sealed key's
//! plaintext as a tag and bytes, and a row read back into a [`CertificateRecord`].

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use time::OffsetDateTime;

use super::backend::RawRecord;
use super::{CertificateRecord, KeyLocation, StoreError, StoredKey};
use crate::Environment;

/// A key to write with a record.
#[derive(Clone, Copy)]
pub(super) enum KeyToStore<'a> {
    Sealed(&'a PrivateKeyDer<'static>),
    Token(&'a str),
}

impl RawRecord {
    pub(super) fn decode(self) -> Result<CertificateRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { id: self.id.clone(), reason };
        let environments = crate::environment::parse_environments(self.environments.split(',').filter(|s| !s.is_empty()))
            .map_err(|e| corrupt(e.to_string()))?;
        let chain = crate::pki::pem::certificates(self.chain_pem.as_bytes()).map_err(|e| corrupt(format!("chain: {e}")))?;
        let metadata = serde_json::from_str(&self.metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
        let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| corrupt(e.to_string()));
        Ok(CertificateRecord {
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            id: self.id,
            name: self.name,
            environments,
            enabled: self.enabled,
            chain,
            metadata,
            version: self.version,
            key_location: match self.key_uri {
                Some(uri) => KeyLocation::Token(uri),
                None => KeyLocation::Store,
            },
        })
    }
}

pub(super) fn environments_to_text(environments: &[Environment]) -> String {
    environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(",")
}

pub(super) fn chain_to_pem(chain: &[CertificateDer<'_>]) -> String {
    let pems: Vec<pem::Pem> = chain.iter().map(|c| pem::Pem::new("CERTIFICATE", c.to_vec())).collect();
    pem::encode_many(&pems)
}

// The sealed plaintext is one tag byte for the key encoding followed by the DER, or (tag 4)
// by the URI of a key in a PKCS#11 token: sealed like a key, so it is bound to its record.
pub(super) fn encode_key(key: KeyToStore<'_>) -> Vec<u8> {
    let (tag, der) = match key {
        KeyToStore::Sealed(PrivateKeyDer::Pkcs8(k)) => (1u8, k.secret_pkcs8_der()),
        KeyToStore::Sealed(PrivateKeyDer::Pkcs1(k)) => (2u8, k.secret_pkcs1_der()),
        KeyToStore::Sealed(PrivateKeyDer::Sec1(k)) => (3u8, k.secret_sec1_der()),
        KeyToStore::Sealed(_) => (0u8, &[][..]),
        KeyToStore::Token(uri) => (4u8, uri.as_bytes()),
    };
    let mut out = Vec::with_capacity(der.len() + 1);
    out.push(tag);
    out.extend_from_slice(der);
    out
}

pub(super) fn decode_key(plain: &[u8]) -> Option<StoredKey> {
    let (tag, der) = plain.split_first()?;
    let der = der.to_vec();
    match tag {
        1 => Some(StoredKey::Sealed(PrivatePkcs8KeyDer::from(der).into())),
        2 => Some(StoredKey::Sealed(PrivatePkcs1KeyDer::from(der).into())),
        3 => Some(StoredKey::Sealed(PrivateSec1KeyDer::from(der).into())),
        4 => String::from_utf8(der).ok().map(StoredKey::Token),
        _ => None,
    }
}
