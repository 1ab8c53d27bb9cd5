//! OCSP (RFC 6960): the request for one certificate, and reading a responder's answer (or a
//! stapled one) only after checking that its issuer, or a responder it delegated to, signed it.
//! The ASN.1 is `x509-ocsp`'s; the signatures are checked with the same algorithms rustls uses.

use der::asn1::{Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::Certificate;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request, TbsRequest};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), as webpki takes an EKU: the OID's content bytes.
const OCSP_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
/// How far clocks may disagree when reading thisUpdate and nextUpdate.
const CLOCK_SKEW_SECS: u64 = 300;
/// A response without nextUpdate is used for at most this long after its thisUpdate.
const MAX_AGE_WITHOUT_NEXT_UPDATE_SECS: u64 = 3600;

/// What a verified OCSP response says about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspAnswer {
    /// Good until `valid_until` (its nextUpdate, or an hour after thisUpdate).
    Good {
        /// Unix seconds after which the answer must be asked again.
        valid_until: u64,
    },
    /// Revoked at this time (RFC 3339).
    Revoked {
        /// The revocation time.
        when: String,
        /// Unix seconds after which the answer must be asked again.
        valid_until: u64,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// The OCSP responder a certificate names (authorityInfoAccess, http only).
pub fn responder_url(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    for extension in parsed.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(access) = extension.parsed_extension() {
            for description in &access.accessdescs {
                if description.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    && let GeneralName::URI(uri) = &description.access_location
                    && uri.to_ascii_lowercase().starts_with("http://")
                {
                    return Some(uri.to_string());
                }
            }
        }
    }
    None
}

/// The CertID of `leaf` issued by `issuer` (SHA-1, which every responder answers).
pub fn cert_id(leaf: &CertificateDer<'_>, issuer: &CertificateDer<'_>) -> Option<CertId> {
    let leaf = Certificate::from_der(leaf).ok()?;
    let issuer = Certificate::from_der(issuer).ok()?;
    let sha1 = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref().to_vec();
    let name = issuer.tbs_certificate.subject.to_der().ok()?;
    let key = issuer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    Some(CertId {
        hash_algorithm: AlgorithmIdentifierOwned { oid: SHA1, parameters: Some(Null.into()) },
        issuer_name_hash: OctetString::new(sha1(&name)).ok()?,
        issuer_key_hash: OctetString::new(sha1(key)).ok()?,
        serial_number: SerialNumber::new(leaf.tbs_certificate.serial_number.as_bytes()).ok()?,
    })
}

/// The DER of an unsigned request for `id`.
pub fn request(id: &CertId) -> Option<Vec<u8>> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request { req_cert: id.clone(), single_request_extensions: None }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .ok()
}

/// Reads a response (from a responder or stapled) about `id`, after checking its signature
/// against `issuer` or a responder certificate `issuer` signed for OCSP, and its dates.
pub fn read(response: &[u8], id: &CertId, issuer: &CertificateDer<'_>, now: UnixTime) -> Result<OcspAnswer, String> {
    let response = OcspResponse::from_der(response).map_err(|_| "the answer is not an OCSP response".to_string())?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!("the responder answered '{}'", status_text(response.response_status)));
    }
    let bytes = response.response_bytes.ok_or("the answer carries no response")?;
    if bytes.response_type != OCSP_BASIC {
        return Err("the answer is not a basic OCSP response".into());
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(|_| "the basic OCSP response cannot be read")?;
    check_signature(&basic, issuer, now)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| same_certificate(&single.cert_id, id))
        .ok_or("the response is about another certificate")?;
    let seconds = |time: &x509_ocsp::OcspGeneralizedTime| time.0.to_unix_duration().as_secs();
    let now = now.as_secs();
    let this_update = seconds(&single.this_update);
    if this_update > now + CLOCK_SKEW_SECS {
        return Err("the response is dated in the future; check the clocks".into());
    }
    let valid_until = match &single.next_update {
        Some(next) => seconds(next),
        None => this_update + MAX_AGE_WITHOUT_NEXT_UPDATE_SECS,
    };
    if valid_until + CLOCK_SKEW_SECS < now {
        return Err("the response is out of date (its nextUpdate has passed)".into());
    }
    Ok(match &single.cert_status {
        CertStatus::Good(_) => OcspAnswer::Good { valid_until },
        CertStatus::Revoked(info) => OcspAnswer::Revoked { when: crate::pki::rfc3339_unix(seconds(&info.revocation_time)), valid_until },
        CertStatus::Unknown(_) => OcspAnswer::Unknown,
    })
}

fn status_text(status: OcspResponseStatus) -> &'static str {
    match status {
        OcspResponseStatus::Successful => "successful",
        OcspResponseStatus::MalformedRequest => "malformed request",
        OcspResponseStatus::InternalError => "internal error",
        OcspResponseStatus::TryLater => "try later",
        OcspResponseStatus::SigRequired => "signature required",
        OcspResponseStatus::Unauthorized => "unauthorized",
    }
}

/// The same certificate: hash algorithm parameters may be absent or NULL, so those are not
/// compared byte for byte.
fn same_certificate(a: &CertId, b: &CertId) -> bool {
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number == b.serial_number
}

/// The response is signed by the issuer, or by a certificate in it that the issuer signed
/// with the OCSPSigning extended key usage (RFC 6960 §4.2.2.2).
fn check_signature(basic: &BasicOcspResponse, issuer: &CertificateDer<'_>, now: UnixTime) -> Result<(), String> {
    let message = basic.tbs_response_data.to_der().map_err(|_| "the response cannot be re-encoded")?;
    let signature = basic.signature.as_bytes().ok_or("the response's signature is malformed")?;
    let algorithm = contents(&basic.signature_algorithm).ok_or("the response's signature algorithm is malformed")?;
    let signed_by = |cert: &[u8]| verify_with(cert, &algorithm, &message, signature);
    if signed_by(issuer) {
        return Ok(());
    }
    for responder in basic.certs.iter().flatten() {
        let Ok(der) = responder.to_der() else { continue };
        if delegated_by(&der, issuer, now) && signed_by(&der) {
            return Ok(());
        }
    }
    Err("the response is not signed by the certificate's issuer or a responder it authorised".into())
}

/// Whether `responder` is a certificate `issuer` signed for OCSP signing, valid now.
fn delegated_by(responder: &[u8], issuer: &CertificateDer<'_>, now: UnixTime) -> bool {
    let responder = CertificateDer::from(responder);
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&responder) else { return false };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(issuer) else { return false };
    end_entity
        .verify_for_usage(crate::pki::signature_algorithms(), &[anchor], &[], now, webpki::KeyUsage::required(OCSP_SIGNING_EKU), None, None)
        .is_ok()
}

/// Whether `signature` over `message` verifies with `cert`'s key under `algorithm` (the DER
/// contents of an AlgorithmIdentifier), with one of the algorithms rustls supports.
fn verify_with(cert: &[u8], algorithm: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(cert) = Certificate::from_der(cert) else { return false };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let Some(key_algorithm) = contents(&spki.algorithm) else { return false };
    let Some(public_key) = spki.subject_public_key.as_bytes() else { return false };
    crate::pki::signature_algorithms().iter().any(|candidate| {
        candidate.signature_alg_id().as_ref() == algorithm
            && candidate.public_key_alg_id().as_ref() == key_algorithm.as_slice()
            && candidate.verify_signature(public_key, message, signature).is_ok()
    })
}

/// The DER contents (no tag and length) of an AlgorithmIdentifier, as rustls names algorithms.
fn contents(algorithm: &AlgorithmIdentifierOwned) -> Option<Vec<u8>> {
    let der = algorithm.to_der().ok()?;
    let any = der::asn1::AnyRef::from_der(&der).ok()?;
    Some(any.value().to_vec())
}
