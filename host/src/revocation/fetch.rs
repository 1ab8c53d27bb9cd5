//! Fetching a CRL over plain HTTP, as distribution points publish them (RFC 5280 §4.2.1.13:
//! the CRL is signed, so the transport need not be), with a deadline and a size cap.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateRevocationListDer;

/// The largest CRL fetched; the CRLs of real public CAs stay well under it.
const MAX_CRL_BYTES: usize = 32 << 20;

/// Why a CRL could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not one this client can fetch.
    #[error("not an http:// URL")]
    BadUrl,
    /// No answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or the transfer failed.
    #[error("the request failed: {0}")]
    Transport(String),
    /// The server answered with another status than 200.
    #[error("the server answered {0}")]
    Status(u16),
    /// The body is larger than a CRL may be.
    #[error("the answer is larger than {} MiB", MAX_CRL_BYTES >> 20)]
    TooLarge,
    /// The body is not a CRL.
    #[error("the answer is not a CRL (PEM or DER)")]
    NotACrl,
}

/// GETs `url` and returns the CRLs in the answer (DER, or PEM as some servers send).
pub async fn crls(url: &str, timeout: Duration) -> Result<Vec<CertificateRevocationListDer<'static>>, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::BadUrl)?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(FetchError::BadUrl);
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = tokio::time::timeout(timeout, async {
        let response = client.get(uri).await.map_err(|e| FetchError::Transport(causes(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        Limited::new(response.into_body(), MAX_CRL_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|error| match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => FetchError::TooLarge,
                Err(other) => FetchError::Transport(other.to_string()),
            })
    })
    .await
    .map_err(|_| FetchError::Timeout(timeout))??;
    let crls = crate::pki::pem::crls_pem_or_der(body.to_vec()).map_err(|_| FetchError::NotACrl)?;
    if crls.is_empty() {
        return Err(FetchError::NotACrl);
    }
    Ok(crls)
}

/// An error and its causes, outermost first: hyper's own text is only "client error (Connect)".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
