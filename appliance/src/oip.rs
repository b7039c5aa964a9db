//! The Open Inference Protocol v2 service. Each handler authorizes first,
//! converts the wire message into domain types at once (bad input is
//! INVALID_ARGUMENT), and audits the outcome.

use std::sync::Arc;

use bytes::Bytes;
use inference::{InputTensor, Model, OutputTensor, Readiness};
use tonic::{Request, Response, Status};
use wire::inference::grpc_inference_service_server::GrpcInferenceService;
use wire::inference::model_infer_request::InferInputTensor;
use wire::inference::model_infer_response::InferOutputTensor;
use wire::inference::model_metadata_response::TensorMetadata;
use wire::inference::*;

use crate::error::AppError;
use crate::metrics::{ModelStats, Timed};
use crate::state::{AppState, Call, Need, clip};

/// The `inference.GRPCInferenceService` implementation.
pub struct InferenceService {
    state: Arc<AppState>,
}

impl InferenceService {
    /// A service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        InferenceService { state }
    }
}

/// A version string from the wire: empty for "the newest ready".
fn parse_version(version: &str) -> Result<Option<u64>, AppError> {
    if version.is_empty() {
        return Ok(None);
    }
    version.parse().map(Some).map_err(|_| {
        AppError::InvalidArgument(format!(
            "model_version: `{}` is not a version number",
            clip(version)
        ))
    })
}

/// One request input, owned, with its elements as raw little-endian bytes.
struct OwnedInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Bytes,
}

/// A `ModelInferRequest` converted to domain terms.
struct InferCall {
    inputs: Vec<OwnedInput>,
    outputs: Vec<String>,
    /// Requested outputs with the classification extension: name → k.
    classify: Vec<(String, usize)>,
}

/// Largest `classification` count accepted (Triton's clients ask for a few).
const MAX_CLASS_COUNT: i64 = 1000;

/// The classification extension's `class_count` of a requested output.
fn class_count(
    output: &model_infer_request::InferRequestedOutputTensor,
) -> Result<Option<usize>, AppError> {
    use infer_parameter::ParameterChoice;
    let Some(parameter) = output.parameters.get("classification") else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(k)) if (1..=MAX_CLASS_COUNT).contains(&k) => {
            Ok(Some(usize::try_from(k).unwrap_or(1)))
        }
        _ => Err(AppError::InvalidArgument(format!(
            "output `{}`: parameter classification must be an int64 from 1 to {MAX_CLASS_COUNT}",
            clip(&output.name)
        ))),
    }
}

impl InferCall {
    fn parse(request: ModelInferRequest) -> Result<InferCall, AppError> {
        let raw = request.raw_input_contents;
        if !raw.is_empty() && raw.len() != request.inputs.len() {
            return Err(AppError::InvalidArgument(format!(
                "raw_input_contents has {} entries for {} inputs",
                raw.len(),
                request.inputs.len()
            )));
        }
        let mut raw = raw.into_iter();
        let inputs = request
            .inputs
            .into_iter()
            .map(|input| {
                let data = match (raw.next(), &input.contents) {
                    (Some(_), Some(_)) => {
                        return Err(AppError::InvalidArgument(format!(
                            "input `{}`: send either raw_input_contents or contents, not both",
                            clip(&input.name)
                        )));
                    }
                    (Some(bytes), None) => bytes,
                    (None, Some(contents)) => typed_contents(&input, contents)?,
                    (None, None) => {
                        return Err(AppError::InvalidArgument(format!(
                            "input `{}` has no data",
                            clip(&input.name)
                        )));
                    }
                };
                Ok(OwnedInput {
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                    data,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut classify = Vec::new();
        for output in &request.outputs {
            if let Some(k) = class_count(output)? {
                classify.push((output.name.clone(), k));
            }
        }
        Ok(InferCall {
            inputs,
            outputs: request.outputs.into_iter().map(|o| o.name).collect(),
            classify,
        })
    }
}

/// The protocol's typed `contents` as raw little-endian bytes.
fn typed_contents(input: &InferInputTensor, c: &InferTensorContents) -> Result<Bytes, AppError> {
    let out_of_range = || {
        AppError::InvalidArgument(format!(
            "input `{}`: a value is out of range for {}",
            clip(&input.name),
            clip(&input.datatype)
        ))
    };
    let mut out = Vec::new();
    match input.datatype.as_str() {
        "BOOL" => out.extend(c.bool_contents.iter().map(|b| u8::from(*b))),
        "INT8" => {
            for v in &c.int_contents {
                out.extend(i8::try_from(*v).map_err(|_| out_of_range())?.to_le_bytes());
            }
        }
        "INT16" => {
            for v in &c.int_contents {
                out.extend(i16::try_from(*v).map_err(|_| out_of_range())?.to_le_bytes());
            }
        }
        "INT32" => out.extend(c.int_contents.iter().flat_map(|v| v.to_le_bytes())),
        "INT64" => out.extend(c.int64_contents.iter().flat_map(|v| v.to_le_bytes())),
        "UINT8" => {
            for v in &c.uint_contents {
                out.extend(u8::try_from(*v).map_err(|_| out_of_range())?.to_le_bytes());
            }
        }
        "UINT16" => {
            for v in &c.uint_contents {
                out.extend(u16::try_from(*v).map_err(|_| out_of_range())?.to_le_bytes());
            }
        }
        "UINT32" => out.extend(c.uint_contents.iter().flat_map(|v| v.to_le_bytes())),
        "UINT64" => out.extend(c.uint64_contents.iter().flat_map(|v| v.to_le_bytes())),
        "FP32" => out.extend(c.fp32_contents.iter().flat_map(|v| v.to_le_bytes())),
        "FP64" => out.extend(c.fp64_contents.iter().flat_map(|v| v.to_le_bytes())),
        "BYTES" => {
            for v in &c.bytes_contents {
                let len = u32::try_from(v.len()).map_err(|_| out_of_range())?;
                out.extend(len.to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        // The engine names unknown datatypes with the input; pass nothing.
        _ => {}
    }
    Ok(Bytes::from(out))
}

fn response_of(
    model: &Model,
    id: String,
    outputs: Vec<OutputTensor>,
    classify: &[(String, usize)],
) -> Result<ModelInferResponse, AppError> {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw_output_contents = Vec::with_capacity(outputs.len());
    for o in &outputs {
        let (datatype, shape, raw) = match classify.iter().find(|(n, _)| n == o.name()) {
            Some((_, k)) => {
                let (shape, raw) = classified(o, *k)?;
                ("BYTES".to_owned(), shape, raw)
            }
            None => (
                o.datatype().as_str().to_owned(),
                o.shape(),
                Bytes::copy_from_slice(o.data()),
            ),
        };
        tensors.push(InferOutputTensor {
            name: o.name().to_owned(),
            datatype,
            shape,
            parameters: Default::default(),
            contents: None,
        });
        raw_output_contents.push(raw);
    }
    Ok(ModelInferResponse {
        model_name: model.name().to_owned(),
        model_version: model.version().to_string(),
        id,
        parameters: Default::default(),
        outputs: tensors,
        raw_output_contents,
    })
}

/// The classification extension: for each row of an FP32 output (the
/// first dimension is the batch when there are two or more), the `k`
/// highest scores as `"score:index"` BYTES elements, highest first (ties:
/// the lower index first), formatted as Triton does (six decimals). The
/// model images carry no labels, so there is no `:label` part.
fn classified(output: &OutputTensor, k: usize) -> Result<(Vec<i64>, Bytes), AppError> {
    let scores = output.as_f32().ok_or_else(|| {
        AppError::InvalidArgument(format!(
            "output `{}`: classification needs an FP32 output, not {}",
            clip(output.name()),
            output.datatype().as_str()
        ))
    })?;
    let shape = output.shape();
    let rows = if shape.len() >= 2 {
        usize::try_from(shape[0]).unwrap_or(0)
    } else {
        1
    };
    let width = scores.len().checked_div(rows).unwrap_or(0);
    let k = k.min(width);
    let mut raw = Vec::new();
    let mut order: Vec<usize> = Vec::with_capacity(width);
    for row in scores.chunks(width.max(1)).take(rows) {
        order.clear();
        order.extend(0..row.len());
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for &index in &order[..k] {
            let text = format!("{:.6}:{index}", row[index]);
            raw.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_le_bytes());
            raw.extend_from_slice(text.as_bytes());
        }
    }
    let k = i64::try_from(k).unwrap_or(0);
    let shape = if shape.len() >= 2 {
        vec![shape[0], k]
    } else {
        vec![k]
    };
    Ok((shape, Bytes::from(raw)))
}

/// Triton's data type enum for one of the protocol's datatypes.
fn data_type(datatype: inference::DataType) -> i32 {
    use inference::DataType as D;
    let t = match datatype {
        D::Bool => DataType::TypeBool,
        D::U8 => DataType::TypeUint8,
        D::U16 => DataType::TypeUint16,
        D::U32 => DataType::TypeUint32,
        D::U64 => DataType::TypeUint64,
        D::I8 => DataType::TypeInt8,
        D::I16 => DataType::TypeInt16,
        D::I32 => DataType::TypeInt32,
        D::I64 => DataType::TypeInt64,
        D::F16 => DataType::TypeFp16,
        D::F32 => DataType::TypeFp32,
        D::F64 => DataType::TypeFp64,
        D::Bytes => DataType::TypeString,
        _ => DataType::TypeInvalid,
    };
    t as i32
}

/// A model's configuration as Triton describes one. A model whose inputs
/// and outputs all lead with the same free dimension batches: Triton's
/// convention is then `max_batch_size` > 0 and `dims` without that
/// dimension. Its `max_batch_size` is the largest batch the engine's
/// limits admit (`max_text_items` for text models; else
/// `max_input_elements` over one row of the largest input).
pub fn model_config(model: &Model, limits: &inference::Limits) -> ModelConfig {
    let first = |spec: &inference::TensorSpec| match spec.shape.first() {
        Some(inference::Dim::Dynamic(symbol)) => Some(symbol.clone()),
        _ => None,
    };
    let leading = model.inputs().first().and_then(first);
    let batches = leading.is_some()
        && model
            .inputs()
            .iter()
            .chain(model.outputs())
            .all(|s| first(s).is_some());
    let dims = |spec: &inference::TensorSpec| {
        let shape = spec.shape_i64();
        if batches { shape[1..].to_vec() } else { shape }
    };
    let max_batch_size = if !batches {
        0
    } else if model.is_text() {
        limits.max_text_items
    } else {
        let row = model
            .inputs()
            .iter()
            .map(|s| {
                s.shape[1..]
                    .iter()
                    .map(|d| match d {
                        inference::Dim::Fixed(n) => (*n).max(1),
                        inference::Dim::Dynamic(_) => 1,
                    })
                    .product::<u64>()
            })
            .max()
            .unwrap_or(1);
        limits.max_input_elements / row.max(1)
    };
    ModelConfig {
        name: model.name().to_owned(),
        platform: "tract_onnx".into(),
        backend: "tract".into(),
        runtime: String::new(),
        max_batch_size: i32::try_from(max_batch_size).unwrap_or(i32::MAX),
        input: model
            .inputs()
            .iter()
            .map(|s| ModelInput {
                name: s.name.clone(),
                data_type: data_type(s.datatype),
                dims: dims(s),
                ..Default::default()
            })
            .collect(),
        output: model
            .outputs()
            .iter()
            .map(|s| ModelOutput {
                name: s.name.clone(),
                data_type: data_type(s.datatype),
                dims: dims(s),
                ..Default::default()
            })
            .collect(),
    }
}

/// One model version's statistics in Triton's terms. The appliance does
/// not time reading inputs and writing outputs apart from running the
/// model: `compute_infer` holds all three, and `compute_input` and
/// `compute_output` carry the same count with no time. Nothing is cached.
pub fn model_statistics(name: String, version: u64, s: &ModelStats) -> ModelStatistics {
    let d = |t: Timed| {
        Some(StatisticDuration {
            count: t.count,
            ns: t.ns,
        })
    };
    let counted = |t: Timed| {
        d(Timed {
            count: t.count,
            ns: 0,
        })
    };
    ModelStatistics {
        name,
        version: version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(InferStatistics {
            success: d(s.success),
            fail: d(s.fail),
            queue: d(s.queue),
            compute_input: counted(s.compute),
            compute_infer: d(s.compute),
            compute_output: counted(s.compute),
            cache_hit: d(Timed::default()),
            cache_miss: d(Timed::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(&batch_size, &t)| InferBatchStatistics {
                batch_size,
                compute_input: counted(t),
                compute_infer: d(t),
                compute_output: counted(t),
            })
            .collect(),
        memory_usage: Vec::new(),
        response_stats: Default::default(),
    }
}

/// Where an inference's time went: waiting for a worker, then running.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    queue: std::time::Duration,
    compute: std::time::Duration,
}

impl InferenceService {
    async fn infer(
        &self,
        model: Arc<Model>,
        call: InferCall,
        timing: &mut Timing,
    ) -> Result<Vec<OutputTensor>, AppError> {
        // A request expected to take less than a thread hand-off costs runs
        // right here; the pool's two wake-ups would triple its latency.
        if call_is_cheap(&model, &call) {
            let started = std::time::Instant::now();
            let outputs = call.run(&model);
            timing.compute = started.elapsed();
            return outputs.map_err(AppError::from);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = std::time::Instant::now();
        self.state.pool.try_submit(move || {
            let started = std::time::Instant::now();
            let outputs = call.run(&model);
            let _ = tx.send((outputs, started - submitted, started.elapsed()));
        })?;
        let (outputs, queue, compute) = rx
            .await
            .map_err(|_| AppError::Internal("the inference worker failed".into()))?;
        *timing = Timing { queue, compute };
        outputs.map_err(AppError::from)
    }
}

/// The batch size Triton counts for a request: the first input's first
/// dimension (1 for a scalar input or none).
fn batch_of(call: &InferCall) -> u64 {
    call.inputs
        .first()
        .and_then(|i| i.shape.first())
        .map_or(1, |&n| u64::try_from(n).unwrap_or(1))
}

/// Requests whose expected cost is below this run on the async thread that
/// received them. Blocking an async thread this briefly is harmless; a
/// deployment with slow cores may lower it.
const INLINE_BELOW: std::time::Duration = std::time::Duration::from_micros(100);

fn call_is_cheap(model: &Model, call: &InferCall) -> bool {
    model
        .estimated_cost(&call.tensors())
        .is_some_and(|cost| cost < INLINE_BELOW)
}

impl InferCall {
    fn tensors(&self) -> Vec<InputTensor<'_>> {
        self.inputs
            .iter()
            .map(|i| InputTensor {
                name: &i.name,
                datatype: &i.datatype,
                shape: &i.shape,
                data: &i.data,
            })
            .collect()
    }

    fn run(&self, model: &Model) -> inference::Result<Vec<OutputTensor>> {
        let wanted: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
        model.infer(&self.tensors(), &wanted)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ServerLive", Need::AnyGrant, "", 0)?;
        call.finish(Ok(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ServerReady", Need::AnyGrant, "", 0)?;
        let ready = self.state.registry.all_ready();
        call.finish(Ok(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let m = request.get_ref();
        let (name, version) = (m.name.clone(), m.version.clone());
        let call = self
            .state
            .begin(&request, "ModelReady", Need::Model(&name), &version, 0)?;
        let result = parse_version(&version).map(|v| ModelReadyResponse {
            ready: self.state.registry.readiness(&name, v) == Some(Readiness::Ready),
        });
        call.finish(result)
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let call = self
            .state
            .begin(&request, "ServerMetadata", Need::AnyGrant, "", 0)?;
        call.finish(Ok(ServerMetadataResponse {
            name: "appliance".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Clients and auditors can see a development posture: models
            // that skip signatures, and a keystore without the TPM.
            extensions: [
                // Triton's extensions this server implements (perf_analyzer
                // asks for statistics only when this list names them).
                (true, "classification"),
                (true, "model_configuration"),
                (true, "statistics"),
                (true, "binary_tensor_data"),
                (
                    self.state.config.models.allow_unsigned,
                    "unsigned_models_allowed",
                ),
                (
                    self.state.store.backend_kind() != keystore::BackendKind::Tpm,
                    "insecure_software_keystore",
                ),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let m = request.get_ref();
        let (name, version) = (m.name.clone(), m.version.clone());
        let call = self
            .state
            .begin(&request, "ModelMetadata", Need::Model(&name), &version, 0)?;
        let result = parse_version(&version).and_then(|v| {
            let model = self.state.registry.get(&name, v)?;
            let versions = self
                .state
                .registry
                .list()
                .into_iter()
                .filter(|(n, _, r)| *n == name && *r == Readiness::Ready)
                .map(|(_, v, _)| v.to_string())
                .collect();
            let meta = |specs: &[inference::TensorSpec]| {
                specs
                    .iter()
                    .map(|s| TensorMetadata {
                        name: s.name.clone(),
                        datatype: s.datatype.as_str().to_owned(),
                        shape: s.shape_i64(),
                    })
                    .collect()
            };
            Ok(ModelMetadataResponse {
                name: name.clone(),
                versions,
                platform: "tract_onnx".into(),
                inputs: meta(model.inputs()),
                outputs: meta(model.outputs()),
            })
        });
        call.finish(result)
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let m = request.get_ref();
        let (name, version) = (m.name.clone(), m.version.clone());
        let call = self
            .state
            .begin(&request, "ModelConfig", Need::Model(&name), &version, 0)?;
        let result = parse_version(&version).and_then(|v| {
            let model = self.state.registry.get(&name, v)?;
            Ok(ModelConfigResponse {
                config: Some(model_config(&model, &self.state.config.engine_limits())),
            })
        });
        call.finish(result)
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let m = request.get_ref();
        let (name, version) = (m.name.clone(), m.version.clone());
        // No name: every model the caller's grant covers.
        let need = if name.is_empty() {
            Need::AnyGrant
        } else {
            Need::Model(&name)
        };
        let call = self
            .state
            .begin(&request, "ModelStatistics", need, &version, 0)?;
        let result = parse_version(&version).and_then(|v| {
            if !name.is_empty() {
                // An unknown model or version is an error, as in Triton.
                self.state.registry.get(&name, v)?;
            }
            let grant = self.state.grants.get(call.client());
            let loaded: Vec<(String, u64)> = self
                .state
                .registry
                .list()
                .into_iter()
                .filter(|(n, ver, r)| {
                    *r == Readiness::Ready
                        && (if name.is_empty() {
                            grant.as_ref().is_some_and(|g| g.allows_model(n))
                        } else {
                            *n == name
                        })
                        && v.is_none_or(|v| v == *ver)
                })
                .map(|(n, ver, _)| (n, ver))
                .collect();
            self.state.forget_unloaded_model_stats();
            let stats = self.state.metrics.model_stats();
            let model_stats = loaded
                .into_iter()
                .map(|(n, ver)| {
                    let s = stats.get(&(n.clone(), ver)).cloned().unwrap_or_default();
                    model_statistics(n, ver, &s)
                })
                .collect();
            Ok(ModelStatisticsResponse { model_stats })
        });
        call.finish(result)
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let bytes_in = prost::Message::encoded_len(request.get_ref()) as u64;
        let m = request.get_ref();
        let (name, version) = (m.model_name.clone(), m.model_version.clone());
        let call = self.state.begin(
            &request,
            "ModelInfer",
            Need::Model(&name),
            &version,
            bytes_in,
        )?;
        self.infer_for(call, request.into_inner()).await
    }
}

impl InferenceService {
    /// Runs an inference `call` that has been admitted (the gRPC handler
    /// and the REST form both end here): resolve, convert, run, count,
    /// audit.
    pub async fn infer_for(
        &self,
        call: Call<'_>,
        request: ModelInferRequest,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (name, version) = (request.model_name.clone(), request.model_version.clone());
        tracing::debug!(model = %clip(&name), "inference started");
        let id = request.id.clone();
        let started = std::time::Instant::now();
        // The model version, once resolved, and the batch, for Triton's
        // per-model counters.
        let mut resolved: Option<(Arc<Model>, u64)> = None;
        let mut timing = Timing::default();
        let result = async {
            let version = parse_version(&version)?;
            let model = self.state.registry.get(&name, version)?;
            resolved = Some((model.clone(), 1));
            let mut parsed = InferCall::parse(request)?;
            resolved = Some((model.clone(), batch_of(&parsed)));
            let classify = std::mem::take(&mut parsed.classify);
            let outputs = self.infer(model.clone(), parsed, &mut timing).await?;
            response_of(&model, id, outputs, &classify)
        }
        .await;
        if let Some((model, batch)) = resolved {
            self.state
                .metrics
                .observe_inference(&crate::metrics::Inference {
                    model: model.name(),
                    version: model.version(),
                    ok: result.is_ok(),
                    batch,
                    request: started.elapsed(),
                    queue: timing.queue,
                    compute: timing.compute,
                });
        }
        call.finish(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::inference::infer_parameter::ParameterChoice;

    fn requested(
        parameter: Option<ParameterChoice>,
    ) -> model_infer_request::InferRequestedOutputTensor {
        let mut output = model_infer_request::InferRequestedOutputTensor {
            name: "logits".into(),
            ..Default::default()
        };
        if let Some(choice) = parameter {
            output.parameters.insert(
                "classification".into(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            );
        }
        output
    }

    #[test]
    fn class_counts_are_bounded_int64s() {
        assert_eq!(class_count(&requested(None)).unwrap(), None);
        assert_eq!(
            class_count(&requested(Some(ParameterChoice::Int64Param(3)))).unwrap(),
            Some(3)
        );
        for bad in [
            ParameterChoice::Int64Param(0),
            ParameterChoice::Int64Param(-1),
            ParameterChoice::Int64Param(MAX_CLASS_COUNT + 1),
            ParameterChoice::StringParam("3".into()),
            ParameterChoice::BoolParam(true),
        ] {
            let e = class_count(&requested(Some(bad))).unwrap_err();
            assert!(matches!(e, AppError::InvalidArgument(_)), "{e:?}");
        }
    }
}
