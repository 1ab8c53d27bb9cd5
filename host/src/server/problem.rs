//! The one place that turns host-side failures into HTTP responses (RFC 9457 problem+json).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A `application/problem+json` response; `kind` becomes `urn:edgemtls:problem:<kind>`.
pub fn problem_response(status: hyper::StatusCode, kind: &str, title: &str, detail: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = serde_json::json!({
        "type": format!("urn:edgemtls:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    })
    .to_string();
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/problem+json"));
    response
}
