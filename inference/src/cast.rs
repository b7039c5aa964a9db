//! f32 → int32 → f32 cast pairs as one pass over the tensor, in place.
//!
//! A graph that casts an f32 to int32 and, through nothing but axis
//! changes, straight back to f32 makes two passes over the tensor, each
//! into a new buffer. The int8-as-float rewrite (`rewrite.rs`) leaves such
//! pairs after every convolution and where a product's int32 is read other
//! than by a cast to float right away (it drops the other matrix products'
//! casts: before that, 121 casts took 3–4.7 ms of int8 MiniLM). This computes `(x as i32) as f32` per element,
//! which is what tract's two casts compute (saturating, NaN to 0) for any
//! input, so the pair can go without proving the values are integers. The
//! result gets natural strides (see [`crate::inplace`]), as the cast's
//! fresh buffer had; without them tract's element-wise chains downstream
//! fall to a per-element path.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::{AxisOp, IntoShape};

/// Replaces every `Cast` to int32 of an f32 that reaches a `Cast` back to
/// f32 through nothing but axis and shape changes (a convolution's output
/// is reshaped in between), each with one reader and none a model output,
/// with the same axis changes on the f32 followed by [`CastThroughI32`].
/// Returns how many pairs.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    let outputs: std::collections::HashSet<OutletId> =
        model.output_outlets()?.iter().copied().collect();
    let mut swapped = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let to_i32 = node
            .op_as::<Cast>()
            .is_some_and(|c| c.to == i32::datum_type());
        if !to_i32 || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        // The axis ops between this cast and the cast back.
        let (mut between, mut last) = (Vec::new(), id);
        let back = loop {
            if outputs.contains(&OutletId::new(last, 0)) {
                break None;
            }
            let Some(next) = model.single_succ(last)? else {
                break None;
            };
            if next
                .op_as::<Cast>()
                .is_some_and(|c| c.to == f32::datum_type())
            {
                break Some(next.id);
            }
            if !(next.op_is::<AxisOp>() || next.op_is::<IntoShape>()) || next.outputs.len() != 1 {
                break None;
            }
            between.push(next.id);
            last = next.id;
        };
        let Some(back) = back else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let mut wire = patch.tap_model(model, node.inputs[0])?;
        for axis_op in between {
            let axis_op = model.node(axis_op);
            let name = format!("{}.f32", axis_op.name);
            wire = patch.wire_node(name, axis_op.op.clone(), &[wire])?[0];
        }
        let name = format!("{}.through_i32", node.name);
        wire = patch.wire_node(name, CastThroughI32, &[wire])?[0];
        patch.shunt_outside(model, OutletId::new(back, 0), wire)?;
        patch.apply(model)?;
        swapped += 1;
    }
    Ok(swapped)
}

/// `(x as i32) as f32` for every element: an f32 → int32 → f32 cast pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CastThroughI32;

impl Op for CastThroughI32 {
    fn name(&self) -> StaticName {
        "CastThroughI32".into()
    }

    op_as_typed_op!();
}

impl EvalOp for CastThroughI32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(tvec!(crate::inplace::map_in_place(
            inputs.remove(0),
            through_i32
        )?))
    }
}

/// `x as i32 as f32` in f32 arithmetic the compiler vectorises (Rust's
/// saturating float-to-int conversion does not: 0.9 ns per element against
/// 0.6 here). For |x| < 2^23, adding and subtracting 2^23 rounds |x| to an
/// integer, one less where that rounded up: the truncation. Larger |x| are
/// integers already and saturate at ±2^31 (`i32::MAX as f32` is 2^31), NaN
/// is 0, and a zero result is +0, as the integer's is. Checked equal to the
/// cast for all 2^32 inputs once; the tests sweep a sample of them.
#[inline(always)]
fn through_i32(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    const TWO_31: f32 = 2_147_483_648.0;
    let a = x.abs();
    let rounded = (a + TWO_23) - TWO_23;
    let truncated = if rounded > a { rounded - 1.0 } else { rounded };
    let t = if a < TWO_23 { truncated } else { a.min(TWO_31) };
    let t = if x < 0.0 && t != 0.0 { -t } else { t };
    if x.is_nan() { 0.0 } else { t }
}

impl TypedOp for CastThroughI32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::onnx;
    use tract_onnx::pb;

    /// x → Cast(int32) → Cast(float) → y; x → Cast(int64) → z (a second
    /// reader of x); -x → Cast(int32) → w → Cast(float) → v, where w is a
    /// model output, so that pair must stay; |x| → Cast(int32) → Reshape →
    /// Cast(float) → u, a pair with an axis change between; and two such
    /// chains that must stay, their Reshape a model output or read twice.
    fn model() -> pb::ModelProto {
        use pb::tensor_proto::DataType as D;
        let cast = |input: &str, output: &str, to: D| pb::NodeProto {
            op_type: "Cast".into(),
            input: vec![input.into()],
            output: vec![output.into()],
            attribute: vec![pb::AttributeProto {
                name: "to".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: to as i64,
                ..Default::default()
            }],
            ..Default::default()
        };
        let unary = |op: &str, input: &str, output: &str| pb::NodeProto {
            op_type: op.into(),
            input: vec![input.into()],
            output: vec![output.into()],
            ..Default::default()
        };
        let reshape = |input: &str, output: &str| pb::NodeProto {
            op_type: "Reshape".into(),
            input: vec![input.into(), "shape".into()],
            output: vec![output.into()],
            ..Default::default()
        };
        crate::rewrite::tests::graph_model(pb::GraphProto {
            node: vec![
                cast("x", "i", D::Int32),
                cast("i", "y", D::Float),
                cast("x", "z", D::Int64),
                unary("Neg", "x", "minus_x"),
                cast("minus_x", "w", D::Int32),
                cast("w", "v", D::Float),
                unary("Abs", "x", "abs_x"),
                cast("abs_x", "abs_i", D::Int32),
                reshape("abs_i", "reshaped"),
                cast("reshaped", "u", D::Float),
                // Pairs that must stay: the axis op in between is a model
                // output, or has a second reader.
                unary("Relu", "x", "relu_x"),
                cast("relu_x", "relu_i", D::Int32),
                reshape("relu_i", "relu_r"),
                cast("relu_r", "t", D::Float),
                unary("Ceil", "x", "ceil_x"),
                cast("ceil_x", "ceil_i", D::Int32),
                reshape("ceil_i", "ceil_r"),
                cast("ceil_r", "s", D::Float),
                cast("ceil_r", "s64", D::Int64),
            ],
            initializer: vec![pb::TensorProto {
                name: "shape".into(),
                data_type: D::Int64 as i32,
                dims: vec![2],
                raw_data: [9i64, 4].iter().flat_map(|d| d.to_le_bytes()).collect(),
                ..Default::default()
            }],
            input: vec![crate::rewrite::tests::value("x", D::Float, &[4, 9])],
            output: crate::rewrite::tests::untyped(&[
                "y", "z", "w", "v", "u", "relu_r", "t", "s", "s64",
            ]),
            ..Default::default()
        })
    }

    #[test]
    fn the_f32_arithmetic_equals_the_two_casts_bit_for_bit() {
        let check = |bits: u32| {
            let x = f32::from_bits(bits);
            assert_eq!(
                through_i32(x).to_bits(),
                (x as i32 as f32).to_bits(),
                "{x:e} ({bits:#010x})"
            );
        };
        // A sweep over every sign and exponent, and every bit pattern around
        // the edges: zeros, ±1, ±2^23, ±2^31, infinities and NaN.
        for bits in (0..=u32::MAX).step_by(4099) {
            check(bits);
        }
        for edge in [0f32, 1.0, 8_388_608.0, 2_147_483_648.0, f32::INFINITY] {
            for sign in [0, 1 << 31] {
                let centre = (edge.to_bits() | sign) as i64;
                for bits in centre - 4096..=centre + 4096 {
                    check(bits.clamp(0, u32::MAX as i64) as u32);
                }
            }
        }
    }

    #[test]
    fn a_cast_pair_through_int32_is_one_pass_with_identical_outputs() {
        let optimized = onnx()
            .model_for_proto_model(&model())
            .unwrap()
            .into_optimized()
            .unwrap();
        let mut swapped = optimized.clone();
        assert_eq!(swap_in(&mut swapped).unwrap(), 2);
        let names = crate::rewrite::tests::op_names(&swapped);
        assert!(names.contains(&"CastThroughI32".to_string()), "{names:?}");
        // Fractions both ways, halves, both zeros, NaN, the edges of int32
        // and beyond, infinities.
        let mut x: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.75).collect();
        x.extend([
            f32::NAN,
            -0.0,
            0.0,
            2.5,
            -2.5,
            2_147_483_520.0,
            -2_147_483_648.0,
            3.0e9,
            -3.0e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            16_777_217.0,
        ]);
        let run = |m: TypedModel| {
            m.into_runnable()
                .unwrap()
                .run(tvec!(
                    Tensor::from_shape(&[4, 9], &x).unwrap().into_tvalue()
                ))
                .unwrap()
        };
        let want = run(optimized);
        let got = run(swapped);
        assert_eq!(want.len(), 9);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.datum_type(), g.datum_type());
            assert_eq!(w.as_bytes(), g.as_bytes(), "outputs differ");
        }
    }
}
