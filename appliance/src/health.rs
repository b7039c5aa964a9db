//! The standard `grpc.health.v1` service, behind the same authorization as
//! everything else (any granted client may ask).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::error::AppError;
use crate::state::{AppState, Need, clip};

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

    fn status(&self, service: &str) -> Result<HealthCheckResponse, AppError> {
        if !KNOWN.contains(&service) {
            return Err(AppError::NotFound(format!(
                "unknown service `{}`; known: \"\" and inference.GRPCInferenceService",
                clip(service)
            )));
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
        let result = self.status(&request.get_ref().service);
        call.finish(result)
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
        // The outcome the client gets is the outcome audited.
        match self.status(&request.get_ref().service) {
            Ok(response) => {
                call.succeed(prost::Message::encoded_len(&response) as u64);
                Ok(Response::new(tokio_stream::once(Ok(response))))
            }
            Err(e) => Err(call.fail(e)),
        }
    }
}
