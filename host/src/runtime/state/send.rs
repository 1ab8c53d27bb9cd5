//! `edgemtls:mtls/outgoing.send`: a request held as its parts, sent and answered in one call.
//!
//! Through `wasi:http` the Rust SDK built a request in about ten calls (the fields and each
//! header, the request and its method, scheme, authority and path, its body, the send) and
//! read the answer in five more (the wait, the status, the headers, the body), each a trip
//! across the guest boundary; and `wasi:http` runs every request as two tasks of its own,
//! which the guest's task then waits on. Here the guest hands the whole request over in one
//! call, the host sends it on the guest's own task, and the answer's head comes back with
//! the call: an in-guest fetch costs what the host's forward does, plus two calls (the
//! headers are `wasi:http` fields, since no function of the extension returns bytes).

use wasmtime_wasi_http::p2::bindings::http::types::HeaderError;
use wasmtime_wasi_http::p2::body::HostIncomingBody;
use wasmtime_wasi_http::{FieldMap, FieldMapError};

use super::dispatch::{Via, dispatch};
use super::forward::{request_body, upstream_uri, whole};
use super::{FIELD_SIZE_LIMIT, HostState, certificate_error, said};
use crate::runtime::bindings::outgoing::{Answer, RequestBody, SendError};

impl HostState {
    /// `outgoing.send`: see the module's comment.
    pub(super) async fn send_whole(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, Vec<u8>)>,
        body: RequestBody,
        certificate: String,
    ) -> wasmtime::Result<Result<Answer, SendError>> {
        // The body is the host's now, whatever happens next: a stream is taken from the table
        // first, so a request refused below does not leave it behind.
        let body = match body {
            RequestBody::Bytes(bytes) => whole(bytes),
            RequestBody::Streamed(stream) => request_body(self.table.delete(stream)?, self.stream_idle),
        };
        let uri = match upstream_uri(&url) {
            Ok(uri) => uri,
            Err(reason) => return Ok(Err(SendError::InvalidRequest(reason))),
        };
        let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
            return Ok(Err(SendError::InvalidRequest(format!("'{method}' is not an HTTP method"))));
        };
        let mut fields = FieldMap::new_mutable(FIELD_SIZE_LIMIT);
        for (name, value) in headers {
            match fields.append(&mut self.hooks, name.clone(), value) {
                Ok(_) => {}
                Err(FieldMapError::TooManyFields | FieldMapError::TotalSizeTooBig) => {
                    let detail = format!("the request's headers are larger than {} KiB", FIELD_SIZE_LIMIT >> 10);
                    return Ok(Err(SendError::InvalidRequest(detail)));
                }
                Err(error) => return Ok(Err(SendError::Header((name, header_error(error))))),
            }
        }
        let identity = match self.resolve_named(&certificate) {
            Ok(identity) => identity,
            Err(error) => return Ok(Err(SendError::Certificate(certificate_error(error)))),
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = fields.into();
        let admission = self.hooks.admit(request.uri());
        match dispatch(self.hooks.context.clone(), identity, admission, request, Via::Pool(None)).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                // What a guest may not set, it is not shown either, as wasi:http does.
                let headers = self.table.push(FieldMap::new_immutable(&mut self.hooks, parts.headers))?;
                let body = self.table.push(HostIncomingBody::new(body))?;
                Ok(Ok(Answer { status: parts.status.as_u16(), headers, body }))
            }
            Err(failure) => Ok(Err(SendError::Upstream((failure.error_code(), said(&failure))))),
        }
    }
}

/// Why a header cannot be sent, in wasi:http's terms.
fn header_error(error: FieldMapError) -> HeaderError {
    match error {
        FieldMapError::Forbidden => HeaderError::Forbidden,
        FieldMapError::Immutable => HeaderError::Immutable,
        _ => HeaderError::InvalidSyntax,
    }
}
