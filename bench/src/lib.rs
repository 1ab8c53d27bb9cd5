//! Benchmark peers for edgemtls; `bench/run.py` drives them (see `bench/README.md`).

use std::path::Path;

use anyhow::Context;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM chain and key (PKCS#8, as `edgemtls pki` writes them).
pub fn load_identity(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let identity =
        edgemtls_host::pki::load_identity(edgemtls_host::pki::ImportRequest { cert_path: cert, key_path: Some(key), password: None })
            .with_context(|| format!("loading {}", cert.display()))?;
    Ok((identity.chain, identity.key))
}

/// Reads the certificates of a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(edgemtls_host::pki::pem::certificates(&bytes)?)
}
