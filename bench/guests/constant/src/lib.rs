//! Answers `ok` to every request: the per-request cost of a fresh instance and nothing else.

use edgemtls_guest::{IncomingRequest, Response};

struct Constant;

impl edgemtls_guest::Handler for Constant {
    fn handle(_request: IncomingRequest) -> Response {
        Response::new(200).with_header("content-type", "text/plain").with_body("ok\n")
    }
}

edgemtls_guest::handler!(Constant);
