use std::path::PathBuf;

/// Why a certificate or key could not be imported. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The file could not be read.
    #[error("cannot read '{path}': {}", crate::plain::io_error(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error. Its words are in the message, so it is not also the error's
        /// `source()` (a reader would see them twice).
        error: std::io::Error,
    },
    /// The file is larger than [`super::MAX_FILE_SIZE`].
    #[error("'{path}' is {size} bytes; certificate and key files are limited to 1 MiB")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not in any accepted format, or is damaged.
    #[error("cannot parse '{path}': {reason}")]
    Unparseable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("'{path}' contains no certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No private key was found: neither in the certificate file nor in a separate key file.
    #[error("no private key found in '{path}'; pass the key file with --key")]
    NoKey {
        /// The file that was searched.
        path: PathBuf,
    },
    /// More than one private key was found.
    #[error("'{path}' contains {count} private keys; expected exactly one")]
    ManyKeys {
        /// The file.
        path: PathBuf,
        /// How many keys were found.
        count: usize,
    },
    /// The private key is encrypted (PEM `ENCRYPTED PRIVATE KEY`) and no passphrase was given.
    #[error("the private key in '{path}' is encrypted; name the environment variable that holds its passphrase with --password-env")]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is encrypted the old OpenSSL way (`Proc-Type: 4,ENCRYPTED` headers in
    /// an `RSA PRIVATE KEY` or `EC PRIVATE KEY` section), which is not read.
    #[error(
        "the private key in '{path}' is encrypted the old OpenSSL way (Proc-Type: 4,ENCRYPTED), which edgemtls does not read; \
         convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -in {key} -out NEW.key` (it asks for the passphrase, then a new one) \
         and import NEW.key with --password-env",
        key = crate::shell::quote(&path.display().to_string())
    )]
    LegacyEncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The CA key is encrypted (`pki init --encrypt`) and no passphrase was given.
    #[error(
        "the CA key '{path}' is encrypted; name the environment variable that holds its passphrase with --password-env, or run on a terminal to be asked"
    )]
    CaKeyEncrypted {
        /// The key file.
        path: PathBuf,
    },
    /// The passphrase does not open an encrypted key.
    #[error("wrong passphrase for the encrypted key in '{path}'")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// A PKCS#12 file needs a password that was not given or was wrong.
    #[error("cannot open PKCS#12 file '{path}': {reason}")]
    Pkcs12 {
        /// The file.
        path: PathBuf,
        /// What went wrong (wrong password, unsupported encryption, ...).
        reason: String,
    },
    /// The chain breaks a limit TLS peers impose ([`super::ChainProblem`]).
    #[error("'{path}' holds {problem}; keep only the leaf and the intermediates up to the CA, each once")]
    Chain {
        /// The certificate file.
        path: PathBuf,
        /// The limit it breaks.
        problem: super::ChainProblem,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("the private key in '{key_path}' does not match the certificate in '{cert_path}'")]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// The key is of a type or size that is not accepted.
    #[error("unsupported key in '{path}': {reason}")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with the key.
        reason: String,
    },
    /// The RSA key is shorter than 2048 bits.
    #[error("the RSA key of the certificate in '{path}' has {bits} bits; at least 2048 are required")]
    RsaKeyTooSmall {
        /// The certificate file.
        path: PathBuf,
        /// The key length.
        bits: usize,
    },
    /// The RSA key is larger than the TLS library signs with.
    #[error("the RSA key of the certificate in '{path}' has {bits} bits, more than the TLS library signs with; use 2048 to 4096 bits, or ECDSA P-256", path = path.display())]
    RsaKeyTooLarge {
        /// The certificate file.
        path: PathBuf,
        /// The key length.
        bits: usize,
    },
    /// The leaf certificate has expired.
    #[error("the certificate in '{path}' expired on {not_after}")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// RFC 3339 expiry time.
        not_after: String,
    },
    /// The leaf certificate is not valid yet.
    #[error("the certificate in '{path}' is not valid until {not_before}")]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// RFC 3339 start of validity.
        not_before: String,
    },
    /// The leaf certificate restricts its use and client authentication is not among the uses.
    #[error(
        "the certificate in '{path}' has an Extended Key Usage without clientAuth ({usages}); it cannot be used as a client certificate"
    )]
    NoClientAuth {
        /// The certificate file.
        path: PathBuf,
        /// The usages it does allow.
        usages: String,
    },
    /// The leaf is a CA certificate (basic constraints CA:TRUE) with no clientAuth EKU.
    #[error(
        "the certificate in '{path}' is a CA certificate (basic constraints CA:TRUE), not a client certificate; import a certificate the CA issued (edgemtls pki issue --ca DIR --cn NAME makes one), or give this one extendedKeyUsage=clientAuth"
    )]
    CaCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// Writing a dev PKI file failed.
    #[error("cannot write '{path}': {}", crate::plain::io_error(error))]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error. Its words are in the message, so it is not also the error's
        /// `source()` (a reader would see them twice).
        error: std::io::Error,
    },
    /// Generating a certificate failed.
    #[error("cannot generate certificate: {0}")]
    Generate(String),
}
