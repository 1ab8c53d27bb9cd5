//! Example edgemtls handler: fetches the `url` option, presenting the client certificate
//! named by the `mtlsCertificate` option, or else by the `BACKEND_MTLS_CERT` variable of the
//! running environment, and returns the upstream's answer. An empty name sends no
//! certificate.

use edgemtls_guest::{IncomingRequest, Request, Response};

struct HelloMtls;

impl edgemtls_guest::Handler for HelloMtls {
    fn handle(_request: IncomingRequest) -> Response {
        let Some(url) = edgemtls_guest::config("url") else {
            return Response::new(500).with_body("hello-mtls: the route has no 'url' option\n");
        };
        let certificate = edgemtls_guest::config("mtlsCertificate").or_else(|| std::env::var("BACKEND_MTLS_CERT").ok()).unwrap_or_default();
        match Request::get(&url).mtls_certificate(&certificate).send() {
            Ok(upstream) => {
                let content_type = upstream.header("content-type").map(str::to_string);
                let mut response = Response::new(upstream.status).with_body(upstream.body);
                if let Some(kind) = content_type {
                    response = response.with_header("content-type", kind);
                }
                response.with_header("x-edgemtls-certificate", &certificate)
            }
            Err(error) => error.into_response(),
        }
    }
}

edgemtls_guest::handler!(HelloMtls);
