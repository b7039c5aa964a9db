//! The standard `grpc.health.v1` service, behind the same authorization as
//! everything else (any granted client may ask).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::state::{AppState, Need};

/// Services a client may ask about: the server as a whole ("") and the
/// inference service.
const KNOWN: [&str; 2] = ["", "inference.GRPCInferenceService"];

/// The health service.
pub struct HealthService {
    state: Arc<AppState>,
}

impl HealthService {
    /// A service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        HealthService { state }
    }

    fn status(&self, service: &str) -> Result<HealthCheckResponse, Status> {
        if !KNOWN.contains(&service) {
            return Err(Status::not_found("unknown service"));
        }
        let status = if self.state.registry.all_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(HealthCheckResponse {
            status: status as i32,
        })
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let call = self
            .state
            .begin(&request, "HealthCheck", Need::AnyGrant, "", 0)?;
        match self.status(&request.get_ref().service) {
            Ok(response) => call.finish(Ok(response)),
            Err(status) => {
                call.succeed(0);
                Err(status)
            }
        }
    }

    type WatchStream = tokio_stream::Once<Result<HealthCheckResponse, Status>>;

    /// Answers once with the current status (a watcher re-asks).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let call = self
            .state
            .begin(&request, "HealthWatch", Need::AnyGrant, "", 0)?;
        let result = self.status(&request.get_ref().service);
        call.succeed(0);
        Ok(Response::new(tokio_stream::once(result)))
    }
}
