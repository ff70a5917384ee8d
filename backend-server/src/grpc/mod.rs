//! The demo backend's gRPC mode: the `switchyard.demo.Demo` service (a unary `Echo` and a
//! server-streaming `Count`) and the standard `grpc.health.v1.Health` service, both following
//! the backend's behaviour — its delay, its injected errors (as gRPC statuses: 503 →
//! UNAVAILABLE, 429 → RESOURCE_EXHAUSTED, 500 → INTERNAL) and its health (`NOT_SERVING`).

#[allow(clippy::all, missing_docs)]
pub mod demo;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_core::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::BackendState;
use demo::demo_server::{Demo, DemoServer};
use demo::{CountReply, CountRequest, EchoReply, EchoRequest};

/// The gRPC services of a demo backend, as routes.
pub fn routes(state: Arc<BackendState>) -> tonic::service::Routes {
    tonic::service::Routes::new(DemoServer::new(DemoService(state.clone())))
        .add_service(HealthServer::new(HealthService(state)))
}

/// The gRPC status of an injected error status.
pub fn status_for(http: u16, backend: &str) -> Status {
    let message = format!("injected by {backend}");
    match http {
        503 => Status::unavailable(message),
        429 => Status::resource_exhausted(message),
        504 => Status::deadline_exceeded(message),
        _ => Status::internal(message),
    }
}

struct DemoService(Arc<BackendState>);

impl DemoService {
    /// Wait the configured delay, count the call, and fail it if an error is rolled.
    async fn behave(&self) -> Result<(), Status> {
        let behaviour = self.0.behaviour();
        tokio::time::sleep(behaviour.sample_delay()).await;
        self.0.requests_served.fetch_add(1, Ordering::Relaxed);
        if behaviour.roll_error() {
            return Err(status_for(behaviour.error_status, self.0.name()));
        }
        Ok(())
    }
}

type CountStream = Pin<Box<dyn Stream<Item = Result<CountReply, Status>> + Send>>;

#[tonic::async_trait]
impl Demo for DemoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.behave().await?;
        Ok(Response::new(EchoReply {
            message: request.into_inner().message,
            backend: self.0.name().to_string(),
        }))
    }

    type CountStream = CountStream;

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<CountStream>, Status> {
        self.behave().await?;
        let up_to = request.into_inner().up_to.min(10_000);
        let backend = self.0.name().to_string();
        let replies = (1..=up_to).map(move |n| {
            Ok(CountReply {
                n,
                backend: backend.clone(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

struct HealthService(Arc<BackendState>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let behaviour = self.0.behaviour();
        self.0.health_checks_served.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(behaviour.sample_delay()).await;
        let status = if behaviour.healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("the demo backend answers Check only"))
    }
}
