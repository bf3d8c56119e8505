//! The local HTTP endpoint of [`crate::metrics`] (`--metrics-addr`): `/healthz` (the process
//! answers), `/readyz` (200 when ready, else 503 with what is missing), `/metrics` (Prometheus).
//! HTTP/1 from hyper, which tonic already brings into the tree; nothing else is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::metrics;

/// What `/metrics` is: prometheus-client writes the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
/// A client that sends no request within this is dropped (a probe sends one at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound at start, so that a port already taken stops overlayd with a clear error instead of a
/// daemon whose probes fail for a reason nobody sees.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::MetricsSocket { address, source })
}

/// Serves until aborted.
pub async fn serve(listener: TcpListener) -> Result<(), Error> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: pass, and try the next one.
            Err(e) => {
                log::warn!("metrics endpoint: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service_fn(respond))
                .await;
            if let Err(e) = served {
                log::debug!("metrics endpoint: {e}");
            }
        });
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let m = metrics::get();
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, TEXT, "ok\n".to_string()),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let missing = m.not_ready();
            if missing.is_empty() {
                (StatusCode::OK, TEXT, "ready\n".to_string())
            } else {
                let why = format!("not ready: {}\n", missing.join("; "));
                (StatusCode::SERVICE_UNAVAILABLE, TEXT, why)
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, OPENMETRICS, m.encode()),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            TEXT,
            "/healthz, /readyz, /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET only\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    Ok(response)
}
