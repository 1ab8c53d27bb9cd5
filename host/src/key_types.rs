//! Key algorithms, as data: those a certificate's key may use, and those the development PKI
//! (in a file or in a PKCS#11 token) can generate. A leaf: `pki` and `pkcs11` both read it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The accepted key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// RSA, 2048 bits or more.
    #[serde(rename = "RSA")]
    Rsa,
    /// ECDSA on NIST P-256.
    #[serde(rename = "ECDSA P-256")]
    EcdsaP256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "ECDSA P-384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "Ed25519")]
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::EcdsaP256 => "ECDSA P-256",
            KeyType::EcdsaP384 => "ECDSA P-384",
            KeyType::Ed25519 => "Ed25519",
        })
    }
}

/// The key algorithms `pki init` and `pki issue` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewKeyType {
    /// ECDSA on NIST P-256 (the default: small, fast, accepted everywhere TLS 1.2+ is).
    #[default]
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// Ed25519 (TLS 1.3 peers; some TLS 1.2 stacks refuse it).
    Ed25519,
    /// RSA, 2048 bits, for upstreams that still require RSA.
    Rsa2048,
    /// RSA, 3072 bits.
    Rsa3072,
}

impl NewKeyType {
    /// Every type, with the name the CLI takes.
    pub const ALL: [(&'static str, Self); 5] =
        [("p256", Self::P256), ("p384", Self::P384), ("ed25519", Self::Ed25519), ("rsa2048", Self::Rsa2048), ("rsa3072", Self::Rsa3072)];
}

impl std::str::FromStr for NewKeyType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)).map(|(_, t)| *t).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(name, _)| *name).collect();
            format!("'{text}' is not a key type; use one of {}", names.join(", "))
        })
    }
}
