//! What the host knows about the caller of one TLS connection: computed once, after the
//! handshake, and shared by every request on the connection.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::header::{HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::identity_headers as headers;
use crate::pki::CertificateFault;

/// Why a caller's certificate is not accepted. Each has a problem type of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerProblem {
    /// None was presented where one is required.
    Required,
    /// It expired.
    Expired,
    /// It is not valid yet.
    NotYetValid,
    /// No configured `client_ca` issued it.
    UnknownIssuer,
    /// Its issuer's CRL lists it (a `crl` file, or `[tls] revocation`: OCSP or a fetched CRL).
    Revoked,
    /// `[tls] revocation` asked its issuer and got no answer (no `revocation_soft_fail`).
    RevocationUnknown(String),
    /// It may not be used for client authentication (no `clientAuth` extended key usage).
    WrongPurpose,
    /// It is an X.509 version 1 certificate, which webpki does not verify.
    Version1,
    /// It cannot be used for another reason (malformed, unsupported algorithm, …).
    Invalid(String),
    /// It verifies, but the route's allow-list does not include it.
    NotAllowed(String),
}

impl CallerProblem {
    /// The problem type's last part (`urn:edgemtls:problem:client-certificate-<reason>`),
    /// also the metrics label and the `edgemtls-client-cert-error` header's value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::UnknownIssuer => "unknown-issuer",
            Self::Revoked => "revoked",
            Self::RevocationUnknown(_) => "revocation-unknown",
            Self::WrongPurpose => "wrong-purpose",
            Self::Version1 => "version-1",
            Self::Invalid(_) => "invalid",
            Self::NotAllowed(_) => "not-allowed",
        }
    }

    /// What happened and what to do, in plain words.
    pub fn detail(&self) -> String {
        match self {
            Self::Required => {
                "this route requires a client certificate and none was presented; connect with one issued by the configured client CA"
                    .into()
            }
            Self::Expired => "the client certificate has expired; renew it".into(),
            Self::NotYetValid => "the client certificate is not valid yet (check its notBefore and the clocks)".into(),
            Self::UnknownIssuer => "the client certificate was not issued by a CA this server trusts for callers".into(),
            Self::Revoked => "the client certificate has been revoked by its issuer".into(),
            Self::RevocationUnknown(why) => format!(
                "cannot tell whether the client certificate is revoked ({why}); try again later, or ask the operator \
                 (revocation_soft_fail = true in [tls] admits callers when their issuer does not answer)"
            ),
            Self::WrongPurpose => {
                "the client certificate is not valid for client authentication (it lacks the clientAuth extended key usage)".into()
            }
            Self::Version1 => {
                format!("the client certificate cannot be used: {}", crate::pki::version1::explanation(crate::pki::version1::Role::Client))
            }
            Self::Invalid(why) => format!("the client certificate cannot be used: {why}"),
            Self::NotAllowed(why) => format!("the client certificate is valid but not allowed on this route: {why}"),
        }
    }

    /// From the verifier's typed error, in plain words (rustls' own text for some of these
    /// is its `Debug` form).
    pub(super) fn from_tls(error: &rustls::Error) -> Self {
        let rustls::Error::InvalidCertificate(error) = error else {
            return Self::Invalid("it could not be verified".into());
        };
        let invalid = |why: &str| Self::Invalid(why.into());
        match CertificateFault::of(error) {
            CertificateFault::Expired(_) => Self::Expired,
            CertificateFault::NotYetValid(_) => Self::NotYetValid,
            CertificateFault::UnknownIssuer => Self::UnknownIssuer,
            CertificateFault::Revoked => Self::Revoked,
            CertificateFault::WrongPurpose => Self::WrongPurpose,
            CertificateFault::Version1 => Self::Version1,
            CertificateFault::Malformed => invalid("it is not a well-formed X.509 certificate"),
            CertificateFault::BadSignature => invalid("its signature does not verify"),
            CertificateFault::RevocationUnknown => invalid("its revocation status is unknown"),
            CertificateFault::CrlExpired => invalid("the CRL for its issuer has expired; the operator must refresh it"),
            CertificateFault::UnsupportedAlgorithm => invalid("it is signed with an algorithm this server does not support"),
            CertificateFault::CriticalExtension => invalid("it has a critical extension this server does not understand"),
            CertificateFault::WrongName | CertificateFault::Chain(_) | CertificateFault::Other => invalid("the verifier refused it"),
        }
    }
}

/// The facts of a presented certificate, as handlers and allow-lists see them.
#[derive(Debug, Clone)]
pub struct PresentedCertificate {
    /// Subject DN, RFC 4514 (`CN=deploy-bot,O=Example`).
    pub subject: String,
    /// The subject's last common name, if it has one.
    pub subject_cn: Option<String>,
    /// Issuer DN, RFC 4514.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Subject alternative names: `DNS:…`, `URI:…`, `IP:…`, `email:…`.
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
    /// Whether the chain verified against `client_ca` (and CRLs), and why not.
    pub verdict: Result<(), CallerProblem>,
}

impl PresentedCertificate {
    /// A certificate that cannot be read (whatever the verifier said): refused.
    fn unreadable(why: String) -> Self {
        Self {
            subject: String::new(),
            subject_cn: None,
            issuer: String::new(),
            serial: String::new(),
            sans: Vec::new(),
            not_before: String::new(),
            not_after: String::new(),
            fingerprint_sha256: String::new(),
            spki_sha256: [0; 32],
            verdict: Err(CallerProblem::Invalid(why)),
        }
    }
}

/// The caller of one connection over the TLS listener.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The certificate, when one was presented.
    pub certificate: Option<PresentedCertificate>,
    /// The identity headers every request on the connection gets, built once.
    headers: Arc<[(HeaderName, HeaderValue)]>,
    /// The chain presented, kept to verify again when the listener's trust changes.
    pub(super) chain: Option<Arc<[CertificateDer<'static>]>>,
    /// Which version of the listener's trust (CAs, CRLs) gave the verdict.
    pub(super) trust_version: u64,
    /// When the verdict stops holding by itself: the leaf's notAfter (Unix seconds).
    pub(super) valid_until: i64,
    /// When the issuer's answer on revocation (`[tls] revocation`) is asked again; `None`
    /// when it was not asked.
    pub(super) revocation_due: Option<std::time::Instant>,
}

impl Caller {
    /// A caller that presented no certificate.
    pub fn anonymous() -> Self {
        Self {
            certificate: None,
            headers: Arc::new([(HeaderName::from_static(headers::PRESENTED), HeaderValue::from_static("false"))]),
            chain: None,
            trust_version: 0,
            valid_until: i64::MAX,
            revocation_due: None,
        }
    }

    /// A caller that presented `chain` (leaf first), with the verdict of version
    /// `trust_version` of the listener's trust.
    pub(super) fn presented(chain: &[CertificateDer<'static>], verdict: Result<(), CallerProblem>, trust_version: u64) -> Self {
        let Some(leaf) = chain.first() else { return Self::anonymous() };
        let valid_until = X509Certificate::from_der(leaf).map_or(i64::MAX, |(_, cert)| cert.validity().not_after.timestamp());
        let certificate = facts(leaf, verdict).unwrap_or_else(PresentedCertificate::unreadable);
        let headers = identity_headers(chain, &certificate);
        Self {
            certificate: Some(certificate),
            headers: headers.into(),
            chain: Some(chain.into()),
            trust_version,
            valid_until,
            revocation_due: None,
        }
    }

    /// The certificate presented (DER), when one was.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.as_ref().and_then(|chain| chain.first())
    }

    /// Puts the identity headers on a request (whose caller-sent copies were removed).
    pub fn apply(&self, request_headers: &mut hyper::HeaderMap) {
        for (name, value) in self.headers.iter() {
            request_headers.insert(name.clone(), value.clone());
        }
    }
}

fn facts(leaf: &CertificateDer<'_>, verdict: Result<(), CallerProblem>) -> Result<PresentedCertificate, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("it cannot be parsed ({e})"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map(crate::pki::rfc3339).unwrap_or_default()
    };
    let mut spki_sha256 = [0u8; 32];
    spki_sha256.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw).as_ref());
    Ok(PresentedCertificate {
        subject: rfc4514(cert.subject()),
        subject_cn: cert.subject().iter_common_name().last().and_then(|cn| cn.as_str().ok()).map(str::to_string),
        issuer: rfc4514(cert.issuer()),
        serial: cert.tbs_certificate.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
        sans: crate::pki::subject_alt_names(&cert),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        fingerprint_sha256: ring::digest::digest(&ring::digest::SHA256, leaf).as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        spki_sha256,
        verdict,
    })
}

/// A DN as RFC 4514 writes it: the last RDN first, `,` between them, `+` within one, and
/// special or non-ASCII characters escaped, so the value is one line of ASCII (what
/// `openssl x509 -nameopt RFC2253` prints for ASCII names).
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<&x509_parser::x509::RelativeDistinguishedName<'_>> = name.iter().collect();
    let rdns: Vec<String> = rdns
        .into_iter()
        .rev()
        .map(|rdn| {
            let attributes: Vec<String> = rdn
                .iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let kind = x509_parser::objects::oid2abbrev(oid, registry).map(str::to_string).unwrap_or_else(|_| oid.to_id_string());
                    let value = match attribute.as_str() {
                        Ok(text) => escape_dn_value(text),
                        // Not a string type: the DER value in hex, as RFC 4514 §2.4 says.
                        Err(_) => format!("#{}", attribute.attr_value().as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()),
                    };
                    format!("{kind}={value}")
                })
                .collect();
            attributes.join("+")
        })
        .collect();
    rdns.join(",")
}

fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let special =
            matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') || (i == 0 && (c == '#' || c == ' ')) || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        }
    }
    out
}

/// The headers a handler gets for a caller that presented `chain`.
fn identity_headers(chain: &[CertificateDer<'static>], certificate: &PresentedCertificate) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, value: String| {
        // Every value is built from ASCII above; a value that still is not a header value is
        // left out rather than sent broken.
        if let Ok(value) = HeaderValue::try_from(value) {
            out.push((HeaderName::from_static(name), value));
        }
    };
    add(headers::PRESENTED, "true".into());
    add(headers::VERIFIED, certificate.verdict.is_ok().to_string());
    if let Err(problem) = &certificate.verdict {
        add(headers::ERROR, problem.reason().into());
    }
    // RFC 9440: structured-field byte sequences of the DER.
    add(headers::CLIENT_CERT, format!(":{}:", STANDARD.encode(&chain[0])));
    if chain.len() > 1 {
        let rest: Vec<String> = chain[1..].iter().map(|c| format!(":{}:", STANDARD.encode(c))).collect();
        add(headers::CLIENT_CERT_CHAIN, rest.join(", "));
    }
    add(headers::SUBJECT, certificate.subject.clone());
    add(headers::ISSUER, certificate.issuer.clone());
    add(headers::SERIAL, certificate.serial.clone());
    if !certificate.sans.is_empty() {
        add(headers::SANS, certificate.sans.join(", "));
    }
    add(headers::NOT_BEFORE, certificate.not_before.clone());
    add(headers::NOT_AFTER, certificate.not_after.clone());
    add(headers::FINGERPRINT_SHA256, certificate.fingerprint_sha256.clone());
    add(headers::SPKI_SHA256, URL_SAFE_NO_PAD.encode(certificate.spki_sha256));
    out
}
