//! X.509 version 1 certificates, named as such.
//!
//! `openssl x509 -req` without `-extfile` makes a version 1 certificate: it has no extensions,
//! so no basicConstraints, key usage, extended key usage or subjectAltName. webpki (and so
//! rustls) refuses to parse one as an end-entity certificate; OpenSSL, and so nginx, accepts
//! it. Every place that meets one says so in these words, with the way to a version 3 one.

use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

/// What a certificate is for, which decides the extensions a re-issued one needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client certificate (`extendedKeyUsage=clientAuth`).
    Client,
    /// A server certificate (`extendedKeyUsage=serverAuth` and the names it serves).
    Server,
}

/// Whether a verifier's typed error says the certificate is not version 3.
pub fn is_version_1_error(error: &CertificateError) -> bool {
    match error {
        CertificateError::Other(other) => {
            matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::UnsupportedCertVersion))
        }
        _ => false,
    }
}

/// Whether `der` parses as an X.509 version 1 (or 2) certificate.
pub fn is_version_1(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, cert)| cert.version() != X509Version::V3)
}

/// Why a version 1 certificate cannot be verified here, and how to issue a version 3 one
/// instead, for a certificate used as `role`.
pub fn explanation(role: Role) -> String {
    let (usage, names, issue) = match role {
        Role::Client => ("clientAuth", "", "edgemtls pki issue --ca <dir> --cn <name> --out <dir>"),
        Role::Server => (
            "serverAuth",
            "\\nsubjectAltName=DNS:<host name>",
            "edgemtls pki issue --server --san <host name> --ca <dir> --cn <name> --out <dir>",
        ),
    };
    format!(
        "it is an X.509 version 1 certificate (what `openssl x509 -req` makes without -extfile), which has no extensions \
         and which rustls (and so edgemtls) does not verify; issue it again as version 3: add \
         `-extfile <(printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage={usage}{names}')` \
         to that openssl command, or run `{issue}`"
    )
}
