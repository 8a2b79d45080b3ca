//! Outer HTTP layers: a panic in any handler answers a JSON 500 instead of closing the
//! connection, and every error answer axum makes by itself (413 body too large, 404 no
//! route, 405, extractor rejections) is rewritten into the documented JSON error shape.

use std::panic::AssertUnwindSafe;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use super::error::{ErrorBody, ErrorDetail};
use crate::metrics;

/// Longest body of axum's own plain-text rejection that is carried into the message.
const MAX_REJECTION_TEXT: usize = 2048;

/// Runs the rest of the stack with panics caught: the caller gets a JSON 500, the panic is
/// logged and counted (`sluice_intake_panics_total{door="http"}`), and the server goes on.
pub async fn catch_panics(request: Request, next: Next) -> Response {
    let route = format!("{} {}", request.method(), request.uri().path());
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            metrics::INTAKE_PANICS.with(metrics::Door::Http).inc();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            tracing::error!(%route, panic = %what, "an API handler panicked; answered 500");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "sluice could not handle this request (an internal error, logged); nothing was created. Retry, and report it if it persists".into(),
            )
        }
    }
}

/// Rewrites error answers that are not JSON (axum's own rejections and fallbacks) into
/// `{"error": {"code", "message"}}`; `max_body_bytes` is named in the 413 message.
pub async fn json_errors(
    State(max_body_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = crate::uri::abbreviated(request.uri().path(), 200);
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = match axum::body::to_bytes(response.into_body(), MAX_REJECTION_TEXT * 2).await {
        Ok(bytes) => {
            crate::uri::abbreviated(String::from_utf8_lossy(&bytes).trim(), MAX_REJECTION_TEXT)
        }
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            format!(
                "the request body is over {max_body_bytes} bytes (api.max_body_bytes): send a smaller spec"
            ),
        ),
        StatusCode::NOT_FOUND => (
            "not_found",
            format!(
                "no such route: {method} {path} (the API serves /v1/jobs, /v1/jobs/{{id}}, /v1/jobs/{{id}}/cancel, /v1/jobs/{{id}}/results; GET /openapi.json describes them all)"
            ),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "{method} is not allowed on {path}; allowed: {}",
                allow
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("see the API reference (README, HTTP API)")
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_request", text),
        s if s.is_server_error() => ("internal", text),
        _ => ("bad_request", text),
    };
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        message
    };
    let mut answer = error_response(status, code, message);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message,
            field: None,
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};

    async fn boom() -> &'static str {
        panic!("kaboom")
    }

    fn app() -> Router {
        Router::new()
            .route("/boom", get(boom))
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .route(
                "/json",
                post(|_: axum::Json<serde_json::Value>| async { "ok" }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(16))
            .layer(axum::middleware::from_fn(catch_panics))
            .layer(axum::middleware::from_fn_with_state(16usize, json_errors))
    }

    /// Serves `app()` on a free port; its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move { axum::serve(listener, app()).await });
        format!("http://{addr}")
    }

    async fn call(
        method: &str,
        path: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let base = serve().await;
        let mut request = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .body(body.to_string());
        if let Some(value) = content_type {
            request = request.header("content-type", value);
        }
        let response = request
            .send()
            .await
            .expect("an answer, not a closed connection");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).expect("a JSON body"))
    }

    #[tokio::test]
    async fn a_panic_answers_json_500_and_is_counted() {
        let before = metrics::INTAKE_PANICS.with(metrics::Door::Http).get();
        let (status, body) = call("GET", "/boom", "", None).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal");
        assert!(metrics::INTAKE_PANICS.with(metrics::Door::Http).get() > before);
    }

    #[tokio::test]
    async fn axums_own_errors_become_json() {
        let (status, body) = call("POST", "/echo", &"x".repeat(17), None).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["code"], "too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("over 16 bytes")
        );
        let (status, body) = call("POST", "/echo", &"x".repeat(16), None).await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!(16)));

        let (status, body) = call("GET", "/nowhere", "", None).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("GET /nowhere")
        );

        let (status, body) = call("DELETE", "/echo", "", None).await;
        assert_eq!(status, 405);
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("DELETE is not allowed on /echo"),
            "{body}"
        );

        let (status, body) = call("POST", "/json", "{}", None).await;
        assert_eq!(status, 415);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
        let (status, body) = call("POST", "/json", "{nope", Some("application/json")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}
