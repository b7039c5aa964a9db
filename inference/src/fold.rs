//! Integer products over a batch of sequences as one matrix product.
//!
//! A transformer's dense layer multiplies an activation `[batch, seq, k]`
//! by a weight `[k, n]`. tract folds `batch` and `seq` into one axis of the
//! matrix product for float products, but its pass takes two-input
//! `EinSum`s only, and a quantized product (`MatMulInteger`,
//! `QLinearMatMul`: an `EinSum` with nine inputs, the operands and their
//! zero points and scales) keeps `batch` as an outer loop: a kernel call and
//! a packing of the activation per sequence, each `seq` columns wide. At 12
//! tokens that is 12 of the int8 kernel's 16 columns, and int8 MiniLM at
//! batch 32 spent 87 ms in its products (47 GMAC/s) where one product per
//! layer over `batch · seq` columns runs at tract's full rate.
//!
//! This pass, run between declutter and optimise, reshapes such a product's
//! activation to `[batch · seq, k]`, multiplies, and reshapes the output back
//! to `[batch, seq, n]`. Every output element is the same integer sum and
//! the same requantization of it as before, so outputs are bit-identical.
//! It applies when the folded axes are consecutive in the activation and in
//! the output, in the same order, absent from the weight and from every
//! zero point and scale (a per-tensor activation zero point, as dynamic
//! quantization writes), and at least two of them may be longer than 1.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// Folds the batch axes of each quantized product of a decluttered model
/// into one. Returns how many products it folded.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        if op.q_params.is_none() || node.inputs.len() != 9 {
            continue;
        }
        let Some(group) = foldable(model, node, op)? else {
            continue;
        };
        let op = op.clone();
        fold(model, id, op, &group)?;
        folded += 1;
    }
    if folded > 0 {
        model.compact()?;
    }
    Ok(folded)
}

/// The axes of node `node`'s product that can be folded into one: the
/// longest run of at least two consecutive activation axes that are also
/// consecutive, in the same order, in the output, and appear in no other
/// input.
fn foldable(model: &TypedModel, node: &TypedNode, op: &EinSum) -> TractResult<Option<Vec<char>>> {
    let facts = model.node_input_facts(node.id)?;
    if facts.iter().any(|f| f.is_exotic()) {
        return Ok(None);
    }
    let batch_like = |axis: &Axis| {
        axis.inputs[0].len() == 1
            && axis.inputs[1..].iter().all(|i| i.is_empty())
            && axis.outputs[0].len() == 1
    };
    let a_shape = &facts[0].shape;
    let mut best: Vec<char> = vec![];
    let mut run: Vec<&Axis> = vec![];
    for axis in op.axes.axes(InOut::In(0)) {
        let extends = batch_like(axis)
            && run
                .last()
                .is_none_or(|prev| prev.outputs[0][0] + 1 == axis.outputs[0][0]);
        if !extends {
            run.clear();
        }
        if batch_like(axis) {
            run.push(axis);
        }
        let long = run
            .iter()
            .filter(|a| a_shape[a.inputs[0][0]].as_i64() != Some(1))
            .count();
        if long >= 2 && run.len() > best.len() {
            best = run.iter().map(|a| a.repr).collect();
        }
    }
    Ok((!best.is_empty()).then_some(best))
}

/// Rewires node `id` (`op`) as a reshape of its activation folding `group`, the
/// product with the group's first axis standing for all of it, and a
/// reshape of the output back.
fn fold(model: &mut TypedModel, id: usize, op: EinSum, group: &[char]) -> TractResult<()> {
    let node = model.node(id);
    let name = node.name.clone();
    let a_shape = model.outlet_fact(node.inputs[0])?.shape.clone();
    let out_shape = model.outlet_fact(OutletId::new(id, 0))?.shape.clone();
    let first = op.axes.axis(group[0])?;
    let (a_at, out_at) = (first.inputs[0][0], first.outputs[0][0]);
    let dims = |shape: &ShapeFact, at: usize| -> TVec<TDim> {
        shape.iter().skip(at).take(group.len()).cloned().collect()
    };
    let (a_dims, out_dims) = (dims(&a_shape, a_at), dims(&out_shape, out_at));
    let merged: TDim = a_dims.iter().product();
    let mut axes = op.axes.clone();
    for repr in &group[1..] {
        axes = axes.remove_axis(*repr)?;
    }
    let folded = EinSum { axes, ..op };

    let mut patch = TypedModelPatch::default();
    let mut taps = patch.taps(model, &node.inputs)?;
    taps[0] = patch.wire_node(
        format!("{name}.fold"),
        AxisOp::Reshape(a_at, a_dims, tvec![merged.clone()]),
        &[taps[0]],
    )?[0];
    let product = patch.wire_node(&name, folded, &taps)?[0];
    let out = patch.wire_node(
        format!("{name}.unfold"),
        AxisOp::Reshape(out_at, tvec![merged], out_dims),
        &[product],
    )?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), out)?;
    patch.apply(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{
        decluttered_and_swapped, graph_model, initializer, onnx, untyped, value_with, values,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as V;

    /// `x` `[N, S, k]` f32 through `DynamicQuantizeLinear` and a
    /// `MatMulInteger` by a `[k, n]` int8 weight (`qlinear`: a
    /// `QLinearMatMul` to uint8 instead, as static quantization writes it).
    fn model(k: usize, n: usize, qlinear: bool, seed: u64) -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let mut quantize = node("DynamicQuantizeLinear", &["x"], "xq");
        quantize.output = vec!["xq".into(), "x_scale".into(), "x_zp".into()];
        let product = if qlinear {
            node(
                "QLinearMatMul",
                &[
                    "xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
                ],
                "y",
            )
        } else {
            node("MatMulInteger", &["xq", "w", "x_zp", "w_zp"], "y")
        };
        let w: Vec<u8> = values(k * n, seed)
            .iter()
            .map(|v| (v * 120.0) as i8 as u8)
            .collect();
        let scalar = |name: &str, v: f32| initializer(name, D::Float, &[], &v.to_le_bytes());
        let dims = [
            V::DimParam("N".into()),
            V::DimParam("S".into()),
            V::DimValue(k as i64),
        ];
        graph_model(pb::GraphProto {
            node: vec![quantize, product],
            initializer: vec![
                initializer("w", D::Int8, &[k as i64, n as i64], &w),
                initializer("w_zp", D::Int8, &[], &[3]),
                scalar("w_scale", 0.01),
                scalar("y_scale", 0.05),
                initializer("y_zp", D::Uint8, &[], &[120]),
            ],
            input: vec![value_with("x", D::Float, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// Ranks of the quantized products' outputs after [`swap_in`], tract's
    /// output and ours for `x`.
    fn both(proto: &pb::ModelProto, x: &Tensor) -> (Vec<usize>, Tensor, Tensor) {
        let (typed, ours) = decluttered_and_swapped(proto, swap_in);
        let ranks = ours
            .nodes()
            .iter()
            .filter(|n| n.op_as::<EinSum>().is_some_and(|e| e.q_params.is_some()))
            .map(|n| ours.outlet_fact(OutletId::new(n.id, 0)).unwrap().rank())
            .collect();
        let run = |mut m: TypedModel| {
            m.optimize().unwrap();
            crate::rewrite::tests::run_on(m, x)
        };
        (ranks, run(typed), run(ours))
    }

    fn input(batch: usize, seq: usize, k: usize, seed: u64) -> Tensor {
        Tensor::from_shape(&[batch, seq, k], &values(batch * seq * k, seed)).unwrap()
    }

    #[test]
    fn a_batch_of_sequences_is_one_product_with_identical_outputs() {
        for qlinear in [false, true] {
            let proto = model(24, 20, qlinear, 1);
            for (batch, seq) in [(1, 1), (1, 9), (4, 3), (5, 12)] {
                let (ranks, want, got) = both(&proto, &input(batch, seq, 24, 2));
                assert_eq!(ranks, [2], "qlinear {qlinear}");
                assert_eq!(got.shape(), [batch, seq, 20]);
                assert_eq!(
                    want.as_bytes(),
                    got.as_bytes(),
                    "qlinear {qlinear} {batch}x{seq}"
                );
            }
        }
    }

    #[test]
    fn a_product_with_one_batch_axis_or_a_unit_one_is_left_alone() {
        let w: Vec<u8> = vec![1; 8 * 4];
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        for dims in [
            vec![V::DimParam("N".into()), V::DimValue(8)],
            vec![V::DimValue(1), V::DimParam("S".into()), V::DimValue(8)],
        ] {
            let proto = graph_model(pb::GraphProto {
                node: vec![node("MatMulInteger", &["x", "w"], "y")],
                initializer: vec![initializer("w", D::Int8, &[8, 4], &w)],
                input: vec![value_with("x", D::Uint8, &dims)],
                output: untyped(&["y"]),
                ..Default::default()
            });
            let mut typed = onnx()
                .model_for_proto_model(&proto)
                .unwrap()
                .into_typed()
                .unwrap();
            typed.declutter().unwrap();
            assert_eq!(swap_in(&mut typed).unwrap(), 0, "{dims:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_batch_gives_tracts_outputs(
            batch in 1usize..6,
            seq in 1usize..20,
            k in 1usize..40,
            n in 1usize..40,
            qlinear in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let (ranks, want, got) = both(&model(k, n, qlinear, seed), &input(batch, seq, k, seed));
            prop_assert_eq!(ranks, [2]);
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }
    }
}
