//! The Open Inference Protocol's REST/JSON form (KServe v2 HTTP, with
//! Triton's binary tensor extension), on the same port, connections and
//! mTLS as gRPC, over HTTP/1.1 or HTTP/2.
//!
//! Every route calls the gRPC service's own handlers (or, for inference,
//! the same admitted-call path), so grants, rate limits, audit records and
//! metrics are those of the gRPC call it mirrors. Errors are the protocol's
//! JSON form, `{"error": "…"}`, with the HTTP status of their gRPC code
//! ([`http_status`]).

pub mod json;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use tonic::Code;
use wire::inference::grpc_inference_service_server::GrpcInferenceService;
use wire::inference::{
    DataType, ModelConfigRequest, ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest,
    ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest, StatisticDuration, model_input,
};

use crate::error::AppError;
use crate::oip::InferenceService;
use crate::state::{AppState, Need, Peer};

/// The header that says where the JSON part of a body ends.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An HTTP answer.
pub type Reply = http::Response<tonic::body::Body>;

/// What a `/v2/...` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Server,
    Live,
    Ready,
    Model(String, String),
    ModelReady(String, String),
    Infer(String, String),
    Config(String, String),
    /// No model name: every model the caller may use.
    Stats(String, String),
}

impl Route {
    /// `/v2`, `/v2/health/{live,ready}`,
    /// `/v2/models/{m}[/versions/{v}][/ready|/infer]`.
    fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        Some(match parts.as_slice() {
            [] | [""] => Route::Server,
            ["health", "live"] => Route::Live,
            ["health", "ready"] => Route::Ready,
            // Triton's path; it shadows a model named `stats`, as there.
            ["models", "stats"] => Route::Stats(String::new(), String::new()),
            ["models", m, tail @ ..] if !m.is_empty() => {
                let (version, tail) = match tail {
                    ["versions", v, tail @ ..] if !v.is_empty() => ((*v).to_owned(), tail),
                    _ => (String::new(), tail),
                };
                let m = (*m).to_owned();
                match tail {
                    [] => Route::Model(m, version),
                    ["ready"] => Route::ModelReady(m, version),
                    ["infer"] => Route::Infer(m, version),
                    ["config"] => Route::Config(m, version),
                    ["stats"] => Route::Stats(m, version),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn method(&self) -> Method {
        match self {
            Route::Infer(..) => Method::POST,
            _ => Method::GET,
        }
    }
}

/// The HTTP status of a gRPC code (KServe's REST form names 400, 404 and
/// 503; the rest follow the usual gRPC-to-HTTP mapping).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::Cancelled => StatusCode::BAD_REQUEST,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap_or_default()
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding a JSON answer: {e}"),
        ),
    }
}

/// The protocol's error form.
fn error(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    reply(status, "application/json", body)
}

fn failed(status: &tonic::Status) -> Reply {
    error(http_status(status.code()), status.message())
}

/// 200 with no body for "yes", 400 for "no" (what Triton answers and
/// tritonclient reads).
fn yes_no(answer: bool) -> Reply {
    let status = if answer {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    reply(status, "application/json", Vec::new())
}

fn grpc_request<T>(message: T, peer: Option<&Peer>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer.clone());
    }
    request
}

/// Answers one `/v2/...` request.
pub async fn handle<B>(state: Arc<AppState>, request: http::Request<B>) -> Reply
where
    B: http_body::Body<Data = Bytes, Error = tonic::Status> + Send + Unpin + 'static,
{
    let peer = request.extensions().get::<Peer>().cloned();
    let Some(route) = Route::parse(request.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such endpoint; this server answers /v2, /v2/health/{live,ready}, \
             /v2/models/stats and /v2/models/{model}[/versions/{version}]\
             [/ready|/infer|/config|/stats]",
        );
    };
    if request.method() != route.method() {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("use {} for this endpoint", route.method()),
        );
        if let Ok(allow) = http::HeaderValue::from_str(route.method().as_str()) {
            r.headers_mut().insert(http::header::ALLOW, allow);
        }
        return r;
    }
    let service = InferenceService::new(state.clone());
    let peer = peer.as_ref();
    match route {
        Route::Server => match service
            .server_metadata(grpc_request(ServerMetadataRequest {}, peer))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                json(&serde_json::json!({
                    "name": r.name,
                    "version": r.version,
                    "extensions": r.extensions,
                }))
            }
            Err(status) => failed(&status),
        },
        Route::Live => match service
            .server_live(grpc_request(ServerLiveRequest {}, peer))
            .await
        {
            Ok(r) => yes_no(r.into_inner().live),
            Err(status) => failed(&status),
        },
        Route::Ready => match service
            .server_ready(grpc_request(ServerReadyRequest {}, peer))
            .await
        {
            Ok(r) => yes_no(r.into_inner().ready),
            Err(status) => failed(&status),
        },
        Route::Model(name, version) => match service
            .model_metadata(grpc_request(ModelMetadataRequest { name, version }, peer))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let tensors =
                    |list: &[wire::inference::model_metadata_response::TensorMetadata]| {
                        list.iter()
                            .map(|t| {
                                serde_json::json!({
                                    "name": t.name, "datatype": t.datatype, "shape": t.shape,
                                })
                            })
                            .collect::<Vec<_>>()
                    };
                json(&serde_json::json!({
                    "name": r.name,
                    "versions": r.versions,
                    "platform": r.platform,
                    "inputs": tensors(&r.inputs),
                    "outputs": tensors(&r.outputs),
                }))
            }
            Err(status) => failed(&status),
        },
        Route::ModelReady(name, version) => match service
            .model_ready(grpc_request(ModelReadyRequest { name, version }, peer))
            .await
        {
            Ok(r) => yes_no(r.into_inner().ready),
            Err(status) => failed(&status),
        },
        Route::Infer(name, version) => infer(&state, &service, peer, request, name, version).await,
        Route::Config(name, version) => match service
            .model_config(grpc_request(ModelConfigRequest { name, version }, peer))
            .await
        {
            Ok(r) => json(&config_json(r.into_inner().config.unwrap_or_default())),
            Err(status) => failed(&status),
        },
        Route::Stats(name, version) => match service
            .model_statistics(grpc_request(ModelStatisticsRequest { name, version }, peer))
            .await
        {
            Ok(r) => json(&stats_json(&r.into_inner())),
            Err(status) => failed(&status),
        },
    }
}

/// A model configuration as Triton's REST form writes it: field names as
/// in the proto, enums by name, 64-bit integers as JSON numbers (and the
/// configuration itself, not wrapped in `config`).
fn config_json(c: wire::inference::ModelConfig) -> serde_json::Value {
    let type_name = |t: i32| {
        DataType::try_from(t)
            .unwrap_or(DataType::TypeInvalid)
            .as_str_name()
    };
    serde_json::json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "runtime": c.runtime,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| serde_json::json!({
            "name": i.name,
            "data_type": type_name(i.data_type),
            "format": model_input::Format::try_from(i.format)
                .unwrap_or(model_input::Format::None)
                .as_str_name(),
            "dims": i.dims,
            "is_shape_tensor": i.is_shape_tensor,
            "allow_ragged_batch": i.allow_ragged_batch,
            "optional": i.optional,
            "is_non_linear_format_io": i.is_non_linear_format_io,
        })).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| serde_json::json!({
            "name": o.name,
            "data_type": type_name(o.data_type),
            "dims": o.dims,
            "label_filename": o.label_filename,
            "is_shape_tensor": o.is_shape_tensor,
            "is_non_linear_format_io": o.is_non_linear_format_io,
        })).collect::<Vec<_>>(),
    })
}

/// Statistics as Triton's REST form writes them (every count and time a
/// JSON number; tools read them with no type checks).
fn stats_json(r: &wire::inference::ModelStatisticsResponse) -> serde_json::Value {
    let d = |t: Option<StatisticDuration>| {
        let t = t.unwrap_or_default();
        serde_json::json!({"count": t.count, "ns": t.ns})
    };
    let models = r
        .model_stats
        .iter()
        .map(|m| {
            let s = m.inference_stats.unwrap_or_default();
            serde_json::json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": d(s.success),
                    "fail": d(s.fail),
                    "queue": d(s.queue),
                    "compute_input": d(s.compute_input),
                    "compute_infer": d(s.compute_infer),
                    "compute_output": d(s.compute_output),
                    "cache_hit": d(s.cache_hit),
                    "cache_miss": d(s.cache_miss),
                },
                "response_stats": {},
                "batch_stats": m.batch_stats.iter().map(|b| serde_json::json!({
                    "batch_size": b.batch_size,
                    "compute_input": d(b.compute_input),
                    "compute_infer": d(b.compute_infer),
                    "compute_output": d(b.compute_output),
                })).collect::<Vec<_>>(),
                "memory_usage": [],
            })
        })
        .collect::<Vec<_>>();
    serde_json::json!({ "model_stats": models })
}

/// Why a body was not read.
enum Unread {
    /// Over the limit.
    TooLarge,
    /// The body failed (budget spent, client gone).
    Body(tonic::Status),
}

/// How far past the limit a refused body is still read and dropped, so
/// that the client, still sending, gets to read the 413 (HTTP/1.1 cannot
/// answer mid-upload without closing, and curl reports a reset stream as
/// a failure). Past this the answer goes out at once.
const DRAIN_PAST_LIMIT: u64 = 4 << 20;

/// Reads a body of at most `limit` bytes; a larger one is dropped as it
/// arrives (up to [`DRAIN_PAST_LIMIT`] more), never held.
async fn read_body<B>(mut body: B, limit: usize, declared: Option<u64>) -> Result<Bytes, Unread>
where
    B: http_body::Body<Data = Bytes, Error = tonic::Status> + Unpin,
{
    let limit = limit as u64;
    if declared.is_some_and(|n| n > limit + DRAIN_PAST_LIMIT) {
        return Err(Unread::TooLarge);
    }
    let mut held = bytes::BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Unread::Body)?.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen > limit {
            held = bytes::BytesMut::new();
            if seen > limit + DRAIN_PAST_LIMIT {
                break;
            }
        } else {
            held.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(Unread::TooLarge);
    }
    Ok(held.freeze())
}

/// `POST /v2/models/{m}[/versions/{v}]/infer`: admitted first (so neither
/// a client without a grant nor one over its rate makes the server read a
/// body), then read within `server.max_message_bytes`, parsed, and run as
/// the gRPC call is.
async fn infer<B>(
    state: &AppState,
    service: &InferenceService,
    peer: Option<&Peer>,
    request: http::Request<B>,
    name: String,
    version: String,
) -> Reply
where
    B: http_body::Body<Data = Bytes, Error = tonic::Status> + Send + Unpin + 'static,
{
    let mut call = match state.begin_peer(peer, "ModelInfer", Need::Model(&name), &version, 0) {
        Ok(call) => call,
        Err(status) => return failed(&status),
    };
    let (parts, body) = request.into_parts();
    let limit = state.config.server.max_message_bytes;
    let too_large = || {
        format!(
            "request larger than the server's limit of {limit} bytes (server.max_message_bytes)"
        )
    };
    if let Some(encoding) = parts.headers.get(http::header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        let message = format!(
            "Content-Encoding {} is not supported; send the request uncompressed",
            String::from_utf8_lossy(encoding.as_bytes())
        );
        let status = call.fail(AppError::InvalidArgument(message));
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, status.message());
    }
    let header_len = match parts.headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                let status = call.fail(AppError::InvalidArgument(
                    "Inference-Header-Content-Length is not a byte count".into(),
                ));
                return failed(&status);
            }
        },
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(body, limit, declared).await {
        Ok(body) => body,
        Err(Unread::TooLarge) => {
            let status = call.fail(AppError::Exhausted(too_large()));
            return error(StatusCode::PAYLOAD_TOO_LARGE, status.message());
        }
        // The server's budget of request bytes is spent: the listener
        // audits that refusal (as it does for gRPC).
        Err(Unread::Body(status)) if status.code() == Code::ResourceExhausted => {
            drop(call);
            return failed(&status);
        }
        // The client went away mid-body, or sent a broken one.
        Err(Unread::Body(status)) => {
            return failed(&call.fail(AppError::InvalidArgument(format!(
                "reading the request body: {}",
                status.message()
            ))));
        }
    };
    call.set_bytes_in(body.len() as u64);
    let parsed = match json::parse_request(&body, header_len, &name, &version) {
        Ok(parsed) => parsed,
        Err(e) => return failed(&call.fail(e)),
    };
    let response = match service.infer_for(call, parsed.request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(&status),
    };
    match json::encode_response(&response, &parsed.binary) {
        Ok(encoded) => {
            let content_type = if encoded.header_len.is_some() {
                "application/octet-stream"
            } else {
                "application/json"
            };
            let mut r = reply(StatusCode::OK, content_type, encoded.body);
            if let Some(n) = encoded.header_len {
                r.headers_mut()
                    .insert(HEADER_LENGTH, http::HeaderValue::from(n));
            }
            r
        }
        // Already audited as served; the encoding is the client's choice.
        Err(e) => failed(&crate::error::to_status(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = |s: &str| s.to_owned();
        for (path, route) in [
            ("/v2", Some(Route::Server)),
            ("/v2/", Some(Route::Server)),
            ("/v2/health/live", Some(Route::Live)),
            ("/v2/health/ready", Some(Route::Ready)),
            ("/v2/models/digits", Some(Route::Model(m("digits"), m("")))),
            (
                "/v2/models/digits/versions/3",
                Some(Route::Model(m("digits"), m("3"))),
            ),
            (
                "/v2/models/digits/ready",
                Some(Route::ModelReady(m("digits"), m(""))),
            ),
            (
                "/v2/models/digits/versions/2/infer",
                Some(Route::Infer(m("digits"), m("2"))),
            ),
            (
                "/v2/models/digits/infer",
                Some(Route::Infer(m("digits"), m(""))),
            ),
            (
                "/v2/models/digits/versions/1/config",
                Some(Route::Config(m("digits"), m("1"))),
            ),
            (
                "/v2/models/digits/stats",
                Some(Route::Stats(m("digits"), m(""))),
            ),
            ("/v2/models/stats", Some(Route::Stats(m(""), m("")))),
            ("/v2/models", None),
            ("/v2/models/stats/x", None),
            ("/v2/models/", None),
            ("/v2/models/digits/versions/", None),
            ("/v2/models/digits/explain", None),
            ("/v2/health", None),
            ("/v2x", None),
            ("/v1/models/digits", None),
        ] {
            assert_eq!(Route::parse(path), route, "{path}");
        }
    }

    fn body(
        chunks: Vec<usize>,
    ) -> impl http_body::Body<Data = Bytes, Error = tonic::Status> + Unpin {
        let frames = chunks
            .into_iter()
            .map(|n| Ok::<_, tonic::Status>(http_body::Frame::data(Bytes::from(vec![b'x'; n]))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[test]
    fn bodies_over_the_limit_are_dropped_not_held() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let ok = read_body(body(vec![10, 20, 34]), 64, None).await;
            assert_eq!(ok.ok().map(|b| b.len()), Some(64));
            for (chunks, declared) in [
                (vec![64, 1], None),
                (vec![40, 40], Some(80)),
                // Declared far past the limit: refused before reading.
                (vec![], Some(64 + DRAIN_PAST_LIMIT + 1)),
                // Sent far past the limit: reading stops.
                (vec![1 << 20; 8], None),
            ] {
                let r = read_body(body(chunks.clone()), 64, declared).await;
                assert!(matches!(r, Err(Unread::TooLarge)), "{chunks:?}");
            }
        });
    }

    #[test]
    fn every_code_has_an_error_status() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Unavailable), 503);
        assert_eq!(http_status(Code::Internal), 500);
    }
}
