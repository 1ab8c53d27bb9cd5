//! `edgemtls:mtls/pass-through`: answering in the host with a body the guest received.
//!
//! A handler that returns what it fetched would otherwise pump the body through the guest:
//! a JavaScript one reads every chunk into the engine's memory and writes it back out in
//! 4 KiB calls; a Rust one splices it through `wasi:io` streams, a host call per step and a
//! wake-up per chunk, and stays running until the body ends. Here the guest hands over the
//! upstream's response or body (and the status and headers to answer with) in one call, and
//! the host streams the body from the upstream's connection to the caller's, as a forward
//! does.

use hyper::StatusCode;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::body::HostIncomingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingResponse, HostResponseOutparam};
use wasmtime_wasi_http::{FieldMap, WasiBody};

use super::forward::request_body;
use super::{FIELD_SIZE_LIMIT, HostState};
use crate::Problem;
use crate::runtime::bindings::pass_through;

impl pass_through::Host for HostState {
    fn respond(
        &mut self,
        response: Resource<HostIncomingResponse>,
        status: Option<u16>,
        headers: Option<Resource<FieldMap>>,
        response_out: Resource<HostResponseOutparam>,
    ) -> wasmtime::Result<()> {
        let outparam = self.table.delete(response_out)?;
        let upstream = self.table.delete(response)?;
        let headers = match headers {
            Some(headers) => self.table.delete(headers)?,
            None => upstream.headers,
        };
        let status = status.unwrap_or(upstream.status);
        let body = match upstream.body {
            Some(body) => request_body(body, self.stream_idle),
            None => super::forward::empty(),
        };
        answer(outparam, status, headers, body);
        Ok(())
    }

    fn respond_with_body(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Resource<HostIncomingBody>,
        response_out: Resource<HostResponseOutparam>,
    ) -> wasmtime::Result<()> {
        let outparam = self.table.delete(response_out)?;
        let body = request_body(self.table.delete(body)?, self.stream_idle);
        let fields = self.answer_fields(headers);
        answer(outparam, status, fields, body);
        Ok(())
    }
}

impl HostState {
    /// The headers a guest answers with, as fields. A header a handler may not set, or past
    /// the size limit, is left out rather than failing the answer, as `wasi:http` fields
    /// refuse it to the guest one by one.
    pub(super) fn answer_fields(&mut self, headers: impl IntoIterator<Item = (String, Vec<u8>)>) -> FieldMap {
        let mut fields = FieldMap::new_mutable(FIELD_SIZE_LIMIT);
        for (name, value) in headers {
            let _ = fields.append(&mut self.hooks, name, value);
        }
        fields
    }
}

/// Sets the guest's response: `status`, `headers` without hop-by-hop ones, and `body`; or a
/// problem when `status` is not an HTTP status.
pub(super) fn answer(outparam: HostResponseOutparam, status: u16, headers: FieldMap, body: WasiBody) {
    let Ok(status) = StatusCode::from_u16(status) else {
        let detail = format!("the handler answered with status {status}, which is not an HTTP status (100 to 999)");
        let problem = Problem::for_guest(StatusCode::INTERNAL_SERVER_ERROR, "handler-error", "Handler failed", detail, None);
        (outparam.send)(Ok(problem.into_response()));
        return;
    };
    let mut answer = hyper::Response::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = http::HeaderMap::from(headers);
    crate::hop_by_hop::remove_all(answer.headers_mut());
    (outparam.send)(Ok(answer));
}
