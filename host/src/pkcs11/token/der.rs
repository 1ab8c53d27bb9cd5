//! The few DER shapes a token's raw answers need: ECDSA signatures and RSA public keys.

/// PKCS#11 returns ECDSA signatures as r || s; TLS and X.509 carry the DER SEQUENCE of two INTEGERs.
pub(super) fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(der_sequence(&[der_integer(r), der_integer(s)].concat()))
}

/// An RSAPublicKey (PKCS#1) from its modulus and exponent: what X.509 puts in the key's bit string.
pub(super) fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
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
