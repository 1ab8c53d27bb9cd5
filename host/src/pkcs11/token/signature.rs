//! Signing with a token key: the schemes TLS and X.509 ask for, as PKCS#11 mechanisms.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;

use super::der::ecdsa_der;
use super::error::failed;
use super::{KeyUri, TokenError, TokenSession};

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
fn pss(hash_alg: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams { hash_alg, mgf, s_len: salt.into() }
}

fn bad_signature(uri: &KeyUri) -> TokenError {
    TokenError::Failed { token: uri.token_shown(), during: "signing", reason: "the token returned a malformed ECDSA signature".into() }
}
impl TokenSession {
    /// Signs `message` with `key` as `scheme` says, in the encoding TLS and X.509 use.
    pub(in crate::pkcs11) fn sign(
        &self,
        uri: &KeyUri,
        key: ObjectHandle,
        scheme: SigningScheme,
        message: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
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
