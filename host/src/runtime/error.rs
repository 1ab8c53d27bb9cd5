//! Why a handler produced no response, in words for the host log and the caller's problem.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

/// Why a handler produced no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The component could not be loaded.
    #[error("cannot load component '{path}': {reason}", path = path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Instantiation failed.
    #[error("cannot instantiate the handler: {0}")]
    Instantiate(String),
    /// The request cannot be handed to a guest (for example, it names no host).
    #[error("the request cannot be handled: {0}")]
    BadRequest(String),
    /// Every instance slot is in use: the host is at its concurrency limit.
    #[error("the host is running {0} handler instances, its limit; try again shortly")]
    Busy(u32),
    /// The handler ran past its deadline.
    #[error("the handler did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The handler hit its memory cap.
    #[error("the handler exceeded its memory limit of {0} bytes")]
    MemoryExceeded(usize),
    /// The handler trapped or panicked.
    #[error("the handler failed: {0}")]
    Trap(String),
    /// The handler returned without setting a response.
    #[error("the handler returned without a response")]
    NoResponse,
    /// The handler answered with a `wasi:http` error code.
    #[error("the handler reported an error: {}", error_code_name(.0))]
    Guest(ErrorCode),
}

/// An `error-code` as WIT spells it (`connection-refused`), with an internal error's message.
fn error_code_name(code: &ErrorCode) -> String {
    if let ErrorCode::InternalError(Some(message)) = code {
        return format!("internal-error: {message}");
    }
    error_code_wit_name(code).to_string()
}

/// The WIT name of an `error-code` case, payload left out. Exhaustive: a case a newer
/// wasi:http adds fails the build here rather than printing something made up.
fn error_code_wit_name(code: &ErrorCode) -> &'static str {
    use ErrorCode as E;
    match code {
        E::DnsTimeout => "dns-timeout",
        E::DnsError(_) => "dns-error",
        E::DestinationNotFound => "destination-not-found",
        E::DestinationUnavailable => "destination-unavailable",
        E::DestinationIpProhibited => "destination-ip-prohibited",
        E::DestinationIpUnroutable => "destination-ip-unroutable",
        E::ConnectionRefused => "connection-refused",
        E::ConnectionTerminated => "connection-terminated",
        E::ConnectionTimeout => "connection-timeout",
        E::ConnectionReadTimeout => "connection-read-timeout",
        E::ConnectionWriteTimeout => "connection-write-timeout",
        E::ConnectionLimitReached => "connection-limit-reached",
        E::TlsProtocolError => "tls-protocol-error",
        E::TlsCertificateError => "tls-certificate-error",
        E::TlsAlertReceived(_) => "tls-alert-received",
        E::HttpRequestDenied => "http-request-denied",
        E::HttpRequestLengthRequired => "http-request-length-required",
        E::HttpRequestBodySize(_) => "http-request-body-size",
        E::HttpRequestMethodInvalid => "http-request-method-invalid",
        E::HttpRequestUriInvalid => "http-request-uri-invalid",
        E::HttpRequestUriTooLong => "http-request-uri-too-long",
        E::HttpRequestHeaderSectionSize(_) => "http-request-header-section-size",
        E::HttpRequestHeaderSize(_) => "http-request-header-size",
        E::HttpRequestTrailerSectionSize(_) => "http-request-trailer-section-size",
        E::HttpRequestTrailerSize(_) => "http-request-trailer-size",
        E::HttpResponseIncomplete => "http-response-incomplete",
        E::HttpResponseHeaderSectionSize(_) => "http-response-header-section-size",
        E::HttpResponseHeaderSize(_) => "http-response-header-size",
        E::HttpResponseBodySize(_) => "http-response-body-size",
        E::HttpResponseTrailerSectionSize(_) => "http-response-trailer-section-size",
        E::HttpResponseTrailerSize(_) => "http-response-trailer-size",
        E::HttpResponseTransferCoding(_) => "http-response-transfer-coding",
        E::HttpResponseContentCoding(_) => "http-response-content-coding",
        E::HttpResponseTimeout => "http-response-timeout",
        E::HttpUpgradeFailed => "http-upgrade-failed",
        E::HttpProtocolError => "http-protocol-error",
        E::LoopDetected => "loop-detected",
        E::ConfigurationError => "configuration-error",
        E::InternalError(_) => "internal-error",
    }
}

/// What a guest's trap (or its deadline, or its memory cap) means for its request.
pub(super) fn classify_trap(error: &wasmtime::Error, memory_refused: bool, timeout: Duration, memory_limit: usize) -> HandlerError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return HandlerError::Timeout(timeout);
    }
    // The limiter refused a growth: whatever the guest did next (trap, abort on a failed
    // allocation), the memory cap is why.
    if memory_refused {
        return HandlerError::MemoryExceeded(memory_limit);
    }
    HandlerError::Trap(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_wit_spells_them() {
        assert_eq!(error_code_name(&ErrorCode::ConnectionRefused), "connection-refused");
        assert_eq!(error_code_name(&ErrorCode::HttpRequestUriTooLong), "http-request-uri-too-long");
        assert_eq!(error_code_name(&ErrorCode::HttpResponseBodySize(Some(3))), "http-response-body-size");
        assert_eq!(error_code_name(&ErrorCode::InternalError(Some("no memory".into()))), "internal-error: no memory");
        assert_eq!(error_code_name(&ErrorCode::InternalError(None)), "internal-error");
    }
}
