//! A request body watched on its way upstream. When it fails (its caller went away in the
//! middle of an upload, or the handler stopped writing it), the request fails for that
//! reason; the client library reports it only in its own framing ("stream error sent by
//! user"), which would read as the upstream's fault.

use std::sync::{Arc, OnceLock};

use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiBody;

/// Where a watched body records why it failed.
#[derive(Default)]
pub(super) struct BodyFailure(Arc<OnceLock<String>>);

impl BodyFailure {
    /// Watches `body`: its first error is recorded here, and still passed on. A body that
    /// is already complete (no body at all) is passed through as it is.
    pub(super) fn watch(&self, body: WasiBody) -> WasiBody {
        if hyper::body::Body::is_end_stream(&body) {
            return body;
        }
        let failure = self.0.clone();
        body.map_err(move |error| {
            failure.get_or_init(|| match &error {
                // The caller's body, read by hyper: its framing ("hyper error: error reading
                // a body from connection") says less than its cause.
                wasmtime_wasi_http::Error::Hyper(hyper) => crate::error_chain::plain_cause(hyper),
                other => other.to_string(),
            });
            error
        })
        .boxed_unsync()
    }

    /// Why the body failed, if it did.
    pub(super) fn cause(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}
