//! Turning connection failures into the `wasi:http` error a guest understands.

use wasmtime_wasi_http::Error;

/// Maps a client error to the closest `wasi:http` error code, looking through its causes
/// for the TLS or socket error underneath.
pub fn classify_client_error(error: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return classify_tls(tls);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return classify_tls(tls);
            }
            // An alert that arrives after the handshake (TLS 1.3 servers refuse a missing or
            // unwanted client certificate then) reaches us from rustls' reader as text only.
            if io.kind() == std::io::ErrorKind::InvalidData
                && let Some(alert) = io.get_ref().and_then(|e| e.to_string().strip_prefix("received fatal alert: ").map(str::to_string))
            {
                return Error::TlsAlertReceived { alert_id: None, alert_message: Some(alert) };
            }
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return Error::ConnectionRefused,
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return Error::ConnectionTerminated,
                ErrorKind::TimedOut => return Error::ConnectionTimeout,
                _ => {}
            }
            // `io::Error::source()` skips the error it wraps (it returns that error's own
            // source), so descend through `get_ref()`: hyper-rustls wraps tokio-rustls'
            // `io::Error`, which holds the `rustls::Error`, in a second `io::Error`.
            if let Some(inner) = io.get_ref() {
                source = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        source = current.source();
    }
    if error.is_connect() {
        tracing::debug!(error = %error_chain(error), "connect failed");
        return Error::DestinationUnavailable;
    }
    Error::InternalError(Some(error_chain(error)))
}

fn classify_tls(error: &rustls::Error) -> Error {
    match error {
        rustls::Error::AlertReceived(alert) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => Error::TlsCertificateError,
        _ => Error::TlsProtocolError,
    }
}

/// An error and its causes, `: `-separated.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
