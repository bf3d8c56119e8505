//! `overlayd --docker-plugin NAME`: a Docker network driver and IPAM driver named NAME (one
//! socket, `<plugin dir>/NAME.sock`, implementing both; Docker loads it as a legacy plugin), and a
//! mirror that keeps the host's Docker networks of that driver equal to the network records in
//! etcd. See [`driver`] for what each call does and [`mirror`] for the networks. The same socket
//! is an authorization plugin for dockerd's `--authorization-plugin NAME` (opt-in, see [`authz`]).

pub mod authz;
pub mod driver;
pub mod engine;
pub mod forward;
pub mod mirror;
pub mod protocol;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::error::Error;
use authz::Authz;
use driver::Driver;

/// The largest request body read whole: a libnetwork call is a few hundred bytes; an `AuthZReq`
/// carries the API request's body only below 1 MiB, base64-encoded (about 1.4 MiB).
const BODY_LIMIT: usize = 4 << 20;

/// What every connection serves.
struct Plugin {
    driver: Arc<Driver>,
    authz: Authz,
}

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
    let authz = Authz::new(
        engine.clone(),
        settings.driver.node.clone(),
        settings.driver.etcd.clone(),
    )
    .map_err(Error::Config)?;
    let driver = Arc::new(Driver::new(settings.driver, engine).map_err(Error::Config)?);
    let plugin = Arc::new(Plugin {
        driver: driver.clone(),
        authz,
    });
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
    let mirror = tokio::spawn(mirror::run(driver));
    let served = serve(listener, plugin).await;
    mirror.abort();
    served
}

async fn serve(listener: UnixListener, plugin: Arc<Plugin>) -> Result<(), Error> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("docker plugin: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(plugin.clone(), request));
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
    plugin: Arc<Plugin>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.uri().path().trim_start_matches('/').to_string();
    if method == protocol::AUTHZ_RESPONSE {
        // Responses are never refused. Their body (the API response, unbounded) is read and
        // dropped frame by frame, so that the connection stays usable and nothing is kept.
        let mut body = request.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        return Ok(authz_reply(&protocol::AuthzAnswer::allow()));
    }
    let body = match Limited::new(request.into_body(), BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if method == protocol::AUTHZ_REQUEST => {
            // Larger than any request dockerd sends; a network removal has no body.
            log::warn!("docker authz: request not read ({e}); allowed");
            return Ok(authz_reply(&protocol::AuthzAnswer::allow()));
        }
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                serde_json::to_string(&protocol::Failure { err: e.to_string() })
                    .unwrap_or_else(|_| "{}".into()),
            ))
        }
    };
    let started = std::time::Instant::now();
    if method == protocol::AUTHZ_REQUEST {
        let answer = match serde_json::from_slice::<protocol::AuthzRequest>(&body) {
            Ok(req) => plugin.authz.request(&req).await,
            Err(e) => {
                log::warn!("docker authz: malformed request ({e}); allowed");
                protocol::AuthzAnswer::allow()
            }
        };
        log::debug!("docker plugin: {method} in {:?}", started.elapsed());
        return Ok(authz_reply(&answer));
    }
    let answer = plugin.driver.call(&method, &body).await;
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

fn authz_reply(answer: &protocol::AuthzAnswer) -> Response<Full<Bytes>> {
    let text = serde_json::to_string(answer).unwrap_or_else(|_| r#"{"Allow":true}"#.into());
    reply(StatusCode::OK, text)
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    if let Ok(value) = protocol::CONTENT_TYPE.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
