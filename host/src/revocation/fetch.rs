//! Asking over plain HTTP, as CRL distribution points and OCSP responders are published
//! (RFC 5280 §4.2.1.13, RFC 6960 appendix A: the answers are signed, so the transport need
//! not be), with a deadline and a size cap.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateRevocationListDer;

/// The largest CRL fetched; the CRLs of real public CAs stay well under it.
const MAX_CRL_BYTES: usize = 32 << 20;

/// The largest OCSP response read; real ones are a few KiB.
const MAX_OCSP_BYTES: usize = 64 << 10;

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
    /// The body is larger than the answer may be.
    #[error("the answer is larger than {0} KiB")]
    TooLarge(usize),
    /// The body is not a CRL.
    #[error("the answer is not a CRL (PEM or DER)")]
    NotACrl,
}

/// GETs `url` and returns the CRLs in the answer (DER, or PEM as some servers send).
pub async fn crls(url: &str, timeout: Duration) -> Result<Vec<CertificateRevocationListDer<'static>>, FetchError> {
    let request = http::Request::get(http_url(url)?).body(Full::new(Bytes::new())).map_err(|_| FetchError::BadUrl)?;
    let body = exchange(request, timeout, MAX_CRL_BYTES).await?;
    let crls = crate::pki::pem::crls_pem_or_der(body.to_vec()).map_err(|_| FetchError::NotACrl)?;
    if crls.is_empty() {
        return Err(FetchError::NotACrl);
    }
    Ok(crls)
}

/// POSTs an OCSP request (DER) to a responder and returns its answer (DER).
pub async fn ocsp(url: &str, request_der: Vec<u8>, timeout: Duration) -> Result<Bytes, FetchError> {
    let request = http::Request::post(http_url(url)?)
        .header(http::header::CONTENT_TYPE, "application/ocsp-request")
        .header(http::header::ACCEPT, "application/ocsp-response")
        .body(Full::new(Bytes::from(request_der)))
        .map_err(|_| FetchError::BadUrl)?;
    exchange(request, timeout, MAX_OCSP_BYTES).await
}

fn http_url(url: &str) -> Result<http::Uri, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::BadUrl)?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(FetchError::BadUrl);
    }
    Ok(uri)
}

async fn exchange(request: http::Request<Full<Bytes>>, timeout: Duration, max_bytes: usize) -> Result<Bytes, FetchError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::time::timeout(timeout, async {
        let response = client.request(request).await.map_err(|e| FetchError::Transport(crate::error_chain::plain_cause(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        Limited::new(response.into_body(), max_bytes).collect().await.map(|collected| collected.to_bytes()).map_err(|error| {
            match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => FetchError::TooLarge(max_bytes >> 10),
                Err(other) => FetchError::Transport(other.to_string()),
            }
        })
    })
    .await
    .map_err(|_| FetchError::Timeout(timeout))?
}
