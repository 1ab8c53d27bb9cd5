//! `edgemtls:mtls/pass-through`: answering in the host with an upstream's response.
//!
//! A JavaScript handler that returns what it fetched would otherwise pump the body through
//! the guest: every chunk read into the engine's memory, wrapped in a stream, and written
//! back out in 4 KiB calls. Here the guest hands over the upstream's response (and the
//! status and headers to answer with, if it changed them) in one call, and the host streams
//! the body from the upstream's connection to the caller's, as a forward does.

use hyper::StatusCode;
use wasmtime::component::Resource;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::types::{HostIncomingResponse, HostResponseOutparam};

use super::HostState;
use super::forward::request_body;
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
        let Ok(status) = StatusCode::from_u16(status) else {
            let detail = format!("the handler answered with status {status}, which is not an HTTP status (100 to 999)");
            let problem = Problem::for_guest(StatusCode::INTERNAL_SERVER_ERROR, "handler-error", "Handler failed", detail, None);
            (outparam.send)(Ok(problem.into_response()));
            return Ok(());
        };
        let body = match upstream.body {
            Some(body) => request_body(body, self.stream_idle),
            None => super::forward::empty(),
        };
        let mut answer = hyper::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = http::HeaderMap::from(headers);
        crate::hop_by_hop::remove_all(answer.headers_mut());
        (outparam.send)(Ok(answer));
        Ok(())
    }
}
