//! A standard wasi:http handler (no SDK) that sets 200, writes `answered\n`, finishes the
//! body, and then keeps running as `x-after` says: `spin` (computes until interrupted) or
//! `sleep` (waits on a 60 s timer, blocked on a pollable). Its caller has its whole answer
//! the moment the body is finished, whatever the guest does after.

use std::io::Write as _;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasi::http::proxy::export!(AfterFinish);

struct AfterFinish;

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values.first().map(|value| String::from_utf8_lossy(value).into_owned())
}

impl wasi::exports::http::incoming_handler::Guest for AfterFinish {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let after = header(&request, "x-after").unwrap_or_default();
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = body.write() {
            let _ = out.write_all(b"answered\n");
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
        match after.as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => wasi::clocks::monotonic_clock::subscribe_duration(60_000_000_000).block(),
            _ => {}
        }
    }
}
