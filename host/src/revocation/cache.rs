//! What issuers said, kept for as long as it holds: CRLs by URL (until their TTL or
//! nextUpdate, whichever is first), OCSP answers by certificate (until their nextUpdate),
//! and OCSP responses servers stapled. Process-wide, because it is a fact about the world
//! that every config version and pool shares; each map is bounded.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::pki::ParsedCrl;

use super::ocsp::OcspAnswer;

const MAX_CRLS: usize = 256;
const MAX_OCSP_ANSWERS: usize = 4096;
const MAX_STAPLES: usize = 1024;

/// A CRL fetch and when it stops being used.
#[derive(Clone)]
pub(super) struct CachedCrl {
    /// Parsed once and shared: a CRL can be megabytes, and every check of a connection reads it.
    pub crls: Arc<Vec<ParsedCrl>>,
    pub fetched: Instant,
    /// Unix seconds of the earliest nextUpdate among them, if any says.
    pub next_update: Option<u64>,
}

impl CachedCrl {
    /// Fresh: younger than `ttl` and before its nextUpdate.
    pub fn is_fresh(&self, ttl: Duration, now: u64) -> bool {
        self.fetched.elapsed() < ttl && self.next_update.is_none_or(|next| now < next)
    }

    /// Still usable when a refresh fails: before its nextUpdate.
    pub fn is_current(&self, now: u64) -> bool {
        self.next_update.is_none_or(|next| now < next)
    }
}

#[derive(Default)]
pub(super) struct Cache {
    crls: Mutex<HashMap<String, CachedCrl>>,
    ocsp: Mutex<HashMap<Vec<u8>, OcspAnswer>>,
    staples: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    /// One fetch at a time per URL or certificate: a burst of new connections waits for the
    /// first one's answer instead of each downloading the same CRL.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const MAX_FLIGHTS: usize = 4096;

pub(super) static CACHE: LazyLock<Cache> = LazyLock::new(Cache::default);

/// Inserts into a bounded map: when full, it is emptied first (everything in it can be asked
/// again; a bound matters more than which entries survive).
fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, max: usize, key: K, value: V) {
    if map.len() >= max && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

impl Cache {
    pub fn crl(&self, url: &str) -> Option<CachedCrl> {
        self.crls.lock().ok()?.get(url).cloned()
    }

    pub fn store_crl(&self, url: &str, crl: CachedCrl) {
        if let Ok(mut crls) = self.crls.lock() {
            bounded_insert(&mut crls, MAX_CRLS, url.to_string(), crl);
        }
    }

    /// A cached answer for this CertID (DER) that is still valid at `now`.
    pub fn ocsp(&self, cert_id: &[u8], now: u64) -> Option<OcspAnswer> {
        let answers = self.ocsp.lock().ok()?;
        let answer = answers.get(cert_id)?;
        let valid_until = match answer {
            OcspAnswer::Good { valid_until } | OcspAnswer::Revoked { valid_until, .. } => *valid_until,
            OcspAnswer::Unknown => return None,
        };
        (now < valid_until).then(|| answer.clone())
    }

    pub fn store_ocsp(&self, cert_id: Vec<u8>, answer: OcspAnswer) {
        if let Ok(mut answers) = self.ocsp.lock() {
            bounded_insert(&mut answers, MAX_OCSP_ANSWERS, cert_id, answer);
        }
    }

    /// Remembers the OCSP response a server stapled for its certificate (by SHA-256 of its
    /// DER), for the check after the handshake. It is verified when it is read.
    pub fn store_staple(&self, certificate: &[u8], response: &[u8]) {
        let key = fingerprint(certificate);
        if let Ok(mut staples) = self.staples.lock() {
            bounded_insert(&mut staples, MAX_STAPLES, key, response.to_vec());
        }
    }

    /// The lock that one fetch of `key` holds while it asks.
    pub fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut flights) = self.flights.lock() else { return Arc::default() };
        if let Some(flight) = flights.get(key) {
            return flight.clone();
        }
        let flight = Arc::new(tokio::sync::Mutex::new(()));
        bounded_insert(&mut flights, MAX_FLIGHTS, key.to_string(), flight.clone());
        flight
    }

    pub fn staple(&self, certificate: &[u8]) -> Option<Vec<u8>> {
        self.staples.lock().ok()?.get(&fingerprint(certificate)).cloned()
    }
}

fn fingerprint(certificate: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}
