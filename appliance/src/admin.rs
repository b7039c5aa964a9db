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
use crate::push::PushSource;
use crate::state::{AppState, Need};
use crate::updates::{self, Progress};

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
        if !self.state.config.models.allow_unsigned {
            return Err(call.fail(AppError::Refused(
                "unsigned model uploads are disabled on this appliance ([models] allow_unsigned = \
                 false): publish a signed image and use `provision model update`"
                    .into(),
            )));
        }
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

    type UpdateModelsStream = ReceiverStream<Result<UpdateEvent, Status>>;

    async fn update_models(
        &self,
        request: Request<Streaming<UpdateRequest>>,
    ) -> Result<Response<Self::UpdateModelsStream>, Status> {
        let call = self
            .state
            .begin(&request, "UpdateModels", Need::Admin, "", 0)?;
        let client = call.client().to_owned();
        let mut stream = request.into_inner();
        let start = match stream.message().await {
            Ok(Some(UpdateRequest {
                message: Some(update_request::Message::Start(start)),
            })) => start,
            Ok(_) => {
                return Err(call.fail(AppError::InvalidArgument(
                    "the first UpdateModels message must be `start`".into(),
                )));
            }
            Err(status) => {
                return Err(call.fail(AppError::InvalidArgument(status.message().into())));
            }
        };
        let models = match start
            .models
            .iter()
            .map(|m| ModelName::parse(m).map(|n| n.as_str().to_owned()))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(m) => m,
            Err(e) => return Err(call.fail(e)),
        };
        let stall = std::time::Duration::from_secs(self.state.config.models.update_stall_timeout_s);
        let (events, rx) = tokio::sync::mpsc::channel(16);
        let runtime = tokio::runtime::Handle::current();
        use images::tuf::source::{DirSource, HttpSource, RepositorySource};
        use update_start::Source;
        let source: Arc<dyn RepositorySource> = match start.source {
            Some(Source::Push(true)) => {
                let (answers_tx, answers) = std::sync::mpsc::channel();
                tokio::spawn(async move {
                    // Only answers to our requests are expected from here on.
                    loop {
                        let answer = match stream.message().await {
                            Ok(Some(UpdateRequest {
                                message: Some(update_request::Message::File(file)),
                            })) => Ok(file),
                            Ok(Some(_)) => Err("a message other than a file answer".to_owned()),
                            Ok(None) => break,
                            Err(status) => Err(status.message().to_owned()),
                        };
                        let last = answer.is_err();
                        if answers_tx.send(answer).is_err() || last {
                            break;
                        }
                    }
                });
                let max_message = self.state.config.server.max_message_bytes;
                Arc::new(PushSource::new(
                    events.clone(),
                    answers,
                    runtime.clone(),
                    stall,
                    max_message,
                    &client,
                ))
            }
            Some(Source::MirrorUrl(url)) => match HttpSource::new(&url) {
                Ok(s) => Arc::new(s),
                Err(e) => return Err(call.fail(AppError::InvalidArgument(e.to_string()))),
            },
            Some(Source::LocalDir(dir)) => {
                let path = std::path::PathBuf::from(&dir);
                if !path.is_absolute() || !path.join("metadata").is_dir() {
                    return Err(call.fail(AppError::InvalidArgument(format!(
                        "local_dir {dir:?}: an absolute path to a repository (with metadata/) on the appliance"
                    ))));
                }
                Arc::new(DirSource::new(&path))
            }
            _ => {
                return Err(call.fail(AppError::InvalidArgument(
                    "start.source: one of push, mirror_url, local_dir".into(),
                )));
            }
        };
        // The stream is accepted (and audited as such); every step of the
        // update is audited on its own, with this client's name.
        call.succeed(0);
        let state = self.state.clone();
        tokio::spawn(async move {
            let progress_events = events.clone();
            let work = tokio::task::spawn_blocking(move || {
                let request = updates::UpdateRequest { client, models };
                state.updates.update(&state, source, &request, &mut |p| {
                    // A client that stopped reading only misses progress.
                    let _ = runtime
                        .block_on(progress_events.send_timeout(Ok(progress_to_wire(p)), stall));
                })
            })
            .await;
            let failure = match work {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(crate::error::to_status(&e)),
                Err(e) => {
                    tracing::error!(error = %e, "the update task failed");
                    Some(Status::internal("the update failed; see the appliance log"))
                }
            };
            if let Some(status) = failure {
                let _ = events.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn rollback_model(
        &self,
        request: Request<RollbackModelRequest>,
    ) -> Result<Response<RollbackModelResponse>, Status> {
        let call = self
            .state
            .begin(&request, "RollbackModel", Need::Admin, "", 0)?;
        let client = call.client().to_owned();
        let name = request.into_inner().name;
        let state = self.state.clone();
        let result = blocking(move || {
            let name = ModelName::parse(&name)?;
            state.updates.rollback(&state, name.as_str(), &client)
        })
        .await;
        call.finish(result.map(|i| RollbackModelResponse {
            release: i.release,
            version: i.version,
        }))
    }

    async fn remove_model_line(
        &self,
        request: Request<RemoveModelLineRequest>,
    ) -> Result<Response<RemoveModelLineResponse>, Status> {
        let call = self
            .state
            .begin(&request, "RemoveModelLine", Need::Admin, "", 0)?;
        let client = call.client().to_owned();
        let name = request.into_inner().name;
        let state = self.state.clone();
        let result = blocking(move || {
            let name = ModelName::parse(&name)?;
            state.updates.remove_line(&state, name.as_str(), &client)
        })
        .await;
        call.finish(result.map(|existed| RemoveModelLineResponse { existed }))
    }

    async fn list_model_lines(
        &self,
        request: Request<ListModelLinesRequest>,
    ) -> Result<Response<ListModelLinesResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ListModelLines", Need::Admin, "", 0)?;
        let state = self.state.clone();
        let result = blocking(move || state.updates.lines(&state)).await;
        call.finish(result.map(|lines| {
            ListModelLinesResponse {
                lines: lines
                    .into_iter()
                    .map(|v| {
                        let s = v.state;
                        ModelLine {
                            active_release: s.active.as_ref().map_or(0, |a| a.release),
                            active_version: s.active.as_ref().map_or(0, |a| a.version),
                            active_digest: s
                                .active
                                .as_ref()
                                .map_or(String::new(), |a| a.digest.clone()),
                            previous_release: s.previous.as_ref().map_or(0, |a| a.release),
                            previous_version: s.previous.as_ref().map_or(0, |a| a.version),
                            state: v.phase,
                            floor: s.floor,
                            last: s.last,
                            name: s.name,
                        }
                    })
                    .collect(),
            }
        }))
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
                detail: r.event.detail,
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

/// An update's progress as the wire carries it.
fn progress_to_wire(p: Progress) -> UpdateEvent {
    use update_event::Event;
    let event = match p {
        Progress::Verified {
            source,
            versions,
            expires,
            targets,
        } => Event::Verified(UpdateVerified {
            source,
            root_version: versions[0],
            timestamp_version: versions[1],
            snapshot_version: versions[2],
            targets_version: versions[3],
            expires: expires.0,
            expiring_role: expires.1,
            targets: targets as u32,
        }),
        Progress::Step { model, message } => Event::Step(UpdateStep { model, message }),
        Progress::Outcome(o) => Event::Outcome(UpdateOutcome {
            model: o.model,
            result: o.kind.as_str().into(),
            release: o.release,
            version: o.version,
            serving_release: o.serving_release,
            message: o.message,
        }),
    };
    UpdateEvent { event: Some(event) }
}
