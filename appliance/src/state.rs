//! What every handler shares, and the per-call discipline: authenticate,
//! authorize, admit, then audit and count whatever the outcome.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use inference::{Pool, Registry};
use keystore::Store;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, Event};
use crate::config::{Config, LogCalls};
use crate::error::{AppError, code_name, to_status};
use crate::grants::Grants;
use crate::identity::ClientId;
use crate::metrics::Metrics;
use crate::tls::TlsState;
use crate::updates::Updates;

/// The client identity of a connection, attached to each of its requests.
/// An error means the certificate chained to the site CA but did not name
/// a client of this site.
#[derive(Debug, Clone)]
pub struct Peer(pub Arc<Result<ClientId, String>>);

/// Shared state of the running server.
pub struct AppState {
    /// The encrypted store.
    pub store: Store,
    /// Loaded models.
    pub registry: Arc<Registry>,
    /// Where models run.
    pub pool: Pool,
    /// Who may call what.
    pub grants: Grants,
    /// TLS configuration and revocations.
    pub tls: TlsState,
    /// The audit log.
    pub audit: AuditLog,
    /// Counters.
    pub metrics: Metrics,
    /// Signed model updates.
    pub updates: Updates,
    /// The configuration.
    pub config: Config,
}

/// What a call needs its client's grant to cover.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Any grant (liveness, readiness, server metadata, health).
    AnyGrant,
    /// This model.
    Model(&'a str),
    /// The admin role.
    Admin,
}

/// One call in progress; `finish` audits it.
pub struct Call<'a> {
    state: &'a AppState,
    client: String,
    /// The RPC's name; our handlers' names are static, a refused method's
    /// comes from the request path.
    rpc: Cow<'static, str>,
    model: String,
    version: String,
    bytes_in: u64,
    started: Instant,
    /// Refused because the audit log cannot be written: not queued there
    /// (the refusal is logged and counted instead).
    unrecordable: bool,
}

impl AppState {
    /// Identifies the caller of `request`, checks its grant covers `need`
    /// and admits it under its rate and quota. A refusal is audited here.
    pub fn begin<'a, T>(
        &'a self,
        request: &Request<T>,
        rpc: &'static str,
        need: Need<'_>,
        version: &str,
        bytes_in: u64,
    ) -> Result<Call<'a>, Status> {
        let peer = request.extensions().get::<Peer>();
        self.begin_peer(peer, rpc, need, version, bytes_in)
    }

    /// As [`AppState::begin`], for calls that are not gRPC (metrics).
    pub fn begin_peer<'a>(
        &'a self,
        peer: Option<&Peer>,
        rpc: &'static str,
        need: Need<'_>,
        version: &str,
        bytes_in: u64,
    ) -> Result<Call<'a>, Status> {
        let model = match need {
            Need::Model(m) => m,
            _ => "",
        };
        let mut call = Call {
            state: self,
            client: "-".into(),
            rpc: Cow::Borrowed(rpc),
            model: clip(model),
            version: clip(version),
            bytes_in,
            started: Instant::now(),
            unrecordable: false,
        };
        match self.authorize(peer, need, &mut call) {
            Ok(()) => Ok(call),
            Err(e) => Err(call.fail(e)),
        }
    }

    fn authorize(
        &self,
        peer: Option<&Peer>,
        need: Need<'_>,
        call: &mut Call<'_>,
    ) -> Result<(), AppError> {
        // A call the audit log cannot record is not served (G7).
        if !self.audit.healthy() {
            call.unrecordable = true;
            return Err(AppError::Unavailable(
                "the audit log cannot be written; calls are refused until it can".into(),
            ));
        }
        let id = match peer.map(|p| p.0.as_ref()) {
            Some(Ok(id)) => id,
            Some(Err(why)) => return Err(AppError::Unauthenticated(why.clone())),
            None => return Err(AppError::Unauthenticated("no client certificate".into())),
        };
        call.client.clone_from(&id.name);
        // Connections opened before a CRL arrived are checked per request.
        if self.tls.is_revoked(&id.serial) {
            return Err(AppError::Unauthenticated(
                "the client certificate has been revoked".into(),
            ));
        }
        let grant = self.grants.get(&id.name).ok_or_else(|| {
            AppError::PermissionDenied(format!(
                "client `{}` has no grant on this appliance",
                id.name
            ))
        })?;
        match need {
            Need::AnyGrant => {}
            Need::Model(model) if grant.allows_model(model) => {}
            Need::Model(model) => {
                return Err(AppError::PermissionDenied(format!(
                    "client `{}` is not granted model `{}`",
                    id.name,
                    clip(model)
                )));
            }
            Need::Admin if grant.admin => {}
            Need::Admin => {
                return Err(AppError::PermissionDenied(format!(
                    "client `{}` is not an administrator",
                    id.name
                )));
            }
        }
        self.grants
            .admit(&grant)
            .map_err(|refusal| AppError::Exhausted(refusal.to_string()))
    }
}

impl AppState {
    /// Drops the statistics of model versions no longer loaded, before
    /// `/metrics` or the statistics extension reads them (as in Triton).
    pub fn forget_unloaded_model_stats(&self) {
        self.metrics
            .retain_models(|name, version| self.registry.readiness(name, Some(version)).is_some());
    }

    /// Audits a call the transport refused before any handler ran (a
    /// message over the size limit), under the RPC name of its gRPC path
    /// (`/inference.GRPCInferenceService/ModelInfer` → `ModelInfer`).
    pub fn record_refusal(&self, peer: Option<&Peer>, path: &str, outcome: &'static str) {
        let client = match peer.map(|p| p.0.as_ref()) {
            Some(Ok(id)) => id.name.clone(),
            _ => "-".into(),
        };
        let call = Call {
            state: self,
            client,
            rpc: Cow::Owned(clip(path.rsplit('/').next().unwrap_or(path))),
            model: String::new(),
            version: String::new(),
            bytes_in: 0,
            started: Instant::now(),
            unrecordable: false,
        };
        call.record(outcome, 0);
    }
}

impl Call<'_> {
    /// Audits and counts the call; turns the result into a response.
    pub fn finish<T: prost::Message>(
        self,
        result: Result<T, AppError>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(message) => {
                self.record("OK", message.encoded_len() as u64);
                Ok(Response::new(message))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Audits and counts a call that produced `bytes_out` bytes some other
    /// way (streams, metrics).
    pub fn succeed(self, bytes_out: u64) {
        self.record("OK", bytes_out);
    }

    /// Audits and counts a failed call; returns its status (internal
    /// failures are logged with an incident id there, see `to_status`).
    pub fn fail(self, error: AppError) -> Status {
        let status = to_status(&error);
        self.record(code_name(status.code()), 0);
        status
    }

    fn record(self, outcome: &'static str, bytes_out: u64) {
        let latency = self.started.elapsed();
        let latency_us = latency.as_micros() as u64;
        let log = match self.state.config.log.calls {
            _ if self.unrecordable => true,
            LogCalls::All => true,
            LogCalls::Failures => outcome != "OK",
            LogCalls::None => false,
        };
        if log {
            tracing::info!(
                client = %self.client,
                rpc = ?self.rpc,
                model = %self.model,
                version = %self.version,
                outcome,
                bytes_in = self.bytes_in,
                bytes_out,
                latency_us,
                "call"
            );
        }
        self.state
            .metrics
            .observe(&self.rpc, outcome, &self.model, latency);
        if self.unrecordable {
            return;
        }
        self.state.audit.record(Event {
            client: self.client,
            rpc: self.rpc.into_owned(),
            model: self.model,
            version: self.version,
            outcome: outcome.to_owned(),
            bytes_in: self.bytes_in,
            bytes_out,
            latency_us,
            detail: String::new(),
        });
    }

    /// Sets the request's size, for calls admitted before their body was
    /// read (the REST form).
    pub fn set_bytes_in(&mut self, bytes: u64) {
        self.bytes_in = bytes;
    }

    /// The caller's client name (`-` if it has none).
    pub fn client(&self) -> &str {
        &self.client
    }
}

/// Names from clients, shortened before they reach logs and the audit log.
pub fn clip(s: &str) -> String {
    clip_to(s, 128)
}

/// A reason for the audit log, shortened to a bound.
pub fn clip_detail(s: &str) -> String {
    clip_to(s, 512)
}

fn clip_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
