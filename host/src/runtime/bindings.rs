//! Host bindings for the `edgemtls:mtls` extension, generated from `wit/`.

#[allow(missing_docs, reason = "bindgen-generated code")]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "edgemtls:mtls/host-extension",
        imports: {
            // Waits for the upstream's answer, as `wasi:io/poll` does for a plain request.
            "edgemtls:mtls/forward.forward": async | trappable,
            // Waits for the upstream's answer, as `wasi:io/poll` does.
            "edgemtls:mtls/js-requests.wait": async | trappable,
            // Sends and waits for the upstream's answer.
            "edgemtls:mtls/outgoing.send": async | trappable,
            default: trappable,
        },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use generated::edgemtls::mtls::{forward, js_requests, next_request, outgoing, pass_through, types};
