//! Bodies: bytes in guest memory, or a stream passed through without buffering.

use std::fmt;
use std::io::{Read, Write};

use wasi::http::types::{IncomingBody, OutgoingBody};
use wasi::io::streams::StreamError;

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
                    let mut stream = body.stream().map_err(|()| FetchError::Body("body stream already taken".into()))?;
                    stream.read_to_end(&mut bytes).map_err(|e| FetchError::Body(e.to_string()))?;
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
    pub(crate) fn write_to(self, out: OutgoingBody) -> Result<(), FetchError> {
        {
            let output = out.write().map_err(|()| FetchError::Body("outgoing body stream already taken".into()))?;
            match self {
                Body::Full(bytes) => {
                    let mut output = output;
                    output.write_all(&bytes).map_err(|e| FetchError::Body(e.to_string()))?;
                    output.flush().map_err(|e| FetchError::Body(e.to_string()))?;
                }
                Body::Stream(body) => {
                    {
                        let input = body.stream().map_err(|()| FetchError::Body("body stream already taken".into()))?;
                        loop {
                            match output.blocking_splice(&input, 1 << 20) {
                                Ok(_) => {}
                                Err(StreamError::Closed) => break,
                                Err(StreamError::LastOperationFailed(e)) => return Err(stream_failure(e)),
                            }
                        }
                        match output.blocking_flush() {
                            Ok(()) => {}
                            // The upstream stopped reading: it has answered (or failed), and
                            // the response says which. Nothing more to send.
                            Err(StreamError::Closed) => {
                                drop(output);
                                drop(input);
                                drop(IncomingBody::finish(body));
                                let _ = OutgoingBody::finish(out, None);
                                return Ok(());
                            }
                            Err(StreamError::LastOperationFailed(e)) => return Err(stream_failure(e)),
                        }
                    }
                    drop(IncomingBody::finish(body));
                }
            }
        }
        OutgoingBody::finish(out, None).map_err(|code| FetchError::Upstream(crate::fetch::UpstreamFailure::from_code(code)))
    }
}

/// A stream error in plain words: the HTTP reason when there is one.
fn stream_failure(error: wasi::io::error::Error) -> FetchError {
    match wasi::http::types::http_error_code(&error) {
        Some(code) => FetchError::Upstream(crate::fetch::UpstreamFailure::from_code(code)),
        None => FetchError::Body(error.to_debug_string()),
    }
}
