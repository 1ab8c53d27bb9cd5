//! The key pair a URI names: its public key as a certificate carries it, and generating one.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use super::der::rsa_public_key;
use super::error::failed;
use super::session::named_by;
use super::{KeyUri, TokenError, TokenSession};

/// The DER OIDs of the curves, as CKA_EC_PARAMS holds them.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

impl TokenSession {
    /// The public key of the key pair the URI names (its CKO_PUBLIC_KEY object): its kind and
    /// the bytes of the certificate's subjectPublicKey bit string.
    pub(in crate::pkcs11) fn public_key(&self, uri: &KeyUri) -> Result<(crate::pkcs11::KeyKind, Vec<u8>), TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        template.extend(named_by(uri));
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
                    Some(P256_PARAMS) => crate::pkcs11::KeyKind::EcdsaP256,
                    Some(P384_PARAMS) => crate::pkcs11::KeyKind::EcdsaP384,
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
                Ok((crate::pkcs11::KeyKind::Rsa, rsa_public_key(&modulus, &exponent)))
            }
            _ => Err(unsupported()),
        }
    }

    /// Generates a key pair in the token, labelled and identified as the URI says: the private
    /// key sensitive and never extractable, so it cannot leave the token.
    pub(in crate::pkcs11) fn generate(&self, uri: &KeyUri, kind: crate::pkcs11::KeyKind, rsa_bits: u64) -> Result<(), TokenError> {
        let common = named_by(uri);
        let (mechanism, mut public) = match kind {
            crate::pkcs11::KeyKind::EcdsaP256 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P256_PARAMS.to_vec())]),
            crate::pkcs11::KeyKind::EcdsaP384 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P384_PARAMS.to_vec())]),
            crate::pkcs11::KeyKind::Rsa => (
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
