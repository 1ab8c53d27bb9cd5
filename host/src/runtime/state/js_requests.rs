//! `edgemtls:mtls/js-requests`: the JavaScript SDK's requests in one call each.
//!
//! Each call a JavaScript guest makes runs binding code in the engine's interpreter, which
//! costs tens of microseconds: reading the caller's request through `wasi:http` takes seven
//! calls, building and sending a request eight, answering with a body JavaScript holds nine
//! (one of them, `fields.from-list`, about 35 µs for a single header). Measured on a
//! fetch-and-return handler, those calls were most of a request's CPU. These do the same
//! work in one call each.

use wasmtime::component::Resource;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::bindings::http::types as wasi;
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest, HostResponseOutparam,
};

use super::forward::{upstream_uri, whole};
use super::{FIELD_SIZE_LIMIT, HostState};
use crate::runtime::bindings::{js_requests, outgoing};

impl js_requests::Host for HostState {
    fn head(&mut self, request: Resource<HostIncomingRequest>) -> wasmtime::Result<js_requests::RequestHead> {
        let mut view = wasmtime_wasi_http::WasiHttpView::http(self);
        let borrowed = || Resource::<HostIncomingRequest>::new_borrow(request.rep());
        let method = method_name(wasi::HostIncomingRequest::method(&mut view, borrowed())?);
        let scheme = match wasi::HostIncomingRequest::scheme(&mut view, borrowed())? {
            Some(wasi::Scheme::Https) => "https".to_string(),
            Some(wasi::Scheme::Other(other)) => other,
            Some(wasi::Scheme::Http) | None => "http".to_string(),
        };
        let authority = wasi::HostIncomingRequest::authority(&mut view, borrowed())?.unwrap_or_else(|| "localhost".into());
        let path = wasi::HostIncomingRequest::path_with_query(&mut view, borrowed())?.unwrap_or_else(|| "/".into());
        let fields = wasi::HostIncomingRequest::headers(&mut view, borrowed())?;
        let fields = self.table.delete(fields)?;
        let headers = fields
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Ok(js_requests::RequestHead { method, url: format!("{scheme}://{authority}{path}"), headers })
    }

    fn send(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        certificate: String,
    ) -> wasmtime::Result<Result<Resource<HostFutureIncomingResponse>, outgoing::Error>> {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        let invalid = |what: String| Ok(Err(outgoing::Error::Http(ErrorCode::InternalError(Some(what)))));
        let Ok(uri) = upstream_uri(&url) else {
            return Ok(Err(outgoing::Error::Http(ErrorCode::HttpRequestUriInvalid)));
        };
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return invalid(format!("'{method}' is not an HTTP method"));
        }
        let mut fields = FieldMap::new_mutable(FIELD_SIZE_LIMIT);
        for (name, value) in headers {
            if let Err(error) = fields.append(&mut self.hooks, name.clone(), value.into_bytes()) {
                return invalid(format!("header '{name}' cannot be sent: {error}"));
            }
        }
        let scheme = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { wasi::Scheme::Https } else { wasi::Scheme::Http };
        let request = self.table.push(HostOutgoingRequest {
            method: wasi_method(method),
            scheme: Some(scheme),
            authority: uri.authority().map(|authority| authority.to_string()),
            path_with_query: uri.path_and_query().map(|path| path.to_string()),
            headers: fields,
            body: None,
        })?;
        outgoing::Host::handle(self, request, None, certificate)
    }

    async fn wait(
        &mut self,
        response: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<Result<(u16, Resource<HostIncomingResponse>), String>> {
        wasmtime_wasi::p2::Pollable::ready(self.table.get_mut(&response)?).await;
        let borrowed = Resource::<HostFutureIncomingResponse>::new_borrow(response.rep());
        let answer = wasi::HostFutureIncomingResponse::get(&mut wasmtime_wasi_http::WasiHttpView::http(self), borrowed)?;
        let failure = outgoing::Host::failure(self, Resource::new_borrow(response.rep()))?;
        self.hooks.failures.remove(&response.rep());
        self.table.delete(response)?;
        match answer {
            Some(Ok(Ok(answer))) => {
                let status = self.table.get(&answer)?.status;
                Ok(Ok((status, answer)))
            }
            Some(Ok(Err(code))) => Ok(Err(failure.map(|failure| failure.message).unwrap_or_else(|| describe(&code)))),
            // Ready was awaited and nothing took the answer before: neither can happen.
            Some(Err(())) | None => Ok(Err("the upstream's answer was already taken".into())),
        }
    }

    fn respond(
        &mut self,
        status: u16,
        headers: String,
        body: Vec<u8>,
        response_out: Resource<HostResponseOutparam>,
    ) -> wasmtime::Result<()> {
        let outparam = self.table.delete(response_out)?;
        // The body's own length is announced, not the one a handler wrote.
        let headers = header_lines(&headers)
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()));
        let fields = self.answer_fields(headers);
        super::pass_through::answer(outparam, status, fields, whole(body));
        Ok(())
    }
}

/// The headers of a block of `name:value` lines (a name has no colon, a value no newline);
/// a line without a colon names no header and is skipped.
fn header_lines(block: &str) -> impl Iterator<Item = (&str, &str)> {
    block.lines().filter_map(|line| line.split_once(':'))
}

/// An error code the host did not record a failure for, in words.
fn describe(code: &wasi::ErrorCode) -> String {
    use wasi::ErrorCode as E;
    match code {
        E::DnsTimeout | E::DnsError(_) => "the upstream's name could not be resolved".into(),
        E::ConnectionRefused => "the upstream refused the connection".into(),
        E::ConnectionTimeout => "the upstream did not accept the connection in time".into(),
        E::HttpResponseTimeout => "the upstream did not answer in time".into(),
        E::InternalError(Some(message)) => message.clone(),
        _ => "the request to the upstream failed".into(),
    }
}

/// The wasi:http method `name` names; fetch's standard names in any case.
fn wasi_method(name: String) -> wasi::Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => wasi::Method::Get,
        "HEAD" => wasi::Method::Head,
        "POST" => wasi::Method::Post,
        "PUT" => wasi::Method::Put,
        "DELETE" => wasi::Method::Delete,
        "CONNECT" => wasi::Method::Connect,
        "OPTIONS" => wasi::Method::Options,
        "TRACE" => wasi::Method::Trace,
        "PATCH" => wasi::Method::Patch,
        _ => wasi::Method::Other(name),
    }
}

fn method_name(method: wasi::Method) -> String {
    let name = match method {
        wasi::Method::Other(other) => return other,
        wasi::Method::Get => "GET",
        wasi::Method::Head => "HEAD",
        wasi::Method::Post => "POST",
        wasi::Method::Put => "PUT",
        wasi::Method::Delete => "DELETE",
        wasi::Method::Connect => "CONNECT",
        wasi::Method::Options => "OPTIONS",
        wasi::Method::Trace => "TRACE",
        wasi::Method::Patch => "PATCH",
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::header_lines;

    #[test]
    fn a_header_block_keeps_colons_in_values_repeated_names_and_skips_lines_without_a_name() {
        let block = "set-cookie:a=1; Path=/\nset-cookie:b=2\nx-time:12:30:00\nno colon here\n\ncontent-type:text/plain\n";
        let headers: Vec<(&str, &str)> = header_lines(block).collect();
        assert_eq!(headers, [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2"), ("x-time", "12:30:00"), ("content-type", "text/plain")]);
        assert_eq!(header_lines("").count(), 0);
    }
}
