//! Reading PEM, in one place. Certificates, CRLs and keys go through `rustls-pki-types`'
//! `PemObject`; the import, which must tell apart labels that `PemObject` skips (`X509
//! CERTIFICATE`, `PKCS7`, `ENCRYPTED PRIVATE KEY`) to give its precise errors, reads
//! labelled [`sections`].

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Why PEM could not be read, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PemError(String);

/// Whether `bytes` hold PEM (a `-----BEGIN ` line) rather than DER.
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The `CERTIFICATE` sections of a PEM file, in order.
pub fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    CertificateDer::pem_slice_iter(bytes).collect::<Result<_, _>>().map_err(|e| describe(&e))
}

/// The `X509 CRL` sections of a PEM file, in order.
pub fn crls(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    CertificateRevocationListDer::pem_slice_iter(bytes).collect::<Result<_, _>>().map_err(|e| describe(&e))
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn private_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| describe(&e))
}

/// Certificates from a file that is PEM or a single DER certificate.
pub fn certificates_pem_or_der(bytes: Vec<u8>) -> Result<Vec<CertificateDer<'static>>, PemError> {
    if looks_like_pem(&bytes) { certificates(&bytes) } else { Ok(vec![CertificateDer::from(bytes)]) }
}

/// CRLs from a file that is PEM or a single DER CRL.
pub fn crls_pem_or_der(bytes: Vec<u8>) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    if looks_like_pem(&bytes) { crls(&bytes) } else { Ok(vec![CertificateRevocationListDer::from(bytes)]) }
}

/// Every section with its label, for readers that must name what they refuse.
pub fn sections(bytes: &[u8]) -> Result<Vec<::pem::Pem>, PemError> {
    ::pem::parse_many(bytes).map_err(|e| describe_section_error(&e))
}

/// Plain words for the `pem` crate's errors (its own text ends in base64's "Invalid padding"
/// or "Invalid symbol 61, offset 4.").
fn describe_section_error(error: &::pem::PemError) -> PemError {
    use ::pem::PemError as E;
    PemError(match error {
        E::MismatchedTags(begin, end) => format!("invalid PEM: a section begins as '{begin}' but ends as '{end}'"),
        E::MalformedFraming | E::MissingBeginTag => "invalid PEM: a BEGIN line is missing or malformed".into(),
        E::MissingEndTag => "invalid PEM: a section has no END line".into(),
        E::MissingData => "invalid PEM: a section is empty".into(),
        E::InvalidData(_) => {
            "invalid PEM: a section is not valid base64 (a character was changed, or lines are missing); export the file again".into()
        }
        E::InvalidHeader(_) => "invalid PEM: a header line (such as Proc-Type) is malformed".into(),
        E::NotUtf8(_) => "invalid PEM: it is not text (for a binary DER file, convert it with openssl x509 -inform der)".into(),
    })
}

/// Plain words for a PEM error (the crate's own text prints raw byte lists).
fn describe(error: &pem::Error) -> PemError {
    PemError(match error {
        pem::Error::MissingSectionEnd { .. } => "invalid PEM: a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "invalid PEM: a BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => {
            "invalid PEM: a section is not valid base64 (a character was changed, or lines are missing); export the file again".into()
        }
        pem::Error::NoItemsFound => "no PEM section of the expected kind".into(),
        pem::Error::SectionTooLarge => "invalid PEM: a section is larger than 256 MB".into(),
        other => format!("invalid PEM: {other}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_read_in_order_and_broken_pem_is_named_plainly() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let both = format!("{}{}", a.cert.pem(), b.cert.pem());
        let read = certificates(both.as_bytes()).unwrap();
        assert_eq!(read, vec![a.cert.der().clone(), b.cert.der().clone()]);
        assert_eq!(certificates_pem_or_der(a.cert.der().to_vec()).unwrap(), vec![a.cert.der().clone()]);
        assert!(private_key(a.signing_key.serialize_pem().as_bytes()).is_ok());

        let cut = &both[..both.len() - 30];
        let error = certificates(cut.as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "invalid PEM: a section has no END line");
    }

    #[test]
    fn bad_base64_in_a_section_is_named_without_the_decoder_text() {
        let broken = "-----BEGIN CERTIFICATE-----\nMIIB=x\n-----END CERTIFICATE-----\n";
        for error in [sections(broken.as_bytes()).unwrap_err(), certificates(broken.as_bytes()).unwrap_err()] {
            let text = error.to_string();
            assert!(text.starts_with("invalid PEM: a section is not valid base64"), "{text}");
            assert!(!text.contains("Invalid") && !text.contains("offset"), "{text}");
        }
    }
}
