//! The admin listener: `/healthz` for load balancers, `/metrics` for Prometheus, and
//! `POST /reload`, which reloads the config and answers when the new one serves.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::App;
use crate::config::Config;

pub(super) async fn serve(app: Arc<App>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                crate::warn_limited!(%error, "admin listener cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&app, request.method(), request.uri().path()).await) }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

const JSON: &str = "application/json";

async fn answer(app: &Arc<App>, method: &hyper::Method, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, kind, body) = match (method, path) {
        (_, "/healthz") => {
            // Damaged records do not make the host unhealthy (it serves the rest), but they
            // are reported where an operator looks. Nor does a store that does not answer:
            // the host serves from its last snapshot, and says since when.
            let health = app.resolver().store_health();
            let store = match &health.unreachable {
                None => serde_json::json!({ "location": app.resolver().location().to_string(), "reachable": true }),
                Some((reason, since)) => serde_json::json!({
                    "location": app.resolver().location().to_string(),
                    "reachable": false,
                    "unreachable_since": crate::pki::rfc3339(*since),
                    "error": reason,
                    "serving": "the last snapshot",
                }),
            };
            let body = serde_json::json!({
                "status": if health.unreachable.is_some() { "degraded" } else { "ok" },
                "store": store,
                "environment": app.environment().as_str(),
                "certificates": app.resolver().certificate_count(),
                "certificates_in_use": app.certificate_names(),
                "certificates_damaged": app.resolver().damaged_certificates(),
            });
            (StatusCode::OK, JSON, body.to_string())
        }
        (_, "/metrics") => {
            let now = time::OffsetDateTime::now_utc();
            let environment = app.environment().as_str();
            app.metrics().set_store_reachable(app.resolver().store_health().unreachable.is_none());
            app.metrics().clear_expiry();
            for (name, seconds) in app.resolver().expiries(now) {
                app.metrics().set_expiry(&name, environment, seconds);
            }
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", app.metrics().encode())
        }
        (&hyper::Method::POST, "/reload") => reload(app).await,
        (_, "/reload") => {
            (StatusCode::METHOD_NOT_ALLOWED, JSON, serde_json::json!({"status": "error", "problems": ["use POST /reload"]}).to_string())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(kind) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Reloads the config file the host was started with; 200 with the report when the new
/// config serves, 422 with every problem when it was refused (the old one keeps serving).
async fn reload(app: &Arc<App>) -> (StatusCode, &'static str, String) {
    let refused = |problems: Vec<String>| {
        for problem in &problems {
            tracing::error!(reason = "POST /reload", "config reload refused: {problem}");
        }
        (StatusCode::UNPROCESSABLE_ENTITY, JSON, serde_json::json!({"status": "refused", "problems": problems}).to_string())
    };
    let config = match Config::load(app.config_path()) {
        Ok(config) => config,
        Err(error) => return refused(vec![error.to_string()]),
    };
    match app.reload(config).await {
        Ok(report) => {
            for warning in &report.warnings {
                tracing::warn!("{warning}");
            }
            let mut body = serde_json::to_value(&report).unwrap_or_default();
            body["status"] = "reloaded".into();
            (StatusCode::OK, JSON, body.to_string())
        }
        Err(problems) => refused(problems.into_iter().map(|p| p.0).collect()),
    }
}
