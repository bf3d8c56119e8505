//! `overlayd --docker-plugin NAME`: a Docker network driver and IPAM driver named NAME (one
//! socket, `<plugin dir>/NAME.sock`, implementing both; Docker loads it as a legacy plugin), and a
//! mirror that keeps the host's Docker networks of that driver equal to the network records in
//! etcd. See [`driver`] for what each call does and [`mirror`] for the networks.

pub mod driver;
pub mod engine;
pub mod forward;
pub mod mirror;
pub mod protocol;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::error::Error;
use driver::Driver;

pub struct Settings {
    /// The driver's name (`docker network create -d NAME --ipam-driver NAME`).
    pub name: String,
    /// Where Docker looks for plugin sockets (`/run/docker/plugins`).
    pub plugin_dir: PathBuf,
    /// The local Docker Engine API socket.
    pub docker_socket: String,
    pub driver: driver::Settings,
}

/// Binds the socket (a taken or unwritable path is a configuration error), then serves.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let engine = engine::Engine::new(&settings.docker_socket, &settings.name);
    let driver = Arc::new(Driver::new(settings.driver, engine).map_err(Error::Config)?);
    std::fs::create_dir_all(&settings.plugin_dir)
        .map_err(|e| Error::Config(format!("creating {}: {e}", settings.plugin_dir.display())))?;
    let path = settings.plugin_dir.join(format!("{}.sock", settings.name));
    // A socket left by an overlayd that died; a live one would answer a connect.
    if std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::Config(format!("binding {}: {e}", path.display())))?;
    log::info!("docker plugin {} on {}", settings.name, path.display());
    let mirror = tokio::spawn(mirror::run(driver.clone()));
    let served = serve(listener, driver).await;
    mirror.abort();
    served
}

async fn serve(listener: UnixListener, driver: Arc<Driver>) -> Result<(), Error> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("docker plugin: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(driver.clone(), request));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("docker plugin: {e}");
            }
        });
    }
}

async fn respond(
    driver: Arc<Driver>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.uri().path().trim_start_matches('/').to_string();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                format!("{{\"Err\":\"{e}\"}}"),
            ))
        }
    };
    let started = std::time::Instant::now();
    let answer = driver.call(&method, &body).await;
    let (status, text) = match answer {
        None => (StatusCode::NOT_FOUND, "{}".to_string()),
        Some(Ok(value)) => (StatusCode::OK, value.to_string()),
        Some(Err(err)) => {
            log::warn!("docker plugin: {method}: {err}");
            let failure = protocol::Failure { err };
            (
                StatusCode::OK,
                serde_json::to_string(&failure).unwrap_or_else(|_| "{}".into()),
            )
        }
    };
    log::debug!("docker plugin: {method} in {:?}", started.elapsed());
    Ok(reply(status, text))
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    if let Ok(value) = protocol::CONTENT_TYPE.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
