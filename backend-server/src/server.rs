//! The network side of a demo backend: the router (HTTP, or gRPC with the control endpoint
//! beside it), plain or TLS (HTTP/2 by ALPN, h2c on plain sockets), and an accept loop that
//! can be killed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{BackendState, BehaviourPatch};

/// The demo backend's routes: `/health`, `/_control` and every other path.
pub fn router(state: Arc<BackendState>) -> Router {
    Router::new()
        .route("/health", any(health))
        .route("/_control", get(show_control).put(update_control))
        .fallback(serve_any)
        .with_state(state)
}

/// A backend listening on a socket; dropping it (or calling [`RunningBackend::kill`]) closes
/// the listener and every open connection at once.
pub struct RunningBackend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    kill: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl RunningBackend {
    /// The address the backend listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend's shared state, for reading counters or changing behaviour in-process.
    pub fn state(&self) -> &Arc<BackendState> {
        &self.state
    }

    /// Stop accepting and drop every open connection, like a crashed process.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
        self.accept_task.abort();
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a backend serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (its ALPN offers h2 and http/1.1).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve the gRPC services instead of the HTTP paths (`/_control` stays).
    pub grpc: bool,
}

/// Bind `listen` and serve the demo backend over plain HTTP on the current tokio runtime.
pub async fn spawn(
    listen: SocketAddr,
    state: Arc<BackendState>,
) -> std::io::Result<RunningBackend> {
    spawn_with(listen, state, ServeOptions::default()).await
}

/// Bind `listen` and serve the demo backend as `options` say.
pub async fn spawn_with(
    listen: SocketAddr,
    state: Arc<BackendState>,
    options: ServeOptions,
) -> std::io::Result<RunningBackend> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (kill, killed) = watch::channel(false);
    let app = if options.grpc {
        grpc_router(state.clone())
    } else {
        router(state.clone())
    };
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let accept_task = tokio::spawn(accept_loop(listener, app, acceptor, state.clone(), killed));
    Ok(RunningBackend {
        addr,
        state,
        kill,
        accept_task,
    })
}

#[cfg(feature = "grpc")]
fn grpc_router(state: Arc<BackendState>) -> Router {
    crate::grpc::routes(state.clone())
        .into_axum_router()
        .merge(control_router(state))
}

#[cfg(not(feature = "grpc"))]
fn grpc_router(state: Arc<BackendState>) -> Router {
    log::error!("this backend-server was built without the `grpc` feature: serving HTTP");
    router(state)
}

/// `/_control` alone (beside the gRPC services).
#[cfg(feature = "grpc")]
fn control_router(state: Arc<BackendState>) -> Router {
    Router::new()
        .route("/_control", get(show_control).put(update_control))
        .with_state(state)
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<BackendState>,
    killed: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        state.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let service = TowerToHyperService::new(app.clone());
        let mut killed = killed.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = ConnBuilder::new(TokioExecutor::new());
            let serve = async {
                let result = match acceptor {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Err(e) => {
                            log::debug!("TLS handshake failed: {e}");
                            return;
                        }
                    },
                };
                if let Err(e) = result {
                    log::debug!("connection ended: {e}");
                }
            };
            tokio::select! {
                _ = serve => {}
                // Dropping the connection future closes the socket mid-request.
                _ = killed.wait_for(|k| *k) => {}
            }
        });
    }
}

async fn health(State(state): State<Arc<BackendState>>) -> Response {
    let behaviour = state.behaviour();
    state.health_checks_served.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(behaviour.sample_delay()).await;
    let (status, word) = if behaviour.healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    };
    with_backend_header(
        &state,
        (status, Json(json!({"backend": state.name, "status": word}))),
    )
}

async fn show_control(State(state): State<Arc<BackendState>>) -> Response {
    let body = json!({
        "backend": state.name,
        "behaviour": state.behaviour(),
        "requests_served": state.requests_served(),
        "health_checks_served": state.health_checks_served(),
    });
    with_backend_header(&state, Json(body))
}

async fn update_control(
    State(state): State<Arc<BackendState>>,
    body: axum::body::Bytes,
) -> Response {
    let patch: BehaviourPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            let msg = json!({"error": format!("bad control body: {e}")});
            return with_backend_header(&state, (StatusCode::BAD_REQUEST, Json(msg)));
        }
    };
    match state.apply(&patch) {
        Ok(b) => {
            log::info!("{}: behaviour now {:?}", state.name, b);
            with_backend_header(&state, Json(json!({"backend": state.name, "behaviour": b})))
        }
        Err(e) => with_backend_header(&state, (StatusCode::BAD_REQUEST, Json(json!({"error": e})))),
    }
}

async fn serve_any(State(state): State<Arc<BackendState>>, req: Request) -> Response {
    let behaviour = state.behaviour();
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    // Read the whole body, as an upload endpoint would (bounded at 64 MiB).
    let body_bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b.len(),
        Err(e) => {
            let msg =
                json!({"backend": state.name, "error": format!("reading the body failed: {e}")});
            return with_backend_header(&state, (StatusCode::BAD_REQUEST, Json(msg)));
        }
    };
    let req = Request::from_parts(parts, axum::body::Body::empty());
    state.remember(crate::SeenRequest {
        method: req.method().to_string(),
        version: format!("{:?}", req.version()),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_bytes,
    });
    tokio::time::sleep(behaviour.sample_delay()).await;
    state.requests_served.fetch_add(1, Ordering::Relaxed);
    if behaviour.roll_error() {
        let status = StatusCode::from_u16(behaviour.error_status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"backend": state.name, "path": path, "error": "injected"});
        return with_backend_header(&state, (status, Json(body)));
    }
    let body = json!({
        "backend": state.name,
        "path": path,
        "query": req.uri().query(),
        "method": req.method().as_str(),
        "body_bytes": body_bytes,
        "hostname": state.hostname,
        "forwarded_for": header_str(&req, "x-forwarded-for"),
        "forwarded_proto": header_str(&req, "x-forwarded-proto"),
        "forwarded_host": header_str(&req, "x-forwarded-host"),
    });
    with_backend_header(&state, Json(body))
}

fn header_str(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn with_backend_header(state: &BackendState, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    if let Ok(v) = HeaderValue::from_str(&state.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Behaviour;

    async fn start(name: &str) -> RunningBackend {
        let state = BackendState::new(name, Behaviour::default());
        spawn("127.0.0.1:0".parse().unwrap(), state).await.unwrap()
    }

    #[tokio::test]
    async fn answers_with_its_name_and_path() {
        let b = start("b1").await;
        let resp = reqwest::get(format!("http://{}/cluster1/x?q=1", b.addr()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "b1");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["backend"], "b1");
        assert_eq!(body["path"], "/cluster1/x");
        assert_eq!(b.state().requests_served(), 1);
    }

    #[tokio::test]
    async fn control_endpoint_makes_it_unhealthy_and_failing() {
        let b = start("b2").await;
        let client = reqwest::Client::new();
        let url = format!("http://{}/_control", b.addr());
        let resp = client
            .put(&url)
            .body(r#"{"healthy": false, "error_rate": 1.0, "error_status": 503}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let health = reqwest::get(format!("http://{}/health", b.addr()))
            .await
            .unwrap();
        assert_eq!(health.status(), 503);
        let any = reqwest::get(format!("http://{}/x", b.addr()))
            .await
            .unwrap();
        assert_eq!(any.status(), 503);
        let bad = client
            .put(&url)
            .body(r#"{"error_rate": 2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let unknown = client
            .put(&url)
            .body(r#"{"nope": 1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
    }

    #[tokio::test]
    async fn kill_refuses_new_connections() {
        let b = start("b3").await;
        let addr = b.addr();
        b.kill();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(reqwest::get(format!("http://{addr}/")).await.is_err());
    }
}
