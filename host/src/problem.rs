//! The one place that turns host-side failures into HTTP responses (RFC 9457 problem+json).
//! Callers get a short problem; details (trap text, backtraces) stay in the host log.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::inbound::CallerProblem;
use crate::runtime::HandlerError;
use crate::runtime::bindings::outgoing::CertificateError;
use crate::upstream::{FailureReason, UpstreamFailure};

/// A failure as the caller sees it; `kind` becomes `urn:edgemtls:problem:<kind>`.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: Cow<'static, str>,
    title: &'static str,
    detail: String,
    /// Seconds after which trying again makes sense (`Retry-After`).
    retry_after: Option<u32>,
    /// Whether the body repeats `kind` as `reason`, as the guest SDK's problems do.
    with_reason: bool,
    /// The certificate the problem is about.
    certificate: Option<String>,
}

impl Problem {
    /// A problem with no `Retry-After`.
    pub fn new(status: StatusCode, kind: impl Into<Cow<'static, str>>, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind: kind.into(), title, detail: detail.into(), retry_after: None, with_reason: false, certificate: None }
    }

    /// A problem in the shape the guest SDK writes (`FetchError::into_response`): with a
    /// `reason` member, and the `certificate` it is about when there is one. The host answers
    /// for a guest in that shape when it forwards in the guest's place (`runtime/state/forward.rs`).
    pub fn for_guest(
        status: StatusCode,
        kind: impl Into<Cow<'static, str>>,
        title: &'static str,
        detail: impl Into<String>,
        certificate: Option<String>,
    ) -> Self {
        Self { with_reason: true, certificate, ..Self::new(status, kind, title, detail) }
    }

    /// The request path cannot be served as it is written.
    pub fn bad_path(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-path", "Bad request path", detail)
    }

    /// No route matches `path`.
    pub fn no_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "no-route", "No route", format!("no route matches '{path}'"))
    }

    /// The `application/problem+json` response.
    pub fn into_response(self) -> hyper::Response<HyperOutgoingBody> {
        let mut body = serde_json::json!({
            "type": format!("urn:edgemtls:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if self.with_reason {
            body["reason"] = serde_json::Value::from(self.kind.as_ref());
        }
        if let Some(certificate) = self.certificate {
            body["certificate"] = serde_json::Value::from(certificate);
        }
        let body = body.to_string();
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(seconds));
        }
        response
    }
}

/// What the host answers in a guest's place when it forwards for it: the guest SDK's shape
/// (`FetchError::into_response`) and words, so a handler's caller sees the same problem
/// whether the SDK sent the request or the host did.
impl Problem {
    /// 500 `invalid-url`: nothing was sent.
    pub(crate) fn invalid_url(reason: &str) -> Self {
        Self::for_guest(StatusCode::INTERNAL_SERVER_ERROR, "invalid-url", "Invalid upstream URL", format!("invalid URL: {reason}"), None)
    }

    /// 500 `certificate-<kind>`: the named certificate cannot be used; nothing was sent.
    pub(crate) fn certificate_unusable(error: CertificateError) -> Self {
        use CertificateError as E;
        let (kind, name, what) = match error {
            E::NotFound(name) => ("certificate-not-found", name, "not found"),
            E::Disabled(name) => ("certificate-disabled", name, "is disabled"),
            E::NotInEnvironment(name) => ("certificate-not-in-environment", name, "is not available in this environment"),
            E::Expired(name) => ("certificate-expired", name, "has expired"),
            E::NotYetValid(name) => ("certificate-not-yet-valid", name, "is not valid yet"),
        };
        let detail = format!("certificate '{name}' {what}");
        Self::for_guest(StatusCode::INTERNAL_SERVER_ERROR, kind, "Client certificate cannot be used", detail, Some(name))
    }

    /// 502 (504 when the upstream did not answer in time) with the failure's reason.
    pub(crate) fn upstream_failed(failure: &UpstreamFailure) -> Self {
        let status = match failure.reason() {
            FailureReason::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::for_guest(status, failure.reason().as_str(), "Upstream request failed", failure.message().to_string(), None)
    }

    /// 502 `body-error`: the guest read the request body itself, so it cannot be sent on.
    pub(crate) fn request_body_taken() -> Self {
        Self::for_guest(
            StatusCode::BAD_GATEWAY,
            "body-error",
            "Upstream request failed",
            "body transfer failed: request body already taken",
            None,
        )
    }

    /// 503 `websockets-busy` with `Retry-After`: `max_websockets` tunnels are open; nothing was sent.
    pub(crate) fn websockets_busy(max: u32) -> Self {
        let detail = format!(
            "{max} WebSocket tunnels are open, as many as [limits] max_websockets allows; try again shortly, or raise max_websockets"
        );
        Self {
            retry_after: Some(1),
            ..Self::for_guest(StatusCode::SERVICE_UNAVAILABLE, "websockets-busy", "Too many WebSockets", detail, None)
        }
    }
}

impl From<&HandlerError> for Problem {
    /// Every variant is listed: a new one must decide what callers see.
    fn from(error: &HandlerError) -> Self {
        match error {
            HandlerError::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "handler-timeout", "Handler timed out", error.to_string()),
            HandlerError::MemoryExceeded(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "handler-memory-limit", "Handler exceeded its memory limit", error.to_string())
            }
            HandlerError::Busy(_) => {
                Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "host-busy", "Host busy", error.to_string()) }
            }
            HandlerError::BadRequest(_) => Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", error.to_string()),
            HandlerError::Instantiate(_) | HandlerError::Load { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "handler-unavailable", "Handler unavailable", "the handler could not be started")
            }
            HandlerError::Guest(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "handler-error", "Handler reported an error", "the handler reported an error")
            }
            HandlerError::Trap(_) | HandlerError::NoResponse => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler-failed",
                "Handler failed",
                "the handler failed; the host log has the details",
            ),
        }
    }
}

impl From<&CallerProblem> for Problem {
    /// 401, with a problem type per reason.
    fn from(problem: &CallerProblem) -> Self {
        let kind = match problem {
            CallerProblem::Required => "client-certificate-required",
            CallerProblem::Expired => "client-certificate-expired",
            CallerProblem::NotYetValid => "client-certificate-not-yet-valid",
            CallerProblem::UnknownIssuer => "client-certificate-unknown-issuer",
            CallerProblem::Revoked => "client-certificate-revoked",
            CallerProblem::RevocationUnknown(_) => "client-certificate-revocation-unknown",
            CallerProblem::WrongPurpose => "client-certificate-wrong-purpose",
            CallerProblem::Version1 => "client-certificate-version-1",
            CallerProblem::Invalid(_) => "client-certificate-invalid",
            CallerProblem::NotAllowed(_) => "client-certificate-not-allowed",
        };
        Self::new(StatusCode::UNAUTHORIZED, kind, "Client certificate refused", problem.detail())
    }
}
