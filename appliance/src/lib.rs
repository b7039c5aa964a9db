//! The appliance daemon: the Open Inference Protocol over gRPC with mutual
//! TLS, per-client grants, rate limits, the audit log and metrics.
//!
//! `main` parses the configuration and builds the runtime; [`start`] opens
//! the keystore and loads everything (blocking, before any port is bound);
//! [`serve`] runs the listener until the shutdown future completes. This is
//! the only crate that knows tokio and tonic; the libraries below it are
//! synchronous and run on the blocking pool or the inference pool.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod config;
pub mod enroll;
pub mod error;
pub mod frames;
pub mod grants;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod oip;
pub mod push;
pub mod rest;
pub mod server;
pub mod state;
pub mod tls;
pub mod updates;

use std::future::Future;
use std::sync::Arc;

use inference::{Pool, Registry};
use keystore::{InsecureSoftwareBackend, KeyBackend, Store, TpmBackend};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::audit::{AuditLog, AuditWriter};
use crate::config::{Backend, Config};
use crate::error::AppError;
use crate::grants::Grants;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::tls::TlsState;

/// The configured key backend (checks that the TPM answers).
pub fn open_backend(config: &Config) -> Result<Box<dyn KeyBackend>, AppError> {
    Ok(match config.backend().map_err(AppError::InvalidArgument)? {
        Backend::Tpm { tcti, pcrs } => Box::new(TpmBackend::new(&tcti, pcrs)?),
        Backend::InsecureSoftware { root_key } => {
            Box::new(InsecureSoftwareBackend::open(&root_key)?)
        }
    })
}

/// Opens the keystore with the configured backend (blocking: the TPM
/// unseals here).
pub fn open_store(config: &Config) -> Result<Store, AppError> {
    Ok(Store::open_with_cache(
        &config.keystore.data_dir,
        open_backend(config)?,
        config.keystore.cache_mb << 20,
    )?)
}

/// Everything the server needs, loaded from the keystore (blocking).
pub fn start(config: Config, store: Store) -> Result<(Arc<AppState>, AuditWriter), AppError> {
    let identity = identity::load(&store)?;
    let crl = identity::load_crl(&store, &identity.client_ca)?;
    let tls = TlsState::new(
        identity,
        crl,
        config.min_tls().map_err(AppError::InvalidArgument)?,
    )?;
    let grants = Grants::load(store.clone(), config.limits.clone())?;
    let registry = Arc::new(Registry::new());
    let loaded = models::restore_all(&store, &registry, config.engine_limits())?;
    let pool = match config.inference.workers {
        0 => Pool::per_core(config.inference.queue),
        n => Pool::new(n, config.inference.queue),
    };
    tracing::info!(
        int8_kernels = inference::Int8Kernels::native().name(),
        vector_loops = inference::vector_level(),
        "int8 matrix products on this CPU: {}",
        inference::Int8Kernels::native()
    );
    let retention = config.audit_retention();
    if retention.archive.is_none() {
        tracing::warn!("audit.archive = false: records pruned by retention are dropped");
    }
    let (audit, writer) = AuditLog::start(&store, retention)?;
    let update_root = updates::root_version(&store)?;
    if config.models.allow_unsigned {
        tracing::warn!(
            "UNSIGNED MODELS ALLOWED ([models] allow_unsigned = true): raw uploads skip the vendor's \
             signature, freshness checks and the trial; never on a production appliance"
        );
    }
    if update_root.is_none() {
        tracing::warn!(
            "no update root installed: signed model updates are refused until \
             `appliance identity install --update-root FILE`"
        );
    }
    let state = AppState {
        store,
        registry,
        pool,
        grants,
        tls,
        audit,
        metrics: Metrics::default(),
        updates: updates::Updates::new(Box::new(
            images::tuf::verify::ToughVerifier::with_default_scratch(),
        )),
        config,
    };
    let signed = state.updates.restore(&state)?;
    tracing::info!(
        site = %state.tls.identity().site,
        appliance = %state.tls.identity().appliance_id,
        signed_models = signed,
        unsigned_models = loaded,
        update_root = update_root.unwrap_or(0),
        workers = state.pool.threads(),
        backend = state.store.backend_kind().name(),
        "appliance ready"
    );
    Ok((Arc::new(state), writer))
}

/// The gRPC services, with the configured message bounds.
pub fn routes(state: &Arc<AppState>) -> Routes {
    use wire::admin::admin_server::AdminServer;
    use wire::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
    let max = state.config.server.max_message_bytes;
    let inference = GrpcInferenceServiceServer::new(oip::InferenceService::new(state.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(admin::AdminService::new(state.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let health = tonic_health::pb::health_server::HealthServer::new(health::HealthService::new(
        state.clone(),
    ));
    Routes::new(inference)
        .add_service(admin)
        .add_service(health)
}

/// Serves on `listener` until `shutdown` completes, then drains requests in
/// flight and makes the audit log durable.
pub async fn run(state: Arc<AppState>, listener: TcpListener, shutdown: impl Future) {
    let routes = routes(&state);
    server::serve(state.clone(), routes, listener, shutdown).await;
    let flushing = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        flushing.audit.stop();
        flushing.audit.flush();
        if let Err(e) = flushing.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    })
    .await;
    tracing::info!("stopped");
}
