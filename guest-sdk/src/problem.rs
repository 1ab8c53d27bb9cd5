//! The RFC 9457 problem+json responses a handler answers with, in the shape the host writes
//! in a guest's place: `type` `urn:edgemtls:problem:<kind>`, `reason`, and `certificate` for a
//! certificate's problem.

use crate::{FetchError, Response};

impl Response {
    /// An RFC 9457 `application/problem+json` response with type
    /// `urn:edgemtls:problem:<kind>`, the shape the host and [`crate::FetchError`] use.
    pub fn problem(status: u16, kind: &str, title: &str, detail: &str) -> Self {
        problem_response(status, kind, title, detail, None)
    }
}

impl FetchError {
    /// An RFC 9457 problem+json response describing this error, with a `reason` member
    /// (the [`FetchError::kind`]) and, for certificate problems, the `certificate` name.
    pub fn into_response(self) -> Response {
        let certificate = match &self {
            FetchError::Certificate(e) => Some(e.name()),
            _ => None,
        };
        problem_response(self.status(), &self.kind(), self.title(), &self.to_string(), certificate)
    }
}

/// An RFC 9457 problem+json response; `kind` becomes `urn:edgemtls:problem:<kind>`, and
/// `certificate`, when given, names the certificate the problem is about.
fn problem_response(status: u16, kind: &str, title: &str, detail: &str, certificate: Option<&str>) -> Response {
    let mut body = format!(
        "{{\"type\":{},\"title\":{},\"status\":{status},\"detail\":{},\"reason\":{}",
        json_string(&format!("urn:edgemtls:problem:{kind}")),
        json_string(title),
        json_string(detail),
        json_string(kind)
    );
    if let Some(name) = certificate {
        body.push_str(&format!(",\"certificate\":{}", json_string(name)));
    }
    body.push('}');
    Response::new(status).with_header("content-type", "application/problem+json").with_body(body)
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
