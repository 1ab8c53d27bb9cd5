//! Bodies: bytes in guest memory, or a stream passed through without buffering.

use std::fmt;

use wasi::http::types::{IncomingBody, OutgoingBody};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::FetchError;

/// A request or response body.
///
/// `Stream` bodies (an incoming request's body, an upstream response's body) are moved
/// through by the host, chunk by chunk, so a 50 MiB upload or download never sits in guest
/// or host memory whole.
pub enum Body {
    /// Bytes held by the guest.
    Full(Vec<u8>),
    /// A body still arriving.
    Stream(IncomingBody),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Full(bytes) => write!(f, "Body::Full({} bytes)", bytes.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::Full(Vec::new())
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::Full(bytes)
    }
}

impl From<&[u8]> for Body {
    fn from(bytes: &[u8]) -> Self {
        Body::Full(bytes.to_vec())
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::Full(text.into_bytes())
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Body::Full(text.as_bytes().to_vec())
    }
}

impl From<IncomingBody> for Body {
    fn from(body: IncomingBody) -> Self {
        Body::Stream(body)
    }
}

impl Body {
    /// Reads the whole body into memory.
    pub fn into_bytes(self) -> Result<Vec<u8>, FetchError> {
        match self {
            Body::Full(bytes) => Ok(bytes),
            Body::Stream(body) => {
                let mut bytes = Vec::new();
                {
                    let stream = body.stream().map_err(|()| FetchError::Body("body stream already taken".into()))?;
                    loop {
                        match stream.blocking_read(READ_CHUNK) {
                            Ok(chunk) => bytes.extend_from_slice(&chunk),
                            Err(StreamError::Closed) => break,
                            Err(StreamError::LastOperationFailed(e)) => return Err(stream_failure(e)),
                        }
                    }
                }
                drop(IncomingBody::finish(body));
                Ok(bytes)
            }
        }
    }

    /// Reads the whole body as UTF-8 text (lossy).
    pub fn into_text(self) -> Result<String, FetchError> {
        Ok(String::from_utf8_lossy(&self.into_bytes()?).into_owned())
    }

    /// The length, when the bytes are in memory.
    pub fn len_hint(&self) -> Option<usize> {
        match self {
            Body::Full(bytes) => Some(bytes.len()),
            Body::Stream(_) => None,
        }
    }

    /// Writes the body into `out` and finishes it. Streams are spliced by the host.
    ///
    /// A peer that stops reading (`StreamError::Closed`: an upstream that answered before
    /// it read the whole request, a caller that went away) is not an error here: the
    /// response says what happened, and nothing more is sent.
    pub(crate) fn write_to(self, out: OutgoingBody) -> Result<(), FetchError> {
        let sent = match self {
            // Nothing to write: no stream to open, flush, and race the peer's answer on.
            Body::Full(bytes) if bytes.is_empty() => Sent::Whole,
            Body::Full(bytes) => {
                let output = out.write().map_err(|()| FetchError::Body("outgoing body stream already taken".into()))?;
                write_all(&output, &bytes)?
            }
            Body::Stream(body) => {
                let sent = {
                    let output = out.write().map_err(|()| FetchError::Body("outgoing body stream already taken".into()))?;
                    let input = body.stream().map_err(|()| FetchError::Body("body stream already taken".into()))?;
                    splice_all(&output, &input)?
                };
                drop(IncomingBody::finish(body));
                sent
            }
        };
        match sent {
            Sent::Whole => OutgoingBody::finish(out, None).map_err(|code| FetchError::Upstream(crate::UpstreamFailure::from_code(code))),
            Sent::PeerStopped => {
                let _ = OutgoingBody::finish(out, None);
                Ok(())
            }
        }
    }
}

/// How much one read of a body asks for.
const READ_CHUNK: u64 = 64 << 10;

/// How writing a body ended.
enum Sent {
    Whole,
    /// The peer stopped reading before the end.
    PeerStopped,
}

/// Writes `bytes` as fast as the host takes them, then flushes.
fn write_all(output: &OutputStream, mut bytes: &[u8]) -> Result<Sent, FetchError> {
    let ended = |error: StreamError| match error {
        StreamError::Closed => Ok(Sent::PeerStopped),
        StreamError::LastOperationFailed(e) => Err(stream_failure(e)),
    };
    while !bytes.is_empty() {
        let permitted = match output.check_write() {
            Ok(0) => {
                output.subscribe().block();
                continue;
            }
            Ok(permitted) => usize::try_from(permitted).unwrap_or(usize::MAX).min(bytes.len()),
            Err(error) => return ended(error),
        };
        if let Err(error) = output.write(&bytes[..permitted]) {
            return ended(error);
        }
        bytes = &bytes[permitted..];
    }
    match output.blocking_flush() {
        Ok(()) => Ok(Sent::Whole),
        Err(error) => ended(error),
    }
}

/// Moves `input` into `output` in the host, without the bytes entering the guest.
fn splice_all(output: &OutputStream, input: &InputStream) -> Result<Sent, FetchError> {
    loop {
        match output.blocking_splice(input, 1 << 20) {
            Ok(_) => {}
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(stream_failure(e)),
        }
    }
    match output.blocking_flush() {
        Ok(()) => Ok(Sent::Whole),
        Err(StreamError::Closed) => Ok(Sent::PeerStopped),
        Err(StreamError::LastOperationFailed(e)) => Err(stream_failure(e)),
    }
}

/// A stream error in plain words: the HTTP reason when there is one.
fn stream_failure(error: wasi::io::error::Error) -> FetchError {
    match wasi::http::types::http_error_code(&error) {
        Some(code) => FetchError::Upstream(crate::UpstreamFailure::from_code(code)),
        // The host's debug text is for its own log, not for a caller's problem detail.
        None => FetchError::Body("the body stream broke before its end".into()),
    }
}
