//! A loaded model: ONNX bytes checked, parsed, optimised once into a tract
//! plan that serves every batch size, plus its public metadata.
//!
//! Loading is staged like tract's own pipeline: decode the protobuf → refuse
//! what we will not run (unknown operators, custom domains, external data) →
//! tract inference model → typed → optimised → runnable plan.

use std::collections::HashSet;
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::cpu::Int8Kernels;
use crate::datatype::DataType;
use crate::error::{Error, Result, execution};
use crate::tensor::{InputTensor, OutputTensor, to_engine_tensor, to_output_tensor, wipe_values};
use crate::text::TextFrontEnd;

/// One dimension of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// Always this size.
    Fixed(u64),
    /// Any size; inputs sharing a name must agree (e.g. `batch`).
    Dynamic(String),
}

impl Dim {
    /// The protocol's spelling: the size, or -1 for dynamic.
    pub fn as_i64(&self) -> i64 {
        match self {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Dim::Dynamic(_) => -1,
        }
    }
}

/// Name, datatype and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions.
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// The shape as the protocol prints it, e.g. `[-1, 64]`.
    pub fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(Dim::as_i64).collect()
    }

    pub(crate) fn shape_string(&self) -> String {
        format!("{:?}", self.shape_i64())
    }
}

/// Bounds applied to every request before any work is done, and one choice
/// of how models load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest element count of one input's declared shape. Checked before
    /// anything is allocated, so a declared shape of 2^40 elements costs
    /// nothing.
    pub max_input_elements: u64,
    /// Most strings in one text request (each becomes a row of the batch).
    pub max_text_items: u64,
    /// On a CPU whose int8 kernels are tract's slow path, run integer
    /// matrix products as exact float ones (bit-identical outputs, tens of
    /// times faster, four times the weight memory). No effect where the
    /// int8 kernels are fast.
    pub int8_as_float: bool,
}

impl Default for Limits {
    /// 16 M elements (64 MiB of FP32) per input, 256 strings per request:
    /// generous for the reference models; deployments tune both.
    fn default() -> Self {
        Limits {
            max_input_elements: 16 << 20,
            max_text_items: 256,
            int8_as_float: true,
        }
    }
}

/// What a model is made of: the ONNX bytes and, for text models, the
/// tokenizer definition (`tokenizer.json`).
#[derive(Debug, Clone, Copy)]
pub struct ModelSource<'a> {
    /// The ONNX model, decrypted, in memory.
    pub onnx: &'a [u8],
    /// A Hugging Face `tokenizer.json`; makes the model accept text.
    pub tokenizer_json: Option<&'a [u8]>,
}

/// A model ready to serve. Immutable and shareable: each request runs on
/// its own state, so any number may run at once.
pub struct Model {
    name: String,
    version: u64,
    plan: Arc<TypedSimplePlan>,
    /// What clients send: the graph inputs, or `text` for text models.
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    text: Option<TextFrontEnd>,
    limits: Limits,
    cost: CostModel,
    /// Whether the graph multiplies integer matrices (int8 kernels).
    int8: bool,
    /// Integer matrix products rewritten to exact float ones at load.
    int8_as_float: usize,
    /// Whether a large batch runs in chunks (see [`Model::run`]).
    sequence_batches: bool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Checks, parses and optimises a model. Blocking (milliseconds for
    /// small models, about a second for a BERT-sized one).
    pub fn load(
        name: &str,
        version: u64,
        source: ModelSource<'_>,
        limits: Limits,
    ) -> Result<Model> {
        crate::cpu::mask_faulty_kernels();
        let onnx = onnx();
        let mut proto = onnx
            .proto_model_for_read(&mut Cursor::new(source.onnx))
            .map_err(|e| Error::InvalidModel(format!("not an ONNX model: {e}")))?;
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| Error::InvalidModel("the model has no graph".into()))?;
        check_graph(&onnx, graph)?;
        crate::rewrite::drop_zero_weight_zero_points(graph);
        let kernels = Int8Kernels::native();
        let int8_as_float = if kernels.is_fast() || !limits.int8_as_float {
            0
        } else {
            crate::rewrite::integer_products_as_float(graph)
        };
        let graph = &*graph;
        let int8 = multiplies_integers(graph);
        let (graph_inputs, outputs) = graph_signature(graph)?;
        if let Some(spec) = graph_inputs
            .iter()
            .chain(&outputs)
            .find(|s| s.datatype == DataType::Bytes)
        {
            return Err(Error::InvalidModel(format!(
                "tensor `{}` is a string tensor; string inputs and outputs are not supported \
                 (text models take token ids and a tokenizer)",
                crate::tensor::clip(&spec.name)
            )));
        }

        let model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| Error::InvalidModel(format!("{e:#}")))?;
        drop(proto);
        let plan = model
            .into_typed()
            .and_then(|mut m| {
                crate::quantize::swap_in(&mut m);
                crate::quantize::swap_in_quantizers(&mut m)?;
                crate::quantize::drop_repeated_fake_quants(&mut m)?;
                input_dims_at_least_one(&m)?;
                m.declutter()?;
                crate::dense::swap_in(&mut m)?;
                crate::conv::swap_in(&mut m)?;
                crate::fold::swap_in(&mut m)?;
                crate::batched::swap_in(&mut m)?;
                m.optimize()?;
                Ok(m)
            })
            .and_then(|mut m| {
                crate::broadcast::swap_in(&mut m)?;
                crate::chain::swap_in(&mut m)?;
                crate::softmax::swap_in(&mut m)?;
                crate::cast::swap_in(&mut m)?;
                crate::maxpool::swap_in(&mut m)?;
                crate::im2col::swap_in(&mut m)?;
                crate::pack::swap_in(&mut m)?;
                crate::inplace::swap_in(&mut m)?;
                m.into_runnable()
            })
            .map_err(|e| Error::InvalidModel(format!("{e:#}")))?;

        let sequence_batches = is_sequence_model(&graph_inputs, &outputs);
        let text = source
            .tokenizer_json
            .map(|json| TextFrontEnd::new(json, &graph_inputs))
            .transpose()?;
        let inputs = match &text {
            Some(t) => vec![t.spec()],
            None => graph_inputs,
        };
        Ok(Model {
            name: name.to_owned(),
            version,
            plan,
            inputs,
            outputs,
            text,
            limits,
            cost: CostModel::default(),
            int8,
            int8_as_float,
            sequence_batches,
        })
        .inspect(|m| {
            if m.int8_as_float > 0 {
                tracing::info!(
                    model = name,
                    version,
                    products = m.int8_as_float,
                    "integer matrix products run as float products over the same integers: \
                     this CPU's int8 kernels are tract's slow path (the float weights take 4x \
                     the int8 bytes; [inference] int8_as_float = false keeps them in int8)"
                );
            }
            if m.int8 && !kernels.is_fast() {
                tracing::warn!(
                    model = name,
                    version,
                    kernels = kernels.name(),
                    "int8 model on a CPU without VNNI, AMX or dot-product instructions: its \
                     matrix products run on tract's slow path, often slower than the float model"
                );
            }
        })
    }

    /// Whether the model multiplies integer matrices (`MatMulInteger`,
    /// `ConvInteger`, `QLinearMatMul`, `QLinearConv`), and so runs on
    /// [`Int8Kernels::native`], after the load's rewrites.
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// How many integer matrix products with constant weights were
    /// rewritten at load to float products over the same integers, because
    /// this CPU's int8 kernels are the slow ones. `MatMulInteger` and
    /// `ConvInteger` outputs stay bit-identical; `QLinearMatMul` and
    /// `QLinearConv` outputs within one quantization step (see
    /// `rewrite.rs`).
    pub fn int8_as_float(&self) -> usize {
        self.int8_as_float
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the model takes text (a tokenizer turns each string into a
    /// row of the batch).
    pub fn is_text(&self) -> bool {
        self.text.is_some()
    }

    /// The inputs clients send.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The outputs the model returns, in order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Checks a request completely (names, datatypes, shapes, sizes, byte
    /// counts, text) and converts it for the engine. Nothing runs and
    /// nothing large is allocated before every check has passed.
    pub fn prepare(&self, inputs: &[InputTensor<'_>]) -> Result<Prepared> {
        let ordered = crate::tensor::match_inputs(&self.inputs, inputs)?;
        let values = match &self.text {
            Some(text) => text.encode(ordered[0], &self.limits)?,
            None => {
                crate::tensor::check_shapes(&self.inputs, &ordered, &self.limits)?;
                ordered
                    .iter()
                    .zip(&self.inputs)
                    .map(|(input, spec)| to_engine_tensor(input, spec))
                    .collect::<Result<_>>()?
            }
        };
        Ok(Prepared { values })
    }

    /// Runs prepared inputs and returns the outputs named in `wanted`, in
    /// that order, or all outputs in model order when `wanted` is empty.
    ///
    /// A sequence model's batch of more than [`TOKENS_PER_RUN`] tokens runs
    /// in chunks of whole sequences, and their outputs are joined: tract's
    /// cost per sequence grows with the batch once its activations outgrow
    /// the caches (int8 MiniLM at 128 tokens: 28 ms a sequence at batch 4,
    /// 35–38 at 8 and more). Each sequence's result is what it would be in
    /// a batch of its chunk (a dynamically quantized model takes each
    /// chunk's range, not the whole batch's).
    pub fn run(&self, mut prepared: Prepared, wanted: &[&str]) -> Result<Vec<OutputTensor>> {
        let selection = self.select_outputs(wanted)?;
        let values = std::mem::take(&mut prepared.values);
        let results = match self.rows_per_run(&values) {
            Some(rows) => self.run_in_chunks(values, rows)?,
            None => self.run_plan(values)?,
        };
        let outputs = selection
            .into_iter()
            .map(|i| {
                let value = results
                    .get(i)
                    .ok_or_else(|| Error::Execution(format!("output {i} missing")))?;
                to_output_tensor(&self.outputs[i].name, value.clone())
            })
            .collect();
        wipe_values(results);
        outputs
    }

    /// One run of the plan; the inputs are wiped once the engine is done.
    fn run_plan(&self, values: TVec<TValue>) -> Result<TVec<TValue>> {
        // Our own handles on the inputs, to wipe them once the engine is done.
        let inputs = values.clone();
        let results = self.plan.run(values);
        wipe_values(inputs);
        results.map_err(execution)
    }

    /// How many sequences a run takes, when a sequence model's batch is
    /// larger than that.
    fn rows_per_run(&self, values: &[TValue]) -> Option<usize> {
        if !self.sequence_batches {
            return None;
        }
        let &[batch, sequence, ..] = values.first()?.shape() else {
            return None;
        };
        let rows = (TOKENS_PER_RUN / sequence.max(1)).max(1);
        (batch > rows).then_some(rows)
    }

    /// The plan over chunks of `rows` sequences, outputs joined along the
    /// batch axis. Every chunk's inputs and outputs are wiped.
    fn run_in_chunks(&self, values: TVec<TValue>, rows: usize) -> Result<TVec<TValue>> {
        let batch = values[0].shape()[0];
        let mut chunks: Vec<TVec<TValue>> = Vec::new();
        let mut failed = None;
        for start in (0..batch).step_by(rows) {
            let end = (start + rows).min(batch);
            let inputs = values
                .iter()
                .map(|v| v.slice(0, start, end).map(Tensor::into_tvalue))
                .collect::<TractResult<TVec<TValue>>>()
                .map_err(execution);
            match inputs.and_then(|inputs| self.run_plan(inputs)) {
                Ok(outputs) => chunks.push(outputs),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        wipe_values(values);
        let joined = match failed {
            Some(e) => Err(e),
            None => (0..self.outputs.len())
                .map(|i| {
                    let parts: Vec<&Tensor> = chunks.iter().map(|c| &*c[i]).collect();
                    Tensor::stack_tensors(0, &parts).map(Tensor::into_tvalue)
                })
                .collect::<TractResult<TVec<TValue>>>()
                .map_err(execution),
        };
        wipe_values(chunks.into_iter().flatten());
        joined
    }

    /// `prepare` then `run`.
    pub fn infer(&self, inputs: &[InputTensor<'_>], wanted: &[&str]) -> Result<Vec<OutputTensor>> {
        self.select_outputs(wanted)?;
        let started = std::time::Instant::now();
        let prepared = self.prepare(inputs)?;
        let outputs = self.run(prepared, wanted)?;
        self.cost.observe(input_bytes(inputs), started.elapsed());
        Ok(outputs)
    }

    /// What a request of `inputs` is expected to cost, from the model's
    /// recent requests (time per input byte, smoothed); `None` until the
    /// model has served a few. A server runs cheap requests where they
    /// arrive and sends the others to its pool.
    pub fn estimated_cost(&self, inputs: &[InputTensor<'_>]) -> Option<std::time::Duration> {
        self.cost.estimate(input_bytes(inputs))
    }

    /// Runs prepared inputs `runs` times with every node timed; returns the
    /// time spent per operator type (or per node, with tract's details of
    /// the op, such as the matrix kernel it picked), largest first, with
    /// node counts. For finding where an engine's time goes, not for
    /// serving.
    pub fn profile(
        &self,
        inputs: &[InputTensor<'_>],
        runs: usize,
        by: ProfileBy,
    ) -> Result<Vec<OpTime>> {
        let mut by_op: std::collections::HashMap<String, OpTime> = Default::default();
        for run in 0..runs.max(1) {
            let mut prepared = self.prepare(inputs)?;
            let values = std::mem::take(&mut prepared.values);
            let mut state = self.plan.spawn().map_err(execution)?;
            let outputs = state
                .run_plan_with_eval(values, |ctx, op_state, node, input| {
                    let started = std::time::Instant::now();
                    let result = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                    // Timed before the bookkeeping, which is not the node's.
                    let took = started.elapsed();
                    let label = match by {
                        ProfileBy::Operator => node.op.name().to_string(),
                        ProfileBy::Node => node_summary(node),
                    };
                    let entry = by_op.entry(label.clone()).or_insert_with(|| OpTime {
                        op: label,
                        time: std::time::Duration::ZERO,
                        nodes: 0,
                    });
                    entry.time += took;
                    if run == 0 {
                        entry.nodes += 1;
                    }
                    result
                })
                .map_err(execution)?;
            wipe_values(outputs);
        }
        let mut all: Vec<OpTime> = by_op.into_values().collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.time));
        Ok(all)
    }

    fn select_outputs(&self, wanted: &[&str]) -> Result<Vec<usize>> {
        if wanted.is_empty() {
            return Ok((0..self.outputs.len()).collect());
        }
        wanted
            .iter()
            .map(|name| {
                self.outputs
                    .iter()
                    .position(|o| o.name == *name)
                    .ok_or_else(|| Error::UnknownOutput {
                        name: crate::tensor::clip(name),
                        expected: names(&self.outputs),
                    })
            })
            .collect()
    }
}

/// `#id name: Op [details]`, tract's details shortened to one line.
fn node_summary(node: &TypedNode) -> String {
    let info = node.op.info().unwrap_or_default().join("; ");
    let mut line = format!("#{} {}: {}", node.id, node.name, node.op.name());
    if !info.is_empty() {
        line.push_str(" [");
        line.push_str(&info);
        line.push(']');
    }
    line
}

/// Tokens a sequence model runs at once: larger batches go in chunks (see
/// [`Model::run`]). Int8 MiniLM at 128 tokens cost 28 ms a sequence in
/// batches of 1 to 4 and 35–38 ms in batches of 8 to 32; at 12 tokens the
/// cost falls until batch 32 (384 tokens), which this keeps whole.
pub(crate) const TOKENS_PER_RUN: usize = 512;

/// Whether the model takes sequences: every input `[batch, sequence, ...]`
/// of integers (token ids, masks) with both dimensions symbolic and shared,
/// and every output's first dimension that same batch, so chunks of the
/// batch can run apart and their outputs be joined.
fn is_sequence_model(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> bool {
    let Some(TensorSpec {
        shape: first_shape, ..
    }) = inputs.first()
    else {
        return false;
    };
    let (Some(Dim::Dynamic(batch)), Some(Dim::Dynamic(sequence))) =
        (first_shape.first(), first_shape.get(1))
    else {
        return false;
    };
    if batch == sequence {
        return false;
    }
    let integer = |t: DataType| matches!(t, DataType::I64 | DataType::I32);
    let batched = |s: &TensorSpec| matches!(s.shape.first(), Some(Dim::Dynamic(b)) if b == batch);
    inputs.iter().all(|s| {
        integer(s.datatype)
            && batched(s)
            && matches!(s.shape.get(1), Some(Dim::Dynamic(q)) if q == sequence)
    }) && !outputs.is_empty()
        && outputs.iter().all(batched)
}

fn input_bytes(inputs: &[InputTensor<'_>]) -> u64 {
    inputs
        .iter()
        .map(|i| i.data.len() as u64)
        .sum::<u64>()
        .max(1)
}

/// A smoothed time-per-input-byte of recent requests.
#[derive(Default)]
struct CostModel {
    /// f64 bits of nanoseconds per byte; 0 = not yet known.
    ns_per_byte: std::sync::atomic::AtomicU64,
    samples: std::sync::atomic::AtomicU64,
}

impl CostModel {
    /// Requests seen before an estimate is offered (the first runs of a
    /// plan are slower: caches, lazy allocations).
    const WARM_UP: u64 = 8;

    fn observe(&self, bytes: u64, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = took.as_nanos() as f64 / bytes as f64;
        let old = f64::from_bits(self.ns_per_byte.load(Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + (sample - old) / 8.0
        };
        // A lost update under contention only delays the average a little.
        self.ns_per_byte.store(new.to_bits(), Relaxed);
        self.samples.fetch_add(1, Relaxed);
    }

    fn estimate(&self, bytes: u64) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.samples.load(Relaxed) < Self::WARM_UP {
            return None;
        }
        let ns = f64::from_bits(self.ns_per_byte.load(Relaxed)) * bytes as f64;
        Some(std::time::Duration::from_nanos(
            ns.min(u64::MAX as f64) as u64
        ))
    }
}

/// Time spent in one operator type during [`Model::profile`].
#[derive(Debug, Clone)]
pub struct OpTime {
    /// tract's operator name, e.g. `DynamicQuantizeLinearU8`; by node, the
    /// node's id, name, operator and details.
    pub op: String,
    /// Total time over all runs.
    pub time: std::time::Duration,
    /// Nodes of this operator in the plan.
    pub nodes: usize,
}

/// How [`Model::profile`] groups its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileBy {
    /// One row per operator type.
    Operator,
    /// One row per node.
    Node,
}

/// Inputs that passed every check, converted for the engine.
pub struct Prepared {
    values: TVec<TValue>,
}

impl Drop for Prepared {
    /// A request prepared but never run still wipes its tensors.
    fn drop(&mut self) {
        wipe_values(std::mem::take(&mut self.values));
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prepared(<tensors>)")
    }
}

pub(crate) fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// ONNX's `TensorProto.DataLocation.EXTERNAL`.
pub(crate) const EXTERNAL_DATA: i32 = 1;

/// Tells tract that every dynamic dimension of the graph's inputs is at
/// least 1, which holds because `tensor::check_shape` refuses a request with
/// a dimension below 1 before anything runs. Without it tract cannot prove
/// that `batch · 64` exceeds the few elements its fast element-wise kernels
/// need, so every broadcasting `Add`, `Mul`, `Sub` and `Max` of a model with
/// a batch dimension ran on its generic path (2–5 ns per element) and none
/// fused into a chain: digits CNN (dynamic int8) at batch 32, 1.09 → 0.44 ms
/// in nodes. The same kernels compute the same f32 operations, so outputs
/// are bit-identical. Returns how many symbols were bounded.
fn input_dims_at_least_one(model: &TypedModel) -> TractResult<usize> {
    let mut bounded = HashSet::new();
    for outlet in model.input_outlets()? {
        for dim in model.outlet_fact(*outlet)?.shape.iter() {
            if let TDim::Sym(symbol) = dim
                && bounded.insert(symbol.clone())
            {
                model.symbols.add_assertion(format!("{symbol}>=1"))?;
            }
        }
    }
    Ok(bounded.len())
}

/// Whether any node (in any subgraph) is an integer matrix product.
fn multiplies_integers(graph: &pb::GraphProto) -> bool {
    graph.node.iter().any(|node| {
        matches!(
            node.op_type.as_str(),
            "MatMulInteger" | "ConvInteger" | "QLinearMatMul" | "QLinearConv"
        ) || node
            .attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(&a.graphs))
            .any(multiplies_integers)
    })
}

/// Refuses what the engine must not run: operators it does not implement,
/// operators from custom domains (tract matches operators by name only, so a
/// `com.microsoft` operator sharing a standard name would silently run with
/// the standard meaning), and tensors stored outside the file (the loader
/// would read them from the appliance's disk).
fn check_graph(onnx: &tract_onnx::Onnx, graph: &pb::GraphProto) -> Result<()> {
    for tensor in &graph.initializer {
        if tensor.data_location == Some(EXTERNAL_DATA) {
            return Err(Error::InvalidModel(
                "tensors stored outside the model file (external data) are not accepted".into(),
            ));
        }
    }
    for node in &graph.node {
        let domain = match node.domain.as_str() {
            "" | "ai.onnx" => "ai.onnx",
            "ai.onnx.ml" => "ai.onnx.ml",
            other => {
                return Err(Error::UnsupportedOperator {
                    op: crate::tensor::clip(&node.op_type),
                    domain: crate::tensor::clip(other),
                });
            }
        };
        if !onnx.op_register.0.contains_key(&node.op_type) {
            return Err(Error::UnsupportedOperator {
                op: crate::tensor::clip(&node.op_type),
                domain: domain.to_owned(),
            });
        }
        for attribute in &node.attribute {
            if let Some(t) = &attribute.t
                && t.data_location == Some(EXTERNAL_DATA)
            {
                return Err(Error::InvalidModel(
                    "tensors stored outside the model file (external data) are not accepted".into(),
                ));
            }
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                check_graph(onnx, sub)?;
            }
        }
    }
    Ok(())
}

/// The graph's real inputs (initializers excluded) and its outputs, with
/// datatypes and shapes as the file declares them.
fn graph_signature(graph: &pb::GraphProto) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(value_spec)
        .collect::<Result<Vec<_>>>()?;
    let outputs = graph
        .output
        .iter()
        .map(value_spec)
        .collect::<Result<Vec<_>>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::InvalidModel(
            "the model must have at least one input and one output".into(),
        ));
    }
    Ok((inputs, outputs))
}

fn value_spec(value: &pb::ValueInfoProto) -> Result<TensorSpec> {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as T;
    let bad = |what: &str| {
        Error::InvalidModel(format!(
            "tensor `{}`: {what}",
            crate::tensor::clip(&value.name)
        ))
    };
    let Some(T::TensorType(tensor)) = value.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(bad("only tensor inputs and outputs are supported"));
    };
    let datatype =
        onnx_datatype(tensor.elem_type).ok_or_else(|| bad("unsupported element type"))?;
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| bad("no declared shape"))?
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| match &d.value {
            Some(D::DimValue(n)) if *n > 0 => Ok(Dim::Fixed(*n as u64)),
            Some(D::DimValue(_)) => Err(bad("a dimension is not positive")),
            Some(D::DimParam(p)) if !p.is_empty() => Ok(Dim::Dynamic(p.clone())),
            // Unnamed dynamic dimensions are independent of each other.
            _ => Ok(Dim::Dynamic(format!("{}:{axis}", value.name))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorSpec {
        name: value.name.clone(),
        datatype,
        shape,
    })
}

/// ONNX `TensorProto.DataType` codes.
fn onnx_datatype(code: i32) -> Option<DataType> {
    Some(match code {
        1 => DataType::F32,
        2 => DataType::U8,
        3 => DataType::I8,
        4 => DataType::U16,
        5 => DataType::I16,
        6 => DataType::I32,
        7 => DataType::I64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        10 => DataType::F16,
        11 => DataType::F64,
        12 => DataType::U32,
        13 => DataType::U64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// y = max((x - 0.5) · 3, 0) over x [batch, 64] (or `fixed` rows):
    /// the shape of a dequantize-then-ReLU tail.
    fn elementwise_model(fixed: Option<i64>) -> Vec<u8> {
        use pb::tensor_proto::DataType as D;
        use pb::tensor_shape_proto::dimension::Value as V;
        let dims = [
            match fixed {
                Some(n) => V::DimValue(n),
                None => V::DimParam("batch".into()),
            },
            V::DimValue(64),
        ];
        let value = |name: &str| crate::rewrite::tests::value_with(name, D::Float, &dims);
        let scalar = |name: &str, v: f32| {
            crate::rewrite::tests::initializer(name, D::Float, &[], &v.to_le_bytes())
        };
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let model = crate::rewrite::tests::graph_model(pb::GraphProto {
            node: vec![
                node("Sub", &["x", "half"], "centred"),
                node("Mul", &["centred", "three"], "scaled"),
                node("Max", &["scaled", "zero"], "y"),
            ],
            initializer: vec![
                scalar("half", 0.5),
                scalar("three", 3.0),
                scalar("zero", 0.0),
            ],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        });
        let mut bytes = Vec::new();
        prost::Message::encode(&model, &mut bytes).unwrap();
        bytes
    }

    fn run_rows(model: &Model, rows: usize) -> Vec<u8> {
        let x: Vec<u8> = (0..rows * 64)
            .flat_map(|i| ((i as f32 * 0.37).sin() * 2.0).to_le_bytes())
            .collect();
        let shape = [rows as i64, 64];
        let input = InputTensor {
            name: "x",
            datatype: "FP32",
            shape: &shape,
            data: &x,
        };
        model.infer(&[input], &[]).unwrap()[0].data().to_vec()
    }

    #[test]
    fn a_dynamic_batch_gets_the_fast_element_wise_kernels_with_identical_outputs() {
        let load = |onnx: &[u8]| {
            let source = ModelSource {
                onnx,
                tokenizer_json: None,
            };
            Model::load("m", 1, source, Limits::default()).unwrap()
        };
        let dynamic = load(&elementwise_model(None));
        let ops = crate::rewrite::tests::op_names(dynamic.plan.model());
        // Without the bound on `batch`, tract keeps the generic Sub, Mul and
        // Max; with it, they fuse into one chain.
        assert!(
            !ops.iter()
                .any(|op| ["Sub", "Mul", "Max"].contains(&op.as_str())),
            "generic element-wise ops remain: {ops:?}"
        );
        for rows in [1, 3, 32] {
            let fixed = load(&elementwise_model(Some(rows as i64)));
            assert_eq!(
                run_rows(&dynamic, rows),
                run_rows(&fixed, rows),
                "{rows} rows"
            );
        }
    }

    #[test]
    fn cost_model_waits_for_warm_up_then_scales_with_size() {
        let cost = CostModel::default();
        for _ in 0..CostModel::WARM_UP - 1 {
            cost.observe(1000, Duration::from_micros(10));
            assert_eq!(cost.estimate(1000), None);
        }
        cost.observe(1000, Duration::from_micros(10));
        let small = cost.estimate(1000).unwrap();
        let large = cost.estimate(100_000).unwrap();
        assert!((9_000..11_000).contains(&small.as_nanos()), "{small:?}");
        assert_eq!(large.as_nanos() / small.as_nanos(), 100);
    }
}
