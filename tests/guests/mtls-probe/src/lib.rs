//! Test guest. Headers drive it:
//! - `x-target`: the URL to fetch; `x-certificate`: the certificate name (absent: none);
//!   `x-expect-cn` is forwarded so the upstream can check what it saw;
//! - `x-mode`: `trap` (panic), `spin` (loop forever), `oom` (allocate without bound),
//!   `flood` (fetch `x-target` 1000 times), `env` (answer with variable `x-var`), `param`
//!   (answer with route parameter `x-param`), `print` (print `x-lines` lines of ~100 bytes),
//!   `forward` (pass the request on to `x-target` with `edgemtls_guest::forward`: the host
//!   forwards), `forward-changed` (the same, adding a header to the answer: the guest
//!   forwards).

use edgemtls_guest::{IncomingRequest, Request, Response};

struct Probe;

impl edgemtls_guest::Handler for Probe {
    fn handle(request: IncomingRequest) -> Response {
        match request.header("x-mode").as_deref() {
            Some("trap") => panic!("probe asked to trap"),
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("print") => {
                let lines: usize = request.header("x-lines").and_then(|n| n.parse().ok()).unwrap_or(1);
                for n in 0..lines {
                    println!("probe line {n:06} {}", "x".repeat(80));
                }
                Response::new(200).with_body(format!("printed {lines} lines"))
            }
            Some("param") => {
                let name = request.header("x-param").unwrap_or_default();
                let value = edgemtls_guest::config(&format!("params.{name}")).unwrap_or_else(|| "<unset>".into());
                Response::new(200).with_body(value)
            }
            Some(mode @ ("forward" | "forward-changed")) => {
                let target = request.header("x-target").unwrap_or_default();
                let certificate = request.header("x-certificate").unwrap_or_default();
                let forward = edgemtls_guest::forward(request, &target, &certificate);
                // Changed, the response is forwarded in the guest with the change on top.
                if mode == "forward" { forward.into() } else { Response::from(forward).with_header("x-changed", "yes") }
            }
            Some("env") => {
                let name = request.header("x-var").unwrap_or_default();
                Response::new(200).with_body(std::env::var(name).unwrap_or_else(|_| "<unset>".into()))
            }
            mode => {
                let target = request.header("x-target").unwrap_or_default();
                let certificate = request.header("x-certificate").unwrap_or_default();
                let expect = request.header("x-expect-cn");
                let times = if mode == Some("flood") { 1000 } else { 1 };
                let mut last = None;
                for _ in 0..times {
                    let mut outbound = Request::get(&target).mtls_certificate(&certificate);
                    if let Some(expect) = &expect {
                        outbound = outbound.header("x-expect-cn", expect);
                    }
                    match outbound.send() {
                        Ok(response) => last = Some(response),
                        Err(error) => return error.into_response(),
                    }
                }
                match last {
                    Some(upstream) => {
                        let cn = upstream.header("x-client-cn").unwrap_or("").to_string();
                        Response::new(upstream.status).with_header("x-upstream-cn", cn).with_body(upstream.body)
                    }
                    None => Response::new(500),
                }
            }
        }
    }
}

edgemtls_guest::handler!(Probe);
