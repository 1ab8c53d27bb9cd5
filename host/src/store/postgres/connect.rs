//! Connecting: the URL read as libpq's names say (`sslmode`, `sslrootcert`) into a client
//! config whose TLS always verifies the server, the connection made on the bridge's runtime,
//! and its failures told apart (not there, login refused, certificate refused).

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::bridge::{QUERY_TIMEOUT, Timeout, runtime, wait};
use crate::store::error::{DatabaseError, postgres_reason};
use crate::store::{PostgresUrl, StoreError};

/// The first wait before connecting again after a failure; it doubles up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How to connect: the parsed URL and the TLS settings it asked for.
#[derive(Clone)]
pub(super) struct Connector {
    config: Config,
    tls: MakeRustlsConnect,
    /// The URL without its password, for messages.
    pub(super) shown: String,
}

impl Connector {
    pub(super) fn new(url: &PostgresUrl) -> Result<Self, StoreError> {
        let shown = url.shown();
        let invalid = |reason: String| StoreError::Unreachable { store: shown.clone(), reason };
        let (base, query) = url.secret().split_once('?').unwrap_or((url.secret(), ""));
        // libpq's names for what rustls does: the server's certificate is always verified,
        // against `sslrootcert` or the public web roots, and its name always checked.
        let mut roots_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", value)) => {
                    roots_file = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
                }
                Some(("sslmode", "verify-full" | "verify-ca")) => kept.push("sslmode=require".to_string()),
                _ => kept.push(pair.to_string()),
            }
        }
        let url_for_client = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        let mut config: Config = url_for_client.parse().map_err(|error: tokio_postgres::Error| StoreError::Unreachable {
            store: shown.clone(),
            reason: format!("the URL is not valid: {}", postgres_reason(&error)),
        })?;
        config.connect_timeout(QUERY_TIMEOUT);
        config.application_name("edgemtls");
        // A server that vanishes mid-answer is noticed, not waited on forever.
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(QUERY_TIMEOUT);
        let mut roots = rustls::RootCertStore::empty();
        match &roots_file {
            Some(path) => {
                let certificates = crate::pki::trust_files::read_ca_bundle(std::path::Path::new(path))
                    .map_err(|reason| invalid(format!("sslrootcert '{path}': {reason}")))?;
                crate::pki::trust_files::add_ca_certificates(certificates, &mut roots)
                    .map_err(|reason| invalid(format!("sslrootcert '{path}': {reason}")))?;
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(format!("TLS set-up: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config, tls: MakeRustlsConnect::new(tls), shown })
    }

    /// Connects and returns the client and the connection, which the caller must drive.
    pub(super) async fn connect(
        &self,
    ) -> Result<(Client, tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>), tokio_postgres::Error>
    {
        self.config.connect(self.tls.clone()).await
    }

    /// Connects and leaves the connection running on the PostgreSQL runtime.
    pub(super) fn connect_client(&self) -> Result<Client, StoreError> {
        let runtime = runtime().map_err(|reason| StoreError::Unreachable { store: self.shown.clone(), reason })?;
        let connector = self.clone();
        let connecting = runtime.spawn(async move {
            let (client, connection) = connector.connect().await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away.
                let _ = connection.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        match wait(connecting) {
            Ok(Ok(Ok(client))) => Ok(client),
            Ok(Ok(Err(error))) => Err(classify(&self.shown, error)),
            Ok(Err(_)) => Err(StoreError::Unreachable { store: self.shown.clone(), reason: "the connection attempt failed".into() }),
            Err(Timeout) => Err(timed_out(&self.shown)),
        }
    }
}

pub(super) fn timed_out(shown: &str) -> StoreError {
    StoreError::Unreachable { store: shown.to_string(), reason: format!("no answer within {} s", QUERY_TIMEOUT.as_secs()) }
}

/// Tells apart a server that is not there, a login it refused, and anything else it said.
pub(super) fn classify(shown: &str, error: tokio_postgres::Error) -> StoreError {
    let store = shown.to_string();
    match error.code() {
        Some(code) if code.code().starts_with("28") => StoreError::LoginRefused { store, reason: postgres_reason(&error) },
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
            StoreError::Unreachable { reason: format!("{} (create it first: createdb)", postgres_reason(&error)), store }
        }
        Some(_) => StoreError::Database { store, error: DatabaseError::Postgres(error) },
        None => StoreError::Unreachable {
            reason: tls_refusal(&error).unwrap_or_else(|| {
                format!("{}; check that PostgreSQL runs there and that the URL's host and port are right", postgres_reason(&error))
            }),
            store,
        },
    }
}

/// Why the server's certificate was refused, in words that say what to change in the URL.
fn tls_refusal(error: &tokio_postgres::Error) -> Option<String> {
    use crate::pki::CertificateFault as F;
    let certificate = crate::error_chain::causes(error).skip(1).find_map(|cause| match cause.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(certificate)) => Some(certificate),
        _ => None,
    })?;
    let why = match F::of(certificate) {
        F::UnknownIssuer => "it is signed by a CA the URL does not trust; name the database's CA with sslrootcert=FILE",
        F::WrongName => "it is for other names than the URL's host; connect by a name the certificate lists",
        F::Expired(_) => "it has expired",
        F::NotYetValid(_) => "it is not valid yet (check the clocks)",
        _ => "it is not acceptable for a TLS server",
    };
    Some(format!("the TLS handshake failed: the server's certificate was refused: {why}"))
}
