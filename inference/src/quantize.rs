//! `DynamicQuantizeLinear` (float to uint8 with a scale and zero point
//! computed from the tensor itself) in loops the compiler vectorises.
//!
//! tract's own operator makes two scalar passes and calls libm's
//! `roundevenf` per element (12–15 ns per element here, the largest cost of
//! a dynamically quantized MiniLM once its matrix products are fast). This
//! one computes exactly the same three outputs, bit for bit, and is swapped
//! in for tract's at load (the load matches tract's operator by name: its
//! type is private).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;

/// The name tract gives its typed `DynamicQuantizeLinear`.
const TRACT_OP: &str = "DynamicQuantizeLinearU8";

/// Replaces every tract `DynamicQuantizeLinearU8` of a typed model with
/// [`FastDynamicQuantize`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> usize {
    let mut swapped = 0;
    for node in model.nodes_mut() {
        if node.op.name() == TRACT_OP {
            node.op = Box::new(FastDynamicQuantize);
            swapped += 1;
        }
    }
    swapped
}

/// `DynamicQuantizeLinear` to uint8: outputs the quantized tensor, the scale
/// (f32 scalar) and the zero point (u8 scalar), as ONNX defines them and as
/// tract computes them (ties to even; NaN inputs ignored by the range and
/// quantized to the zero point).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct FastDynamicQuantize;

impl Op for FastDynamicQuantize {
    fn name(&self) -> StaticName {
        "FastDynamicQuantizeU8".into()
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for FastDynamicQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].cast_to::<f32>()?;
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut quantized = Tensor::zero::<u8>(input.shape())?;
        let (scale, zero_point) =
            dynamic_quantize(xs, quantized.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(
            quantized.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

/// `DynamicQuantizeLinear` of `xs` into `ys`: returns the scale and zero
/// point. On this CPU's widest vector instructions.
fn dynamic_quantize(xs: &[f32], ys: &mut [u8]) -> (f32, u8) {
    crate::simd::vectorize(
        #[inline(always)]
        move || {
            let (scale, zero_point) = scale_and_zero_point(xs);
            quantize(xs, scale, zero_point, ys);
            (scale, zero_point)
        },
    )
}

impl TypedOp for FastDynamicQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut quantized = inputs[0].clone();
        quantized.datum_type = u8::datum_type();
        Ok(tvec!(quantized, f32::fact([0; 0]), u8::fact([0; 0])))
    }

    as_op!();
}

/// Values per step of the quantiser's loops: two AVX-512 vectors (four
/// AVX2 ones), so the min/max folds have independent chains in flight.
/// (8 took 2.4 µs for the dynamic digits MLP's 2 048 activations at batch
/// 32, 32 takes 1.9.)
const LANES: usize = 32;

/// The range of `xs` widened to include 0 (NaN ignored), then the scale and
/// zero point exactly as tract computes them.
#[inline(always)]
fn scale_and_zero_point(xs: &[f32]) -> (f32, u8) {
    // Lane-wise folds with the same strict comparisons as a sequential
    // fold: min and max over a set that starts at 0 and never takes a NaN
    // do not depend on the order.
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let v = chunk[i];
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for v in lo.iter().chain(rest) {
        min = if *v < min { *v } else { min };
    }
    for v in hi.iter().chain(rest) {
        max = if *v > max { *v } else { max };
    }
    let scale = (max - min) / u8::MAX as f32;
    let zero_point = (-min / scale)
        .round_ties_even()
        .max(u8::MIN as f32)
        .min(u8::MAX as f32) as u8;
    (scale, zero_point)
}

/// 1.5·2^23: any f32 in [2^23, 2^24) is an integer, so adding it to an
/// integer-valued |v| ≤ 2^22 puts v, two's complement, in the low mantissa
/// bits.
const ROUND: f32 = 12_582_912.0;

/// An integer-valued level in -128..=255 as its low byte (reinterpret as
/// `i8` for a signed grid). Rust's saturating `as u8` from f32 does not
/// vectorise (half the quantiser's time); this is an add and a bit cast.
#[inline(always)]
fn level_byte(level: f32) -> u8 {
    (level + ROUND).to_bits() as u8
}

/// `clamp(round_ties_even(v) + zp, lo, hi)` for a zero point within ±255,
/// NaN to the zero point, as an integer-valued f32: what tract computes
/// through an i32 (but for |v| ≥ 2^31, where tract's addition overflows and
/// this saturates).
#[inline(always)]
fn to_level(v: f32, zp: f32, lo: f32, hi: f32) -> f32 {
    // Adding and subtracting 1.5·2^23 rounds any |v| ≤ 2^22 to an integer,
    // ties to even (the FPU's default mode); clamping to ±512 first keeps v
    // in that range and saturates exactly as the i32 path does, since any
    // |v| ≥ 512 ends at lo or hi once a zero point within ±255 is added.
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-512.0, 512.0)
    };
    (((v + ROUND) - ROUND) + zp).clamp(lo, hi)
}

/// `clamp(round_ties_even(x / scale) + zero_point, 0, 255)`, NaN to the
/// zero point: what tract computes through an i32, done in f32. (One
/// degenerate case differs: when every |x| is below about 1e-43 the scale
/// underflows to 0, x / scale is infinite, and tract's i32 addition
/// overflows; this saturates, as ONNX defines.)
#[inline(always)]
fn quantize(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let zp = zero_point as f32;
    let one = |x: f32| -> u8 { level_byte(to_level(x / scale, zp, 0.0, 255.0)) };
    let mut xs_chunks = xs.chunks_exact(LANES);
    let mut ys_chunks = ys.chunks_exact_mut(LANES);
    for (x, y) in (&mut xs_chunks).zip(&mut ys_chunks) {
        for i in 0..LANES {
            y[i] = one(x[i]);
        }
    }
    for (x, y) in xs_chunks.remainder().iter().zip(ys_chunks.into_remainder()) {
        *y = one(*x);
    }
}

/// Replaces tract's `QuantizeLinear` with one scale and zero point on f32
/// (`QuantizeLinearU8`/`I8`, a scalar pass with a software rounding call per
/// element: 44 % of the QDQ digits MLP at batch 32) with [`FastQuantize`];
/// where its only reader is a `DequantizeLinear` (the pair a QDQ model puts
/// before every float operator), the pair becomes one pass that rounds to
/// the grid and back. Same values bit for bit but in one degenerate case
/// (see [`FastQuantize`]). Returns how many quantizers were replaced.
pub(crate) fn swap_in_quantizers(model: &mut TypedModel) -> TractResult<usize> {
    let outputs: std::collections::HashSet<OutletId> =
        model.output_outlets()?.iter().copied().collect();
    let mut swapped = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(mut fast) = FastQuantize::of(&*node.op) else {
            continue;
        };
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        let pair = model
            .single_succ(id)?
            .filter(|_| !outputs.contains(&OutletId::new(id, 0)))
            .and_then(|dq| Some((dq.id, dq.op_as::<DequantizeLinearF32>()?)));
        if let Some((dq, dequantize)) = pair {
            fast.dequantize = Some((dequantize.scale, dequantize.zero_point));
            let mut patch = TypedModelPatch::default();
            let input = patch.tap_model(model, node.inputs[0])?;
            let fused = patch.wire_node(format!("{}.to_grid", node.name), fast, &[input])?[0];
            patch.shunt_outside(model, OutletId::new(dq, 0), fused)?;
            patch.apply(model)?;
        } else {
            model.node_mut(id).op = Box::new(fast);
        }
        swapped += 1;
    }
    model.compact()?;
    Ok(swapped)
}

/// Removes each fused quantize-dequantize pair whose input can only hold
/// values of an earlier pair's grid (through ops that only move or pick
/// values: axis changes, a max pool without padding) when it maps every
/// value of that grid to itself, bit for bit: checked over all of the
/// grid's levels at load. A QDQ model re-quantizes after every `MaxPool`
/// and `Flatten` with the scale it had before (digits CNN: two of six
/// pairs). Returns how many went.
pub(crate) fn drop_repeated_fake_quants(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    let outputs: std::collections::HashSet<OutletId> =
        model.output_outlets()?.iter().copied().collect();
    let mut dropped = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pair) = node.op_as::<FastQuantize>().cloned() else {
            continue;
        };
        let Some(to_grid) = pair.to_grid() else {
            continue;
        };
        if outputs.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let mut source = node.inputs[0];
        let earlier = loop {
            let upstream = model.node(source.node);
            if let Some(pair) = upstream.op_as::<FastQuantize>() {
                break pair.grid();
            }
            let picks = upstream.op_is::<AxisOp>()
                || upstream
                    .op_as::<MaxPool>()
                    .is_some_and(crate::maxpool::picks_input_values);
            if !picks || upstream.inputs.len() != 1 {
                break None;
            }
            source = upstream.inputs[0];
        };
        // Finite, so that a max pool picks one of them (it skips NaN).
        let idempotent = earlier.is_some_and(|mut grid| {
            grid.all(|v| v.is_finite() && to_grid(v).to_bits() == v.to_bits())
        });
        if !idempotent {
            continue;
        }
        if let Some(patch) = TypedModelPatch::shunt_one_op(model, model.node(id))? {
            patch.apply(model)?;
            dropped += 1;
        }
    }
    model.compact()?;
    Ok(dropped)
}

/// `QuantizeLinear` to int8 or uint8 with one scale and zero point, as tract
/// computes it (`clamp(round_ties_even(x · (1 / y_scale)) + zero_point)`,
/// NaN to the zero point) in a loop the compiler vectorises, optionally
/// dequantized straight back (`(q - zero_point) · scale` in f32). One
/// degenerate case differs: where |x / y_scale| reaches 2^31 (an infinite
/// input), tract's i32 addition overflows; this saturates, as ONNX defines.
#[derive(Debug, Clone, PartialEq)]
struct FastQuantize {
    /// What tract multiplies by: 1 / y_scale.
    multiplier: f32,
    zero_point: i32,
    unsigned: bool,
    /// The scale and zero point of a `DequantizeLinear` fused after it.
    dequantize: Option<(f32, i32)>,
}

impl Eq for FastQuantize {}

impl FastQuantize {
    fn of(op: &dyn TypedOp) -> Option<FastQuantize> {
        use tract_onnx::tract_core::ops::quant::{QuantizeLinearI8, QuantizeLinearU8};
        let mini = &op.downcast_ref::<ElementWiseOp>()?.0;
        let (multiplier, zero_point, unsigned) = match mini.downcast_ref::<QuantizeLinearU8>() {
            Some(q) => (q.scale, i32::from(q.zero_point), true),
            None => {
                let q = mini.downcast_ref::<QuantizeLinearI8>()?;
                (q.scale, i32::from(q.zero_point), false)
            }
        };
        Some(FastQuantize {
            multiplier,
            zero_point,
            unsigned,
            dequantize: None,
        })
    }

    fn output_type(&self) -> DatumType {
        match (self.dequantize, self.unsigned) {
            (Some(_), _) => f32::datum_type(),
            (None, true) => u8::datum_type(),
            (None, false) => i8::datum_type(),
        }
    }

    /// The lowest and highest level.
    fn range(&self) -> (i32, i32) {
        if self.unsigned { (0, 255) } else { (-128, 127) }
    }

    /// The quantized level of x, as an integer-valued f32.
    fn level(&self) -> impl Fn(f32) -> f32 {
        let (lo, hi) = self.range();
        let (zp, multiplier) = (self.zero_point as f32, self.multiplier);
        #[inline(always)]
        move |x: f32| to_level(x * multiplier, zp, lo as f32, hi as f32)
    }

    /// For a fused pair: x rounded to the grid and dequantized.
    fn to_grid(&self) -> Option<impl Fn(f32) -> f32> {
        let (scale, zero_point) = self.dequantize?;
        let (level, zp) = (self.level(), zero_point as f32);
        Some(
            #[inline(always)]
            move |x| (level(x) - zp) * scale,
        )
    }

    /// For a fused pair: every value [`Self::to_grid`] can give, computed
    /// as it computes them.
    fn grid(&self) -> Option<impl Iterator<Item = f32>> {
        let (scale, zero_point) = self.dequantize?;
        let (lo, hi) = self.range();
        let zp = zero_point as f32;
        Some((lo..=hi).map(move |level| (level as f32 - zp) * scale))
    }
}

/// A tensor of `shape` whose elements are `f` of `xs`'.
#[inline(always)]
fn map_f32<T: Datum + tract_num_traits::Zero>(
    shape: &[usize],
    xs: &[f32],
    f: impl Fn(f32) -> T,
) -> TractResult<Tensor> {
    let mut out = Tensor::zero::<T>(shape)?;
    let mut view = out.try_as_plain_ram_mut()?;
    for (x, y) in xs.iter().zip(view.as_slice_mut::<T>()?) {
        *y = f(*x);
    }
    Ok(out)
}

impl Op for FastQuantize {
    fn name(&self) -> StaticName {
        if self.dequantize.is_some() {
            "FastQuantizeDequantize".into()
        } else {
            "FastQuantizeLinear".into()
        }
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for FastQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(tvec!(self.apply(inputs.remove(0))?))
    }
}

impl FastQuantize {
    /// The op on its f32 input.
    fn apply(&self, input: TValue) -> TractResult<TValue> {
        if let Some(to_grid) = self.to_grid() {
            // f32 to f32: written over the input, which saves a buffer.
            return crate::inplace::map_in_place(input, to_grid);
        }
        let level = self.level();
        let unsigned = self.unsigned;
        let xs = input.try_as_plain_ram()?;
        let xs = xs.as_slice::<f32>()?;
        let shape = input.shape();
        let output = crate::simd::vectorize(
            #[inline(always)]
            move || {
                if unsigned {
                    map_f32(shape, xs, |x| level_byte(level(x)))
                } else {
                    map_f32(shape, xs, |x| level_byte(level(x)) as i8)
                }
            },
        )?;
        Ok(output.into_tvalue())
    }
}

impl TypedOp for FastQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::onnx;
    use proptest::prelude::*;

    /// tract's own definition, written out scalar.
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let (min, max) = xs.iter().fold((0f32, 0f32), |(lo, hi), &v| {
            if v < lo {
                (v, hi)
            } else if v > hi {
                (lo, v)
            } else {
                (lo, hi)
            }
        });
        let scale = (max - min) / 255.0;
        // As tract writes it: max/min turn a NaN into 0, clamp would not.
        #[allow(clippy::manual_clamp)]
        let zp = (-min / scale).round_ties_even().max(0.0).min(255.0) as u8;
        let ys = xs
            .iter()
            .map(|x| {
                ((x / scale).round_ties_even() as i32)
                    .saturating_add(zp as i32)
                    .clamp(0, 255) as u8
            })
            .collect();
        (ys, scale, zp)
    }

    /// The op's pass: on this CPU's widest vector instructions, or on the
    /// baseline ones the crate is built for.
    fn fast(xs: &[f32], widest: bool) -> (Vec<u8>, f32, u8) {
        let mut ys = vec![0; xs.len()];
        let (scale, zp) = if widest {
            dynamic_quantize(xs, &mut ys)
        } else {
            let (scale, zp) = scale_and_zero_point(xs);
            quantize(xs, scale, zp, &mut ys);
            (scale, zp)
        };
        (ys, scale, zp)
    }

    fn same(xs: &[f32]) {
        let (want_ys, want_scale, want_zp) = reference(xs);
        for widest in [true, false] {
            let (ys, scale, zp) = fast(xs, widest);
            assert_eq!(scale.to_bits(), want_scale.to_bits(), "scale for {xs:?}");
            assert_eq!(zp, want_zp, "zero point for {xs:?}");
            assert_eq!(ys, want_ys, "values for {xs:?}");
        }
    }

    #[test]
    fn edge_cases_match_tract() {
        same(&[]);
        same(&[0.0; 19]);
        same(&[-0.0, 0.0, -0.0]);
        same(&[1.0; 9]);
        same(&[-1.0; 17]);
        // Exact ties at every step of the scale: 0.5, 1.5, 2.5 ...
        let ties: Vec<f32> = (0..600).map(|i| i as f32 * 0.5 - 150.0).collect();
        same(&ties);
        same(&[f32::NAN, 1.0, -2.0, f32::NAN, 0.5, 3.0, 7.0, -7.0, 9.0]);
        same(&[f32::INFINITY, 1.0, -1.0]);
        same(&[f32::NEG_INFINITY, 1.0]);
        same(&[f32::MAX, f32::MIN, 0.0, 1.0e-30]);
        same(&[1.0e-38, -1.0e-39, 3.0e-45]);
    }

    proptest! {
        #[test]
        fn any_tensor_quantizes_as_tract_does(
            xs in prop::collection::vec(
                prop_oneof![
                    8 => -1000f32..1000f32,
                    1 => any::<f32>(),
                    1 => Just(0.0f32),
                ],
                0..200,
            )
        ) {
            same(&xs);
        }
    }

    /// tract's scalar definitions of one quantizer, with and without the
    /// dequantize after it.
    fn tract_level(fast: &FastQuantize, x: f32) -> i32 {
        use tract_onnx::tract_core::ops::quant::{quantize_linear_f32_i8, quantize_linear_f32_u8};
        if fast.unsigned {
            i32::from(quantize_linear_f32_u8(x, fast.multiplier, fast.zero_point))
        } else {
            i32::from(quantize_linear_f32_i8(x, fast.multiplier, fast.zero_point))
        }
    }

    #[test]
    fn every_level_of_both_grids_is_its_own_byte() {
        for level in -128i32..=255 {
            assert_eq!(level_byte(level as f32), level as u8, "{level}");
            if level < 128 {
                assert_eq!(level_byte(level as f32) as i8, level as i8, "{level}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_value_quantizes_as_tract_does(
            xs in prop::collection::vec(
                prop_oneof![
                    8 => -1000f32..1000f32,
                    1 => Just(f32::NAN),
                    1 => Just(0.0f32),
                    1 => Just(-0.0f32),
                ],
                1..64,
            ),
            scale in 0.0005f32..20.0,
            zero_point in -128i32..=255,
            unsigned in any::<bool>(),
        ) {
            let zero_point = if unsigned { zero_point.max(0) } else { zero_point.min(127) };
            let fast = FastQuantize {
                multiplier: scale.recip(),
                zero_point,
                unsigned,
                dequantize: None,
            };
            let level = fast.level();
            let want: Vec<i32> = xs.iter().map(|&x| tract_level(&fast, x)).collect();
            for (&x, &want) in xs.iter().zip(&want) {
                prop_assert_eq!(level(x) as i32, want, "x = {}", x);
            }
            // The op's pass over the whole tensor, vectorised with a tail.
            let out = fast.apply(tensor1(&xs).into_tvalue()).unwrap();
            let out = out.try_as_plain_ram().unwrap();
            let got: Vec<i32> = if unsigned {
                out.as_slice::<u8>().unwrap().iter().map(|&b| i32::from(b)).collect()
            } else {
                out.as_slice::<i8>().unwrap().iter().map(|&b| i32::from(b)).collect()
            };
            prop_assert_eq!(got, want);
        }
    }

    /// x → QuantizeLinear(0.25, int8 zp) → DequantizeLinear → `pair`, and
    /// x → QuantizeLinear(0.1, uint8 zp) → `alone`.
    fn quantizer_model() -> tract_onnx::pb::ModelProto {
        use crate::rewrite::tests::{graph_model, initializer, untyped, value};
        use pb::tensor_proto::DataType as D;
        use tract_onnx::pb;
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        graph_model(pb::GraphProto {
            node: vec![
                node("QuantizeLinear", &["x", "s", "zp"], "q"),
                node("DequantizeLinear", &["q", "s", "zp"], "pair"),
                node("QuantizeLinear", &["x", "s2", "zp2"], "alone"),
            ],
            initializer: vec![
                initializer("s", D::Float, &[], &0.25f32.to_le_bytes()),
                initializer("zp", D::Int8, &[], &[(-3i8) as u8]),
                initializer("s2", D::Float, &[], &0.1f32.to_le_bytes()),
                initializer("zp2", D::Uint8, &[], &[128]),
            ],
            input: vec![value("x", D::Float, &[3, 300])],
            output: untyped(&["pair", "alone"]),
            ..Default::default()
        })
    }

    #[test]
    fn quantizers_and_qdq_pairs_are_replaced_with_identical_outputs() {
        let typed = onnx()
            .model_for_proto_model(&quantizer_model())
            .unwrap()
            .into_typed()
            .unwrap();
        let mut swapped = typed.clone();
        assert_eq!(swap_in_quantizers(&mut swapped).unwrap(), 2);
        let names = crate::rewrite::tests::op_names(&swapped);
        assert!(
            names.contains(&"FastQuantizeDequantize".to_string())
                && names.contains(&"FastQuantizeLinear".to_string())
                && !names
                    .iter()
                    .any(|n| n.starts_with("QuantizeLinear") || n.starts_with("Dequantize")),
            "{names:?}"
        );
        // Exact ties of both grids (multiples of 0.125 and of 0.05), far
        // outside both ranges, and NaN.
        let mut x: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 0.125).collect();
        x.extend((0..280).map(|i| (i as f32 - 140.0) * 0.05));
        x.extend(
            [
                f32::NAN,
                1.0e6,
                -1.0e6,
                0.0,
                -0.0,
                31.9,
                -32.1,
                12.75,
                12.25,
                -12.25,
            ]
            .iter()
            .cycle()
            .take(20),
        );
        let run = |m: TypedModel| {
            m.into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap()
                .run(tvec!(
                    Tensor::from_shape(&[3, 300], &x).unwrap().into_tvalue()
                ))
                .unwrap()
        };
        let want = run(typed);
        let got = run(swapped);
        assert_eq!(want.len(), 2);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.datum_type(), g.datum_type());
            assert_eq!(w.as_bytes(), g.as_bytes(), "outputs differ");
        }
    }

    /// x [1, 2, 4, 4] → QDQ(0.25, zp 3) → MaxPool 2×2 → QDQ(same) → Flatten
    /// → QDQ(same) → Relu → `same`, and the flattened values → QDQ(0.3) →
    /// `other`.
    fn repeated_qdq_model() -> tract_onnx::pb::ModelProto {
        use crate::rewrite::tests::{graph_model, initializer, ints, untyped, value};
        use pb::tensor_proto::DataType as D;
        use tract_onnx::pb;
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let mut pool = node("MaxPool", &["d1"], "p");
        pool.attribute = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        graph_model(pb::GraphProto {
            node: vec![
                node("QuantizeLinear", &["x", "s", "zp"], "q1"),
                node("DequantizeLinear", &["q1", "s", "zp"], "d1"),
                pool,
                node("QuantizeLinear", &["p", "s", "zp"], "q2"),
                node("DequantizeLinear", &["q2", "s", "zp"], "d2"),
                node("Flatten", &["d2"], "f"),
                node("QuantizeLinear", &["f", "s", "zp"], "q3"),
                node("DequantizeLinear", &["q3", "s", "zp"], "d3"),
                node("Relu", &["d3"], "same"),
                node("QuantizeLinear", &["f", "s4", "zp"], "q4"),
                node("DequantizeLinear", &["q4", "s4", "zp"], "other"),
            ],
            initializer: vec![
                initializer("s", D::Float, &[], &0.25f32.to_le_bytes()),
                initializer("s4", D::Float, &[], &0.3f32.to_le_bytes()),
                initializer("zp", D::Uint8, &[], &[3]),
            ],
            input: vec![value("x", D::Float, &[1, 2, 4, 4])],
            output: untyped(&["same", "other"]),
            ..Default::default()
        })
    }

    #[test]
    fn a_pair_repeating_an_earlier_grid_goes_with_identical_outputs() {
        let typed = onnx()
            .model_for_proto_model(&repeated_qdq_model())
            .unwrap()
            .into_typed()
            .unwrap();
        let mut ours = typed.clone();
        assert_eq!(swap_in_quantizers(&mut ours).unwrap(), 4);
        // After the pool and after the flatten; not the other grid.
        assert_eq!(drop_repeated_fake_quants(&mut ours).unwrap(), 2);
        let pairs = crate::rewrite::tests::op_names(&ours)
            .iter()
            .filter(|n| *n == "FastQuantizeDequantize")
            .count();
        assert_eq!(pairs, 2);
        let run = |m: TypedModel, x: &[f32]| {
            let x = Tensor::from_shape(&[1, 2, 4, 4], x).unwrap();
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            plan.run(tvec!(x.into_tvalue())).unwrap()
        };
        // Ties, NaN, far out of range (but not where tract's i32 overflows:
        // see `FastQuantize`).
        let specials = [f32::NAN, 1e6, -1e6, -0.0, 0.125, 0.375, 62.875];
        for seed in 0..8u32 {
            let x: Vec<f32> = (0..32u32)
                .map(|i| match (i * 7 + seed * 13) % 11 {
                    k @ 0..=2 => specials[((k + seed) % 7) as usize],
                    k => (k as f32 - 6.0) * 0.37 * (seed as f32 + 1.0),
                })
                .collect();
            let (want, got) = (run(typed.clone(), &x), run(ours.clone(), &x));
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(w.as_bytes(), g.as_bytes(), "seed {seed}");
            }
        }
    }

    #[test]
    fn the_op_replaces_tracts_in_a_loaded_graph() {
        use tract_onnx::pb;
        let proto = crate::rewrite::tests::graph_model(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "DynamicQuantizeLinear".into(),
                input: vec!["x".into()],
                output: vec!["y".into(), "s".into(), "z".into()],
                ..Default::default()
            }],
            input: vec![crate::rewrite::tests::value(
                "x",
                pb::tensor_proto::DataType::Float,
                &[2, 9],
            )],
            output: crate::rewrite::tests::untyped(&["y", "s", "z"]),
            ..Default::default()
        });
        let typed = onnx()
            .model_for_proto_model(&proto)
            .unwrap()
            .into_typed()
            .unwrap();
        let mut swapped = typed.clone();
        assert_eq!(swap_in(&mut swapped), 1);
        let x: Vec<f32> = (0..18).map(|i| (i as f32 - 6.3) * 0.77).collect();
        let input = || tvec!(Tensor::from_shape(&[2, 9], &x).unwrap().into_tvalue());
        let run = |m: TypedModel| {
            m.into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap()
                .run(input())
                .unwrap()
        };
        let want = run(typed);
        let got = run(swapped);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g);
        }
    }
}
