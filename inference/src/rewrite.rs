//! Rewrites applied to an ONNX graph at load, before tract sees it. Each is
//! exact (outputs stay bit-identical) and applies to any model whose graph
//! matches its pattern, never to a file by name.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as D;

use crate::model::EXTERNAL_DATA;

/// `MatMulInteger` and `ConvInteger` with a weight zero point that is an
/// all-zero initializer lose that input: ONNX reads a missing zero point
/// as zero, and tract then skips the m×n correction it would otherwise
/// compute (onnxruntime's dynamic quantizer writes per-channel weight zero
/// points as zeros). Returns how many nodes changed.
pub(crate) fn drop_zero_weight_zero_points(graph: &mut pb::GraphProto) -> usize {
    let zero: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| is_all_zero_integer(t))
        .map(|t| t.name.clone())
        .collect();
    let mut changed = 0;
    for node in &mut graph.node {
        if matches!(node.op_type.as_str(), "MatMulInteger" | "ConvInteger")
            && node.input.len() == 4
            && zero.contains(&node.input[3])
        {
            node.input.truncate(3);
            // An absent activation zero point left as the last input.
            if node.input[2].is_empty() {
                node.input.truncate(2);
            }
            changed += 1;
        }
        for attribute in &mut node.attribute {
            for sub in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                changed += drop_zero_weight_zero_points(sub);
            }
        }
    }
    changed
}

/// An int8 or uint8 initializer whose every element is zero.
fn is_all_zero_integer(t: &pb::TensorProto) -> bool {
    let integer = t.data_type == D::Int8 as i32 || t.data_type == D::Uint8 as i32;
    integer
        && t.data_location != Some(EXTERNAL_DATA)
        && t.raw_data.iter().all(|b| *b == 0)
        && t.int32_data.iter().all(|v| *v == 0)
}

/// The largest magnitude below which every integer is an f32.
const F32_EXACT: u64 = 1 << 24;

/// On a CPU whose int8 kernels are tract's slow path (see `cpu.rs`), integer
/// matrix products with a constant weight run as float products over the
/// same integers: `(f32(a) - f32(a_zp)) · f32(b - b_zp)`.
///
/// - `MatMulInteger` / `ConvInteger` become `MatMul` / `Conv` cast back to
///   int32. Every product and partial sum is an integer, so the result is
///   exact and the outputs bit-identical as long as no partial sum can reach
///   2^24 in any order of summation: 255 (which bounds `|a - a_zp|` for
///   uint8 and int8 alike) times the widest output's `Σ |b - b_zp|` below
///   2^24. tract pads `ConvInteger`'s input with `a_zp`, which is 0 once
///   centred, so padding stays exact too. Where every reader of a
///   `MatMulInteger` casts the int32 straight to float (as dynamic
///   quantization does before rescaling), the product stays f32 with no
///   casts: the same value, an
///   integer below 2^24 being its own f32 and an all-zero sum +0 as the
///   int32 0's cast (tract's products sum from +0). tract then fuses the
///   rescale, bias and ReLU into the product (digits MLP at batch 32:
///   28 → 19 µs); a product small enough for `dense::FastDense` goes there
///   instead, exactly the same.
/// - `QLinearMatMul` / `QLinearConv` accumulate the same way (with
///   `QLinearConv`'s int32 bias, inside the same bound), then rescale by
///   `a_scale · b_scale / y_scale` in f32 and `QuantizeLinear` with scale 1
///   and the output zero point. The accumulator is exact; tract rescales it
///   with a Q0.31 fixed-point multiplier instead, so an output can differ
///   by one quantization step where the rescaled value lies within a few
///   f32 ulps of a rounding tie. Scales and zero points must be constants.
///
/// A node past the bound keeps the integer path. The activation zero point
/// must be a scalar (from `DynamicQuantizeLinear`, or a one-value
/// initializer) so that subtracting it broadcasts as ONNX means. The float
/// weights take four times the int8 bytes. Top-level graph only. Returns how
/// many nodes changed.
pub(crate) fn integer_products_as_float(graph: &mut pb::GraphProto) -> usize {
    let mut names: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .chain(graph.input.iter().map(|v| v.name.clone()))
        .collect();
    let scalar_zero_points: HashSet<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "DynamicQuantizeLinear" && n.output.len() == 3)
        .map(|n| n.output[2].clone())
        .chain(
            graph
                .initializer
                .iter()
                .filter(|t| t.dims.iter().product::<i64>() <= 1)
                .map(|t| t.name.clone()),
        )
        .collect();
    let graph_inputs: HashSet<String> = graph.input.iter().map(|v| v.name.clone()).collect();
    let read_as_float = read_only_as_float(graph);
    // Products that stay float: their declared int32 type no longer holds.
    let mut retyped: HashSet<String> = HashSet::new();
    // Float weights already made, by (weight, zero point, bias).
    let mut weights: HashMap<[String; 3], Option<(String, Option<String>)>> = HashMap::new();
    let mut consumed: HashSet<String> = HashSet::new();
    let mut new_initializers = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut changed = 0;
    for node in std::mem::take(&mut graph.node) {
        let Some(plan) = FloatProduct::plan(&node, &scalar_zero_points, &graph_inputs) else {
            nodes.push(node);
            continue;
        };
        // Checked before any float weight is made, so a refusal leaves none.
        let requant = match &plan.requant {
            None => None,
            Some(r) => match r.multiplier(&graph.initializer, &plan) {
                Some(m) => Some(m),
                None => {
                    nodes.push(node);
                    continue;
                }
            },
        };
        let key = [
            plan.b.clone(),
            plan.b_zp.clone().unwrap_or_default(),
            plan.bias.clone().unwrap_or_default(),
        ];
        let weight = weights
            .entry(key)
            .or_insert_with(|| {
                let (weight, bias) = float_weight(&graph.initializer, &plan)?;
                let name = unused(&mut names, &format!("{}::f32", plan.b));
                new_initializers.push(pb::TensorProto {
                    name: name.clone(),
                    ..weight
                });
                let bias = bias.zip(plan.bias.as_ref()).map(|(bias, bias_name)| {
                    let name = unused(&mut names, &format!("{bias_name}::f32"));
                    new_initializers.push(pb::TensorProto {
                        name: name.clone(),
                        ..bias
                    });
                    name
                });
                Some((name, bias))
            })
            .clone();
        let Some((weight, bias)) = weight else {
            nodes.push(node);
            continue;
        };
        // Not a convolution: tract folds a per-channel Mul or Add that
        // directly follows a Conv into its kernel or bias, which would
        // change the sums (the int32 casts keep them apart).
        let as_float = plan.requant.is_none() && !plan.conv && read_as_float.contains(&plan.y);
        if as_float {
            retyped.insert(plan.y.clone());
        }
        let (more_initializers, more_nodes) =
            plan.nodes(&weight, bias.as_deref(), requant, as_float, &mut names);
        new_initializers.extend(more_initializers);
        nodes.extend(more_nodes);
        consumed.extend(plan.consumed());
        changed += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(new_initializers);
    graph.value_info.retain(|v| !retyped.contains(&v.name));
    // Integer weights nothing reads any more would be loaded for nothing.
    let mut read: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    inputs_read(&graph.node, &mut read);
    let unread: HashSet<String> = consumed
        .iter()
        .filter(|n| !read.contains(n.as_str()))
        .cloned()
        .collect();
    graph.initializer.retain(|t| !unread.contains(&t.name));
    changed
}

/// Every value the nodes read, subgraphs (which may read the outer
/// graph's initializers by name) included.
fn inputs_read<'a>(nodes: &'a [pb::NodeProto], read: &mut HashSet<&'a str>) {
    for node in nodes {
        read.extend(node.input.iter().map(String::as_str));
        for attribute in &node.attribute {
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                inputs_read(&sub.node, read);
            }
        }
    }
}

/// The values of `graph` whose every reader is a top-level `Cast` to float
/// (not a graph output, not read by a subgraph).
fn read_only_as_float(graph: &pb::GraphProto) -> HashSet<String> {
    let mut only: HashMap<&str, bool> = HashMap::new();
    for node in &graph.node {
        // tract reads the first `to`, which must be an integer attribute.
        let to = node.attribute.iter().find(|a| a.name == "to");
        let to_float = node.op_type == "Cast"
            && node.domain.is_empty()
            && to.is_some_and(|a| {
                a.r#type == pb::attribute_proto::AttributeType::Int as i32 && a.i == D::Float as i64
            });
        for input in &node.input {
            *only.entry(input).or_insert(true) &= to_float;
        }
        let mut in_subgraphs = HashSet::new();
        for attribute in &node.attribute {
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                inputs_read(&sub.node, &mut in_subgraphs);
            }
        }
        for input in in_subgraphs {
            only.insert(input, false);
        }
    }
    for output in &graph.output {
        only.insert(&output.name, false);
    }
    only.into_iter()
        .filter(|(_, only)| *only)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// One integer product to run in float.
struct FloatProduct {
    /// `Conv` (with the node's attributes) or `MatMul`.
    conv: bool,
    attributes: Vec<pb::AttributeProto>,
    a: String,
    b: String,
    a_zp: Option<String>,
    b_zp: Option<String>,
    /// `QLinearConv`'s int32 bias.
    bias: Option<String>,
    /// For `QLinear*`: how the accumulator becomes the quantized output.
    requant: Option<Requant>,
    y: String,
}

/// The scales and output zero point of a `QLinear*` node.
struct Requant {
    a_scale: String,
    b_scale: String,
    y_scale: String,
    y_zp: String,
}

impl FloatProduct {
    fn plan(
        node: &pb::NodeProto,
        scalar_zero_points: &HashSet<String>,
        graph_inputs: &HashSet<String>,
    ) -> Option<FloatProduct> {
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).cloned();
        // Input positions of A, its zero point, B, its zero point.
        let (conv, qlinear) = match (node.domain.as_str(), node.op_type.as_str()) {
            ("", "MatMulInteger") => (false, false),
            ("", "ConvInteger") => (true, false),
            ("", "QLinearMatMul") => (false, true),
            ("", "QLinearConv") => (true, true),
            _ => return None,
        };
        let [a, a_zp, b, b_zp] = if qlinear { [0, 2, 3, 5] } else { [0, 2, 1, 3] };
        let a_zp = input(a_zp);
        if a_zp
            .as_ref()
            .is_some_and(|z| !scalar_zero_points.contains(z))
        {
            return None;
        }
        let b = input(b)?;
        // A weight a request may feed (an initializer listed as a graph
        // input, as older files do) is not a constant.
        if graph_inputs.contains(&b) {
            return None;
        }
        let requant = if qlinear {
            Some(Requant {
                a_scale: input(1)?,
                b_scale: input(4)?,
                y_scale: input(6)?,
                y_zp: input(7)?,
            })
        } else {
            None
        };
        Some(FloatProduct {
            conv,
            attributes: node.attribute.clone(),
            a: input(a)?,
            b,
            a_zp,
            b_zp: input(b_zp),
            bias: if qlinear && conv { input(8) } else { None },
            requant,
            y: node.output.first()?.clone(),
        })
    }

    /// The initializers this node read that the float form no longer needs.
    fn consumed(&self) -> impl Iterator<Item = String> + '_ {
        [Some(&self.b), self.b_zp.as_ref(), self.bias.as_ref()]
            .into_iter()
            .flatten()
            .chain(
                self.requant
                    .iter()
                    .flat_map(|r| [&r.a_scale, &r.b_scale, &r.y_scale]),
            )
            .cloned()
    }

    /// Cast A (minus its zero point), MatMul or Conv with the float weight,
    /// then either cast to int32 (unless `as_float`: the product is left in
    /// f32), or rescale and quantize, under the original output name.
    /// Returns the initializers and nodes to add.
    fn nodes(
        &self,
        weight: &str,
        bias: Option<&str>,
        requant: Option<pb::TensorProto>,
        as_float: bool,
        names: &mut HashSet<String>,
    ) -> (Vec<pb::TensorProto>, Vec<pb::NodeProto>) {
        let mut out = Vec::new();
        let a = unused(names, &format!("{}::a_f32", self.y));
        out.push(node("Cast", &[&self.a], &a, Some(D::Float)));
        let mut centered = a;
        if let Some(zp) = &self.a_zp {
            let zp_f32 = unused(names, &format!("{}::a_zp_f32", self.y));
            out.push(node("Cast", &[zp], &zp_f32, Some(D::Float)));
            let c = unused(names, &format!("{}::a_centered", self.y));
            out.push(node("Sub", &[&centered, &zp_f32], &c, None));
            centered = c;
        }
        let acc = if as_float {
            self.y.clone()
        } else {
            unused(names, &format!("{}::acc_f32", self.y))
        };
        if self.conv {
            let inputs: Vec<&str> = [Some(centered.as_str()), Some(weight), bias]
                .into_iter()
                .flatten()
                .collect();
            let mut conv = node("Conv", &inputs, &acc, None);
            conv.attribute = self.attributes.clone();
            out.push(conv);
        } else {
            out.push(node("MatMul", &[&centered, weight], &acc, None));
        }
        let (Some(multiplier), Some(r)) = (requant, &self.requant) else {
            if !as_float {
                out.push(node("Cast", &[&acc], &self.y, Some(D::Int32)));
            }
            return (Vec::new(), out);
        };
        let multiplier = pb::TensorProto {
            name: unused(names, &format!("{}::rescale", self.y)),
            ..multiplier
        };
        let one = pb::TensorProto {
            name: unused(names, &format!("{}::one", self.y)),
            data_type: D::Float as i32,
            raw_data: 1f32.to_le_bytes().to_vec(),
            ..Default::default()
        };
        let scaled = unused(names, &format!("{}::scaled", self.y));
        out.push(node("Mul", &[&acc, &multiplier.name], &scaled, None));
        out.push(node(
            "QuantizeLinear",
            &[&scaled, &one.name, &r.y_zp],
            &self.y,
            None,
        ));
        (vec![multiplier, one], out)
    }
}

impl Requant {
    /// `a_scale · b_scale / y_scale` as an f32 initializer shaped to
    /// broadcast over the product's output (per output channel, or one
    /// value), if the scales are constants of the right sizes and the output
    /// zero point is a scalar.
    fn multiplier(
        &self,
        initializers: &[pb::TensorProto],
        plan: &FloatProduct,
    ) -> Option<pb::TensorProto> {
        let find = |name: &str| initializers.iter().find(|t| t.name == name);
        let scalar = |name: &str| -> Option<f32> {
            match float_values(find(name)?)?.as_slice() {
                [v] => Some(*v),
                _ => None,
            }
        };
        let (a_scale, y_scale) = (scalar(&self.a_scale)?, scalar(&self.y_scale)?);
        if find(&self.y_zp)?.dims.iter().product::<i64>() > 1 {
            return None;
        }
        let b_scales = float_values(find(&self.b_scale)?)?;
        let weight = find(&plan.b)?;
        let outputs = *if plan.conv {
            weight.dims.first()?
        } else {
            weight.dims.last()?
        };
        let values: Vec<f32> = b_scales.iter().map(|b| a_scale * b / y_scale).collect();
        let dims = match values.len() {
            1 => Vec::new(),
            n if n as i64 == outputs && plan.conv => {
                // [M, 1, 1, ...]: the channel axis of [N, M, spatial...].
                let spatial = weight.dims.len().checked_sub(2)?;
                std::iter::once(outputs)
                    .chain(std::iter::repeat_n(1, spatial))
                    .collect()
            }
            n if n as i64 == outputs => vec![outputs],
            _ => return None,
        };
        Some(pb::TensorProto {
            data_type: D::Float as i32,
            dims,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        })
    }
}

/// Element index of output `o`'s `r`-th term, given outputs and terms per
/// output.
type WeightIndex = fn(usize, usize, usize, usize) -> usize;

/// `b - b_zp` (and the bias, if any) as f32 initializers, if B is a constant
/// int8/uint8 tensor (a 2-D matrix, or a convolution kernel `[outputs,
/// inputs/group, ...]`), the zero point is a scalar or one per output, the
/// bias one int32 per output, and the sums stay exact in f32.
fn float_weight(
    initializers: &[pb::TensorProto],
    plan: &FloatProduct,
) -> Option<(pb::TensorProto, Option<pb::TensorProto>)> {
    let find = |name: &str| initializers.iter().find(|t| t.name == name);
    let b = find(&plan.b)?;
    let dims: Vec<usize> = b
        .dims
        .iter()
        .map(|d| usize::try_from(*d).ok())
        .collect::<Option<_>>()?;
    // Outputs, and the element index of output `o`'s `r`-th term.
    let (n, per_output, index): (usize, usize, WeightIndex) = match (plan.conv, dims.as_slice()) {
        (false, [k, n]) => (*n, *k, |o, r, n, _| r * n + o),
        (true, [m, rest @ ..]) if !rest.is_empty() => {
            let per = rest.iter().try_fold(1usize, |a, d| a.checked_mul(*d))?;
            (*m, per, |o, r, _, per| o * per + r)
        }
        _ => return None,
    };
    let values = integer_values(b)?;
    (values.len() == n.checked_mul(per_output)?).then_some(())?;
    let zero_points = match &plan.b_zp {
        None => vec![0; n],
        Some(name) => {
            let zp = integer_values(find(name)?)?;
            match zp.len() {
                1 => vec![zp[0]; n],
                len if len == n => zp,
                _ => return None,
            }
        }
    };
    let bias = match &plan.bias {
        None => None,
        Some(name) => {
            let bias = int32_values(find(name)?)?;
            (bias.len() == n).then_some(bias)
        }
    };
    if plan.bias.is_some() && bias.is_none() {
        return None;
    }
    let mut centered = values;
    for o in 0..n {
        for r in 0..per_output {
            centered[index(o, r, n, per_output)] -= zero_points[o];
        }
    }
    let widest = (0..n)
        .map(|o| {
            let terms: u64 = (0..per_output)
                .map(|r| centered[index(o, r, n, per_output)].unsigned_abs())
                .sum();
            255 * terms + bias.as_ref().map_or(0, |b| b[o].unsigned_abs())
        })
        .max()
        .unwrap_or(0);
    if widest >= F32_EXACT {
        return None;
    }
    let floats = |values: &[i64]| -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect()
    };
    let weight = pb::TensorProto {
        data_type: D::Float as i32,
        dims: b.dims.clone(),
        raw_data: floats(&centered),
        ..Default::default()
    };
    let bias = bias.map(|bias| pb::TensorProto {
        data_type: D::Float as i32,
        dims: vec![n as i64],
        raw_data: floats(&bias),
        ..Default::default()
    });
    Some((weight, bias))
}

/// The values of an initializer stored in the file: its little-endian
/// `raw_data` read `size` bytes at a time, or else its typed field.
fn stored<T>(
    t: &pb::TensorProto,
    size: usize,
    from_raw: impl Fn(&[u8]) -> T,
    typed: impl FnOnce() -> Vec<T>,
) -> Option<Vec<T>> {
    if t.data_location == Some(EXTERNAL_DATA) {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(typed());
    }
    let chunks = t.raw_data.chunks_exact(size);
    chunks.remainder().is_empty().then_some(())?;
    Some(chunks.map(from_raw).collect())
}

/// The values of an int32 initializer stored in the file.
fn int32_values(t: &pb::TensorProto) -> Option<Vec<i64>> {
    (t.data_type == D::Int32 as i32).then_some(())?;
    stored(
        t,
        4,
        |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
        || t.int32_data.iter().map(|v| *v as i64).collect(),
    )
}

/// The values of an f32 initializer stored in the file.
fn float_values(t: &pb::TensorProto) -> Option<Vec<f32>> {
    (t.data_type == D::Float as i32).then_some(())?;
    stored(
        t,
        4,
        |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        || t.float_data.clone(),
    )
}

/// The values of an int8 or uint8 initializer stored in the file (ONNX
/// keeps both in `int32_data` when not raw).
fn integer_values(t: &pb::TensorProto) -> Option<Vec<i64>> {
    let typed = || t.int32_data.iter().map(|v| *v as i64).collect();
    if t.data_type == D::Int8 as i32 {
        stored(t, 1, |b| b[0] as i8 as i64, typed)
    } else if t.data_type == D::Uint8 as i32 {
        stored(t, 1, |b| b[0] as i64, typed)
    } else {
        None
    }
}

/// `wanted`, or `wanted` with a suffix, that no value of the graph has yet.
fn unused(names: &mut HashSet<String>, wanted: &str) -> String {
    let mut name = wanted.to_owned();
    let mut i = 0;
    while names.contains(&name) {
        i += 1;
        name = format!("{wanted}.{i}");
    }
    names.insert(name.clone());
    name
}

pub(crate) fn node(op: &str, inputs: &[&str], output: &str, to: Option<D>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        attribute: to
            .map(|to| pb::AttributeProto {
                name: "to".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: to as i64,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pb::tensor_proto::DataType as D;
    use tract_onnx::prelude::*;

    /// tract's ONNX loader, with what [`crate::cpu::mask_faulty_kernels`]
    /// masks masked first, as [`crate::Model::load`] does.
    pub(crate) fn onnx() -> tract_onnx::Onnx {
        crate::cpu::mask_faulty_kernels();
        tract_onnx::onnx()
    }

    pub(crate) fn value(name: &str, elem: D, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::dimension::Value as V;
        let dims: Vec<V> = dims.iter().map(|&d| V::DimValue(d)).collect();
        value_with(name, elem, &dims)
    }

    /// Graph outputs by name, their types left to inference.
    pub(crate) fn untyped(names: &[&str]) -> Vec<pb::ValueInfoProto> {
        names
            .iter()
            .map(|n| pb::ValueInfoProto {
                name: (*n).into(),
                ..Default::default()
            })
            .collect()
    }

    /// The operator names of a model's nodes.
    pub(crate) fn op_names(model: &TypedModel) -> Vec<String> {
        model
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect()
    }

    /// A value whose dimensions may be named (symbolic) as well as fixed.
    pub(crate) fn value_with(
        name: &str,
        elem: D,
        dims: &[pb::tensor_shape_proto::dimension::Value],
    ) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::Dimension;
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(d.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn initializer(name: &str, elem: D, dims: &[i64], bytes: &[u8]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: elem as i32,
            dims: dims.to_vec(),
            raw_data: bytes.to_vec(),
            ..Default::default()
        }
    }

    /// An attribute holding a list of integers.
    pub(crate) fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    /// `proto` loaded and optimised by tract, nothing of ours swapped in.
    pub(crate) fn optimized(proto: &pb::ModelProto) -> TypedModel {
        onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_optimized()
            .unwrap()
    }

    /// f32 values that differ from element to element; `seed` varies them.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u64 * 7919 + seed * 104_729) % 2003) as f32 * 0.013 - 13.0)
            .collect()
    }

    /// `model` run on one input: its first output.
    pub(crate) fn run_on(model: TypedModel, x: &Tensor) -> Tensor {
        model
            .into_runnable()
            .unwrap()
            .run(tvec!(x.clone().into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor()
    }

    /// `proto` decluttered, then optimised and run on `x` as tract would
    /// and with `swap` applied between the two passes (as `Model::load`
    /// does): the op names of the swapped model, tract's output, ours.
    pub(crate) fn with_and_without(
        proto: &pb::ModelProto,
        swap: fn(&mut TypedModel) -> TractResult<usize>,
        x: &Tensor,
    ) -> (Vec<String>, Tensor, Tensor) {
        let (typed, ours) = decluttered_and_swapped(proto, swap);
        let names = op_names(&ours);
        let run = |mut m: TypedModel| {
            m.optimize().unwrap();
            run_on(m, x)
        };
        (names, run(typed), run(ours))
    }

    /// `proto` decluttered as tract leaves it, and a copy with `swap`
    /// applied (as `Model::load` does before optimising).
    pub(crate) fn decluttered_and_swapped(
        proto: &pb::ModelProto,
        swap: fn(&mut TypedModel) -> TractResult<usize>,
    ) -> (TypedModel, TypedModel) {
        let mut typed = onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_typed()
            .unwrap();
        typed.declutter().unwrap();
        let mut ours = typed.clone();
        swap(&mut ours).unwrap();
        (typed, ours)
    }

    /// A model around `graph` (named "g"), at the opset the tests use.
    pub(crate) fn graph_model(graph: pb::GraphProto) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                ..graph
            }),
            ..Default::default()
        }
    }

    /// Runs `proto`, optimised, on one input; its first output's values.
    fn run_one<T: Datum + Copy>(proto: &pb::ModelProto, input: Tensor) -> Vec<T> {
        let plan = onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let out = plan.run(tvec!(input.into())).unwrap();
        out[0]
            .as_plain_ram()
            .unwrap()
            .as_slice::<T>()
            .unwrap()
            .to_vec()
    }

    /// y = MatMulInteger(a uint8 [2,3], b int8 [3,2], a_zp uint8, b_zp int8 [2]).
    fn model(b_zero_point: [u8; 2]) -> pb::ModelProto {
        let b: [i8; 6] = [1, -2, 3, -4, 5, -6];
        graph_model(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "MatMulInteger".into(),
                input: vec!["a".into(), "b".into(), "a_zp".into(), "b_zp".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![
                initializer("b", D::Int8, &[3, 2], &b.map(|v| v as u8)),
                initializer("a_zp", D::Uint8, &[], &[3]),
                initializer("b_zp", D::Int8, &[2], &b_zero_point),
            ],
            input: vec![value("a", D::Uint8, &[2, 3])],
            output: vec![value("y", D::Int32, &[2, 2])],
            ..Default::default()
        })
    }

    fn run(proto: &pb::ModelProto) -> Vec<i32> {
        let a = Tensor::from_shape(&[2, 3], &[10u8, 20, 30, 40, 50, 60]).unwrap();
        run_one(proto, a)
    }

    #[test]
    fn an_all_zero_weight_zero_point_is_dropped_and_nothing_changes() {
        let original = model([0, 0]);
        let mut rewritten = original.clone();
        let graph = rewritten.graph.as_mut().unwrap();
        assert_eq!(drop_zero_weight_zero_points(graph), 1);
        assert_eq!(graph.node[0].input, ["a", "b", "a_zp"]);
        // (a - 3) · b, by hand.
        #[allow(clippy::identity_op)]
        let expected = vec![
            7 * 1 + 17 * 3 + 27 * 5,
            7 * -2 + 17 * -4 + 27 * -6,
            37 * 1 + 47 * 3 + 57 * 5,
            37 * -2 + 47 * -4 + 57 * -6,
        ];
        assert_eq!(run(&original), expected);
        assert_eq!(run(&rewritten), expected);
    }

    #[test]
    fn a_nonzero_weight_zero_point_stays() {
        let mut proto = model([0, 1]);
        let graph = proto.graph.as_mut().unwrap();
        assert_eq!(drop_zero_weight_zero_points(graph), 0);
        assert_eq!(graph.node[0].input.len(), 4);
    }

    /// y = MatMulInteger(DynamicQuantizeLinear(x), w [k,n], its zero point,
    /// w_zp), x float [3,k]: the pattern onnxruntime's dynamic quantizer
    /// writes.
    fn dynamic_model(k: usize, n: usize, w: &[i8], w_zp: &[i8]) -> pb::ModelProto {
        let nodes = vec![
            pb::NodeProto {
                op_type: "DynamicQuantizeLinear".into(),
                input: vec!["x".into()],
                output: vec!["xq".into(), "xs".into(), "xz".into()],
                ..Default::default()
            },
            pb::NodeProto {
                op_type: "MatMulInteger".into(),
                input: vec!["xq".into(), "w".into(), "xz".into(), "w_zp".into()],
                output: vec!["y".into()],
                ..Default::default()
            },
        ];
        let (k, n) = (k as i64, n as i64);
        graph_model(pb::GraphProto {
            node: nodes,
            initializer: vec![
                initializer(
                    "w",
                    D::Int8,
                    &[k, n],
                    &w.iter().map(|v| *v as u8).collect::<Vec<_>>(),
                ),
                initializer(
                    "w_zp",
                    D::Int8,
                    &[w_zp.len() as i64],
                    &w_zp.iter().map(|v| *v as u8).collect::<Vec<_>>(),
                ),
            ],
            input: vec![value("x", D::Float, &[3, k])],
            output: vec![value("y", D::Int32, &[3, n])],
            ..Default::default()
        })
    }

    /// A deterministic spread of values (no rand dependency needed).
    fn spread(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    fn run_float(proto: &pb::ModelProto, k: usize, x: &[f32]) -> Vec<i32> {
        run_one(proto, Tensor::from_shape(&[3, k], x).unwrap())
    }

    fn weights(len: usize, seed: u64) -> Vec<i8> {
        spread(len, seed, 127.0).iter().map(|v| *v as i8).collect()
    }

    #[test]
    fn an_integer_matmul_runs_in_float_with_bit_identical_outputs() {
        let (k, n) = (96, 10);
        let w = weights(k * n, 7);
        let w_zp: Vec<i8> = (0..n as i8).map(|i| i - 5).collect();
        let original = dynamic_model(k, n, &w, &w_zp);
        let mut rewritten = original.clone();
        let graph = rewritten.graph.as_mut().unwrap();
        assert_eq!(integer_products_as_float(graph), 1);
        assert!(graph.node.iter().all(|n| n.op_type != "MatMulInteger"));
        assert!(
            graph
                .initializer
                .iter()
                .all(|t| t.name != "w" && t.name != "w_zp"),
            "the integer weights are no longer read and should be gone"
        );
        let mut widest = 0;
        for seed in 0..20 {
            let x = spread(3 * k, seed, 1.0 + seed as f32);
            let expected = run_float(&original, k, &x);
            assert_eq!(run_float(&rewritten, k, &x), expected, "seed {seed}");
            widest = expected.iter().map(|v| v.abs()).max().unwrap().max(widest);
        }
        // Sums beyond what 16 bits hold: the float path carries them exactly.
        assert!(widest > 1 << 16, "{widest}");
        // A scalar activation zero point from an initializer works too.
        let original = model([0, 1]);
        let mut rewritten = original.clone();
        assert_eq!(
            integer_products_as_float(rewritten.graph.as_mut().unwrap()),
            1
        );
        assert_eq!(run(&rewritten), run(&original));
    }

    /// `dynamic_model` whose product is cast to float (output "yf"), `y`
    /// declared int32 in `value_info`, and also a graph output if
    /// `y_is_output`.
    fn cast_to_float_model(
        k: usize,
        n: usize,
        w: &[i8],
        w_zp: &[i8],
        y_is_output: bool,
    ) -> pb::ModelProto {
        let mut proto = dynamic_model(k, n, w, w_zp);
        let graph = proto.graph.as_mut().unwrap();
        graph.node.push(node("Cast", &["y"], "yf", Some(D::Float)));
        let y = graph.output.remove(0);
        graph.value_info.push(y.clone());
        if y_is_output {
            graph.output.push(y);
        }
        graph
            .output
            .insert(0, value("yf", D::Float, &[3, n as i64]));
        proto
    }

    #[test]
    fn a_product_read_only_as_float_stays_f32_with_bit_identical_outputs() {
        let (k, n) = (64, 6);
        // Two weight columns equal to their zero point: every term of
        // their sums is ±0. One column all below its zero point: times the
        // row of zeros below, every term is -0, and the sum must still be
        // the +0 of the int32 0 cast to float.
        let mut w = weights(k * n, 3);
        let w_zp: Vec<i8> = vec![0, -3, 0, 2, 0, 0];
        for row in w.chunks_exact_mut(n) {
            row[1] = -3;
            row[3] = 2;
            row[5] = -100;
        }
        let original = cast_to_float_model(k, n, &w, &w_zp, false);
        let mut rewritten = original.clone();
        let graph = rewritten.graph.as_mut().unwrap();
        assert_eq!(integer_products_as_float(graph), 1);
        let to_int32 =
            |n: &pb::NodeProto| n.op_type == "Cast" && n.attribute[0].i == D::Int32 as i64;
        assert!(!graph.node.iter().any(to_int32), "{:?}", graph.node);
        assert!(
            graph.value_info.iter().all(|v| v.name != "y"),
            "y is f32 now"
        );
        let bits = |proto: &pb::ModelProto, x: &[f32]| -> Vec<u32> {
            let x = Tensor::from_shape(&[3, k], x).unwrap();
            run_one::<f32>(proto, x)
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        for seed in 0..10 {
            let mut x = spread(3 * k, seed, 2.0);
            // A row of zeros quantizes to the zero point: ±0 terms again.
            x[..k].fill(0.0);
            let expected = bits(&original, &x);
            assert_eq!(expected[5], 0, "row 0, column 5: a sum of -0 terms is +0");
            assert_eq!(bits(&rewritten, &x), expected, "seed {seed}");
        }
        // Read as int32 too (here: a graph output), the cast stays.
        let mut both = cast_to_float_model(k, n, &w, &w_zp, true);
        let graph = both.graph.as_mut().unwrap();
        assert_eq!(integer_products_as_float(graph), 1);
        assert!(graph.node.iter().any(to_int32));
    }

    #[test]
    fn only_values_every_reader_casts_to_float_count_as_read_as_float() {
        let cast = |input: &str, to: &[D]| pb::NodeProto {
            attribute: to
                .iter()
                .map(|&to| node("Cast", &[], "", Some(to)).attribute.remove(0))
                .collect(),
            ..node("Cast", &[input], &format!("{input}_cast"), None)
        };
        let graph = pb::GraphProto {
            node: vec![
                cast("a", &[D::Float]),
                cast("a", &[D::Float]),
                // tract casts by the first `to`.
                cast("b", &[D::Int8, D::Float]),
                cast("c", &[D::Float]),
                node("Relu", &["c"], "c_relu", None),
                cast("d", &[D::Float]),
                cast("e", &[]),
            ],
            output: untyped(&["d"]),
            ..Default::default()
        };
        let found = read_only_as_float(&graph);
        assert_eq!(found, HashSet::from(["a".to_string()]));
    }

    #[test]
    fn a_product_that_could_leave_f32s_exact_range_keeps_the_integer_path() {
        // 255 · 600 · 127 > 2^24: a partial sum could round in f32.
        let (k, n) = (600, 2);
        let mut proto = dynamic_model(k, n, &vec![127; k * n], &[0]);
        assert_eq!(integer_products_as_float(proto.graph.as_mut().unwrap()), 0);
        // Just below the bound it is exact, and rewritten.
        let k = 500;
        let mut proto = dynamic_model(k, n, &vec![-127; k * n], &[0]);
        assert_eq!(integer_products_as_float(proto.graph.as_mut().unwrap()), 1);
    }

    #[test]
    fn what_the_rewrite_cannot_express_exactly_is_left_alone() {
        // A per-row activation zero point would broadcast along the wrong axis.
        let mut proto = model([0, 0]);
        let graph = proto.graph.as_mut().unwrap();
        graph.initializer[1].dims = vec![2];
        graph.initializer[1].raw_data = vec![3, 4];
        assert_eq!(integer_products_as_float(graph), 0);
        // A weight a request could feed is not a constant.
        let mut proto = model([0, 0]);
        let graph = proto.graph.as_mut().unwrap();
        graph.input.push(value("b", D::Int8, &[3, 2]));
        assert_eq!(integer_products_as_float(graph), 0);
        // A weight zero point of the wrong length.
        let mut proto = dynamic_model(4, 2, &[1; 8], &[0, 0, 0]);
        assert_eq!(integer_products_as_float(proto.graph.as_mut().unwrap()), 0);
    }

    #[test]
    fn a_padded_integer_convolution_runs_in_float_with_bit_identical_outputs() {
        // x [1,2,5,5] → DynamicQuantizeLinear → ConvInteger(w [3,2,3,3],
        // per-output zero points, pads 1, stride 2) → y [1,3,3,3].
        let w = weights(3 * 2 * 3 * 3, 11);
        let mut original = dynamic_model(1, 1, &[0], &[0]);
        let graph = original.graph.as_mut().unwrap();
        graph.node[1].op_type = "ConvInteger".into();
        graph.node[1].attribute = vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[2, 2]),
        ];
        let w_bytes: Vec<u8> = w.iter().map(|v| *v as u8).collect();
        graph.initializer = vec![
            initializer("w", D::Int8, &[3, 2, 3, 3], &w_bytes),
            initializer("w_zp", D::Int8, &[3], &[2, 0, 253]),
        ];
        graph.input = vec![value("x", D::Float, &[1, 2, 5, 5])];
        graph.output = vec![value("y", D::Int32, &[1, 3, 3, 3])];
        let mut rewritten = original.clone();
        let graph = rewritten.graph.as_mut().unwrap();
        assert_eq!(integer_products_as_float(graph), 1);
        assert!(graph.node.iter().any(|n| n.op_type == "Conv"));
        assert!(graph.node.iter().all(|n| n.op_type != "ConvInteger"));
        let run = |proto: &pb::ModelProto, x: &[f32]| -> Vec<i32> {
            run_one(proto, Tensor::from_shape(&[1, 2, 5, 5], x).unwrap())
        };
        for seed in 0..20 {
            // Positive-only inputs make the zero point 0; mixed ones do not,
            // which is what padding must get right.
            let mut x = spread(50, seed, 3.0);
            if seed % 2 == 0 {
                x.iter_mut().for_each(|v| *v = v.abs());
            }
            assert_eq!(run(&rewritten, &x), run(&original, &x), "seed {seed}");
        }
        // Read only as float, a convolution still casts to int32: tract
        // would fold a per-channel Mul or Add right after a Conv into its
        // kernel or bias, changing the sums.
        let graph = original.graph.as_mut().unwrap();
        graph.node.push(node("Cast", &["y"], "yf", Some(D::Float)));
        graph.output = vec![value("yf", D::Float, &[1, 3, 3, 3])];
        assert_eq!(integer_products_as_float(graph), 1);
        let to_int32 =
            |n: &pb::NodeProto| n.op_type == "Cast" && n.attribute[0].i == D::Int32 as i64;
        assert!(graph.node.iter().any(to_int32));
    }

    /// x float → QuantizeLinear → `op` (QLinearMatMul or QLinearConv) with
    /// per-output weight scales → y uint8.
    fn qlinear_model(conv: bool) -> (pb::ModelProto, Vec<usize>) {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (x_dims, w_dims, y_dims): (Vec<i64>, Vec<i64>, Vec<i64>) = if conv {
            (vec![1, 2, 6, 6], vec![4, 2, 3, 3], vec![1, 4, 6, 6])
        } else {
            (vec![5, 40], vec![40, 4], vec![5, 4])
        };
        let w = weights(w_dims.iter().product::<i64>() as usize, 3);
        let w_scales = [0.011f32, 0.017, 0.0093, 0.021];
        let mut initializers = vec![
            initializer("xs", D::Float, &[], &f32s(&[0.047])),
            initializer("xz", D::Uint8, &[], &[131]),
            initializer(
                "w",
                D::Int8,
                &w_dims,
                &w.iter().map(|v| *v as u8).collect::<Vec<_>>(),
            ),
            initializer("ws", D::Float, &[4], &f32s(&w_scales)),
            initializer("wz", D::Int8, &[4], &[0, 0, 0, 0]),
            initializer("ys", D::Float, &[], &f32s(&[0.31])),
            initializer("yz", D::Uint8, &[], &[97]),
        ];
        let mut inputs: Vec<String> = ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
            .map(String::from)
            .to_vec();
        let mut attribute = Vec::new();
        if conv {
            let bias: Vec<u8> = [-900i32, 35, 1200, -7]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            initializers.push(initializer("bias", D::Int32, &[4], &bias));
            inputs.push("bias".into());
            attribute = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])];
        }
        let proto = graph_model(pb::GraphProto {
            node: vec![
                pb::NodeProto {
                    op_type: "QuantizeLinear".into(),
                    input: vec!["x".into(), "xs".into(), "xz".into()],
                    output: vec!["xq".into()],
                    ..Default::default()
                },
                pb::NodeProto {
                    op_type: if conv { "QLinearConv" } else { "QLinearMatMul" }.into(),
                    input: inputs,
                    output: vec!["y".into()],
                    attribute,
                    ..Default::default()
                },
            ],
            initializer: initializers,
            input: vec![value("x", D::Float, &x_dims)],
            output: vec![value("y", D::Uint8, &y_dims)],
            ..Default::default()
        });
        (proto, x_dims.iter().map(|d| *d as usize).collect())
    }

    fn run_u8(proto: &pb::ModelProto, dims: &[usize], x: &[f32]) -> Vec<u8> {
        run_one(proto, Tensor::from_shape(dims, x).unwrap())
    }

    #[test]
    fn qlinear_products_run_in_float_within_one_step() {
        for conv in [false, true] {
            let (original, dims) = qlinear_model(conv);
            let mut rewritten = original.clone();
            let graph = rewritten.graph.as_mut().unwrap();
            assert_eq!(integer_products_as_float(graph), 1, "conv {conv}");
            assert!(graph.node.iter().all(|n| !n.op_type.starts_with("QLinear")));
            let (mut total, mut differing, mut saturated) = (0, 0, 0);
            for seed in 0..30 {
                let x = spread(dims.iter().product(), seed, 4.0);
                let want = run_u8(&original, &dims, &x);
                let got = run_u8(&rewritten, &dims, &x);
                for (w, g) in want.iter().zip(&got) {
                    assert!(w.abs_diff(*g) <= 1, "conv {conv} seed {seed}: {w} vs {g}");
                    differing += usize::from(w != g);
                    saturated += usize::from(*w == 0 || *w == 255);
                }
                total += want.len();
            }
            // Differences only at rounding ties: rare.
            assert!(
                differing * 100 <= total,
                "conv {conv}: {differing} of {total}"
            );
            // The outputs span the range rather than saturating.
            assert!(
                saturated * 4 < total,
                "conv {conv}: {saturated} of {total} saturated"
            );
        }
    }

    #[test]
    fn a_qlinear_product_with_runtime_scales_keeps_the_integer_path() {
        let (mut proto, _) = qlinear_model(false);
        let graph = proto.graph.as_mut().unwrap();
        graph.initializer.retain(|t| t.name != "ys");
        graph.input.push(value("ys", D::Float, &[]));
        assert_eq!(integer_products_as_float(graph), 0);
        // And no float weight is left behind for it.
        assert!(graph.initializer.iter().all(|t| !t.name.ends_with("::f32")));
    }

    #[test]
    fn a_weight_a_subgraph_also_reads_is_kept() {
        let mut proto = model([0, 0]);
        let graph = proto.graph.as_mut().unwrap();
        let body = pb::GraphProto {
            node: vec![node("Identity", &["b"], "b_copy", None)],
            ..Default::default()
        };
        graph.node.push(pb::NodeProto {
            op_type: "If".into(),
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(body),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(integer_products_as_float(graph), 1);
        assert!(graph.initializer.iter().any(|t| t.name == "b"));
    }
}
