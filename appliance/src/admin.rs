//! The `appliance.admin.v1.Admin` service: grants, CRLs, models and the
//! audit log. Admin certificates only. Every keystore write runs on the
//! blocking pool and is durable before the call returns.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wire::admin::admin_server::Admin;
use wire::admin::*;
use zeroize::Zeroizing;

use crate::audit;
use crate::error::AppError;
use crate::grants::Grant as DomainGrant;
use crate::identity;
use crate::models::{self, MAX_MODEL_BYTES, ModelName};
use crate::state::{AppState, Need};

/// The admin service.
pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    /// A service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        AdminService { state }
    }
}

/// Runs blocking keystore work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(format!("blocking task: {e}")))?
}

fn to_domain(g: Grant) -> DomainGrant {
    DomainGrant {
        client: g.client,
        models: g.models,
        admin: g.admin,
        rate_per_second: (g.rate_per_second > 0.0).then_some(g.rate_per_second),
        burst: (g.burst > 0).then_some(g.burst),
        daily_quota: (g.daily_quota > 0).then_some(g.daily_quota),
    }
}

fn to_wire(g: DomainGrant) -> Grant {
    Grant {
        client: g.client,
        models: g.models,
        admin: g.admin,
        rate_per_second: g.rate_per_second.unwrap_or(0.0),
        burst: g.burst.unwrap_or(0),
        daily_quota: g.daily_quota.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn put_grant(
        &self,
        request: Request<Grant>,
    ) -> Result<Response<PutGrantResponse>, Status> {
        let call = self.state.begin(&request, "PutGrant", Need::Admin, "", 0)?;
        let grant = to_domain(request.into_inner());
        let state = self.state.clone();
        let result = blocking(move || state.grants.put(grant)).await;
        call.finish(result.map(|()| PutGrantResponse {}))
    }

    async fn delete_grant(
        &self,
        request: Request<DeleteGrantRequest>,
    ) -> Result<Response<DeleteGrantResponse>, Status> {
        let call = self
            .state
            .begin(&request, "DeleteGrant", Need::Admin, "", 0)?;
        let client = request.into_inner().client;
        let state = self.state.clone();
        let result = blocking(move || state.grants.delete(&client)).await;
        call.finish(result.map(|existed| DeleteGrantResponse { existed }))
    }

    async fn list_grants(
        &self,
        request: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ListGrants", Need::Admin, "", 0)?;
        let grants = self.state.grants.list().into_iter().map(to_wire).collect();
        call.finish(Ok(ListGrantsResponse { grants }))
    }

    async fn install_crl(
        &self,
        request: Request<InstallCrlRequest>,
    ) -> Result<Response<InstallCrlResponse>, Status> {
        let call = self
            .state
            .begin(&request, "InstallCrl", Need::Admin, "", 0)?;
        let bytes = request.into_inner().crl;
        let state = self.state.clone();
        let result = blocking(move || {
            let crl = identity::parse_crl(&bytes, &state.tls.identity().client_ca)?;
            identity::store_crl(&state.store, &crl)?;
            let revoked = crl.revoked.len() as u64;
            state.tls.replace_crl(crl)?;
            tracing::info!(revoked, "CRL installed");
            Ok(InstallCrlResponse { revoked })
        })
        .await;
        call.finish(result)
    }

    async fn load_model(
        &self,
        request: Request<Streaming<LoadModelChunk>>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let call = self
            .state
            .begin(&request, "LoadModel", Need::Admin, "", 0)?;
        let mut stream = request.into_inner();
        let result = async {
            let mut header = None;
            let mut onnx = Zeroizing::new(Vec::new());
            let mut tokenizer = Zeroizing::new(Vec::new());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|s| match s.code() {
                    // tonic's "message over max_message_bytes".
                    tonic::Code::OutOfRange => AppError::Exhausted(s.message().to_owned()),
                    _ => AppError::InvalidArgument(s.message().to_owned()),
                })?;
                if let Some(h) = chunk.header {
                    if header.is_some() {
                        return Err(AppError::InvalidArgument("header sent twice".into()));
                    }
                    header = Some(h);
                }
                if onnx.len() + tokenizer.len() + chunk.onnx.len() + chunk.tokenizer_json.len()
                    > MAX_MODEL_BYTES
                {
                    return Err(AppError::Exhausted(format!(
                        "model larger than {MAX_MODEL_BYTES} bytes"
                    )));
                }
                onnx.extend_from_slice(&chunk.onnx);
                tokenizer.extend_from_slice(&chunk.tokenizer_json);
            }
            let header =
                header.ok_or_else(|| AppError::InvalidArgument("no header chunk".into()))?;
            let name = ModelName::parse(&header.name)?;
            let version = header.version;
            let state = self.state.clone();
            let limits = state.config.engine_limits();
            let reply_name = name.as_str().to_owned();
            blocking(move || {
                let tokenizer = (!tokenizer.is_empty()).then_some(tokenizer.as_slice());
                models::install(
                    &state.store,
                    &state.registry,
                    limits,
                    &name,
                    version,
                    &onnx,
                    tokenizer,
                )
            })
            .await?;
            Ok(LoadModelResponse {
                name: reply_name,
                version,
                state: "ready".into(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn unload_model(
        &self,
        request: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        let call = self
            .state
            .begin(&request, "UnloadModel", Need::Admin, "", 0)?;
        let m = request.into_inner();
        let state = self.state.clone();
        let result = blocking(move || {
            let name = ModelName::parse(&m.name)?;
            models::remove(&state.store, &state.registry, &name, m.version)
        })
        .await;
        call.finish(result.map(|existed| UnloadModelResponse { existed }))
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ListModels", Need::Admin, "", 0)?;
        let models = models::list(&self.state.registry)
            .into_iter()
            .map(|(name, version, state)| ModelState {
                name,
                version,
                state: state.to_string(),
            })
            .collect();
        call.finish(Ok(ListModelsResponse { models }))
    }

    type ExportAuditStream = ReceiverStream<Result<AuditRecord, Status>>;

    async fn export_audit(
        &self,
        request: Request<ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let call = self
            .state
            .begin(&request, "ExportAudit", Need::Admin, "", 0)?;
        let from = request.into_inner().from_sequence;
        let state = self.state.clone();
        let records = match blocking(move || audit::export(&state.store, from)).await {
            Ok(records) => records,
            Err(e) => return Err(call.fail(e)),
        };
        let records: Vec<AuditRecord> = records
            .into_iter()
            .map(|r| AuditRecord {
                sequence: r.sequence,
                time: audit::rfc3339(r.time_ms),
                client: r.event.client,
                rpc: r.event.rpc,
                model: r.event.model,
                version: r.event.version,
                outcome: r.event.outcome,
                bytes_in: r.event.bytes_in,
                bytes_out: r.event.bytes_out,
                latency_us: r.event.latency_us,
                chain_hash: r.hash,
            })
            .collect();
        call.succeed(
            records
                .iter()
                .map(|r| prost::Message::encoded_len(r) as u64)
                .sum(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for record in records {
                if tx.send(Ok(record)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
