//! The admin listener: `/healthz` for load balancers and `/metrics` for Prometheus.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::App;

pub(super) async fn serve(app: Arc<App>, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&app, request.uri().path())) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(app: &App, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/healthz" => {
            let body = serde_json::json!({
                "status": "ok",
                "environment": app.environment().as_str(),
                "certificates": app.resolver().certificate_count(),
                "certificates_in_use": app.certificate_names(),
            });
            (200, "application/json", body.to_string())
        }
        "/metrics" => {
            let now = time::OffsetDateTime::now_utc();
            let environment = app.environment().as_str();
            app.metrics().clear_expiry();
            for (name, seconds) in app.resolver().expiries(now) {
                app.metrics().set_expiry(&name, environment, seconds);
            }
            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", app.metrics().encode())
        }
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(value) = hyper::header::HeaderValue::from_str(kind) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
