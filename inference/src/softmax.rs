//! f32 `Softmax` over the last axis in one vectorised pass per row.
//!
//! tract computes each row through three kernel calls (max, exp and sum,
//! scale), each with its own alignment handling: 2.5–3 ns per element on
//! MiniLM's attention rows of 128, 10 % of int8 MiniLM. This op computes a
//! row as max, `exp(x - max)` with its sum, and a multiply by the sum's
//! reciprocal, in loops the compiler vectorises for this CPU (see
//! [`crate::simd`]).
//!
//! Not bit-identical to tract, whose own results depend on the CPU (its
//! AVX-512 and AVX2 kernels add the row in different orders): `exp` is the
//! same Cody–Waite reduction and degree-5 polynomial as tract's, without
//! fused multiply-adds so that every CPU computes the same bits, and the sum
//! goes in 16 lanes. Every output is within (2e-6 + 2^-24 · (max - x))
//! relative, plus 1e-37 absolute, of the softmax computed in f64 (the
//! second term is `x - max` rounded to f32, which tract shares; tested, and
//! tract's own outputs meet the same bound); a NaN or +∞ in a row makes the
//! row NaN as tract's does.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Replaces every f32 `Softmax` over the last axis of an optimised model
/// with [`FastSoftmax`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |model, node| {
        let Some(softmax) = node.op_as::<Softmax>() else {
            return Ok(None);
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let last = fact.rank().checked_sub(1);
        if fact.datum_type != f32::datum_type()
            || softmax.kind != SoftmaxKind::Softmax
            || softmax.axes.len() != 1
            || Some(softmax.axes[0]) != last
        {
            return Ok(None);
        }
        Ok(Some(FastSoftmax {
            fallback: softmax.clone(),
        }))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FastSoftmax {
    /// tract's op, for its output facts and tensors this one does not take.
    fallback: Softmax,
}

impl FastSoftmax {
    fn label(&self) -> StaticName {
        "FastSoftmax".into()
    }

    /// Softmax of every row of the last axis, written over the input.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        let row = inputs[0].shape().last().copied().unwrap_or(0);
        if inputs[0].datum_type() != f32::datum_type() || row == 0 {
            return Ok(None);
        }
        let mut tensor = crate::inplace::take_for_writing(inputs.remove(0))?;
        {
            let mut ram = tensor.try_as_plain_ram_mut()?;
            let xs = ram.as_slice_mut::<f32>()?;
            crate::simd::vectorize(
                #[inline(always)]
                move || {
                    for r in xs.chunks_exact_mut(row) {
                        softmax_row(r);
                    }
                },
            );
        }
        Ok(Some(tensor))
    }
}

crate::fallback::with_fallback!(FastSoftmax);

const LANES: usize = 16;

/// 1.5·2^23: adding it to an f32 of magnitude below 2^22 rounds it to an
/// integer (ties to even) held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// Softmax of one row, in place.
#[inline(always)]
fn softmax_row(xs: &mut [f32]) {
    let max = row_max(xs);
    let mut sums = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (x, sum) in chunk.iter_mut().zip(&mut sums) {
            *x = exp_up_to_zero(*x - max);
            *sum += *x;
        }
    }
    for (x, sum) in chunks.into_remainder().iter_mut().zip(&mut sums) {
        *x = exp_up_to_zero(*x - max);
        *sum += *x;
    }
    let scale = sums.iter().sum::<f32>().recip();
    for x in xs {
        *x *= scale;
    }
}

/// The row's largest value, NaN skipped (a NaN still makes the whole row
/// NaN: its `exp` is NaN, and so is the sum every value is scaled by).
#[inline(always)]
fn row_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            lanes[i] = if chunk[i] > lanes[i] {
                chunk[i]
            } else {
                lanes[i]
            };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for x in lanes.iter().chain(chunks.remainder()) {
        max = if *x > max { *x } else { max };
    }
    max
}

/// e^x for x ≤ 0 (a value minus its row's max): tract's Cody–Waite
/// reduction and polynomial, in separate multiplies and adds. Below -103
/// the result is 0 (e^-103 is under f32's smallest subnormal); NaN stays
/// NaN (a row holding NaN or +∞).
#[inline(always)]
#[allow(clippy::excessive_precision)] // tract's constants, as it writes them
fn exp_up_to_zero(x: f32) -> f32 {
    // ln 2 split so that k · LN2_HI is exact for the k that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Rounded to the nearest integer, ties to even, by adding and
    // subtracting 1.5·2^23 (`round_ties_even` and `as i32` do not vectorise
    // everywhere); the clamp keeps the trick exact and only affects x below
    // -103, whose result is 0 anyway.
    let k = ((x * std::f32::consts::LOG2_E).clamp(-200.0, 200.0) + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut q: f32 = 8.297_653_546e-3;
    q = q * r + 4.191_538_191e-2;
    q = q * r + 1.666_757_475e-1;
    q = q * r + 4.999_889_485e-1;
    q = q * r + 9.999_996_920e-1;
    q = q * r + 1.000_000_072;
    // 2^k with its exponent field kept valid, as tract does (k < -126 only
    // for x below about -87, where the result is within a few subnormals
    // of 0). NaN converts to 0.
    // The biased exponent k + 127, in 1..=254, is the low bits of
    // `k + 127 + ROUND`; shifting it into the exponent field drops the rest.
    let biased = (k.clamp(-126.0, 127.0) + 127.0 + ROUND).to_bits();
    let two_k = f32::from_bits(biased << 23);
    if x < -103.0 { 0.0 } else { q * two_k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{graph_model, op_names, optimized, run_on, untyped, value};
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;

    /// `y = Softmax(x)` over the last axis of a `[rows, row]` input.
    fn softmax_model(rows: usize, row: usize) -> pb::ModelProto {
        graph_model(pb::GraphProto {
            node: vec![crate::rewrite::node("Softmax", &["x"], "y", None)],
            input: vec![value("x", D::Float, &[rows as i64, row as i64])],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// Softmax of each row in f64.
    fn exact(xs: &[f32], row: usize) -> Vec<f64> {
        xs.chunks(row)
            .flat_map(|r| {
                let max = r.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let e: Vec<f64> = r.iter().map(|&x| (x as f64 - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / sum)
            })
            .collect()
    }

    /// Runs the softmax as tract optimises it and with ours swapped in.
    fn both(rows: usize, row: usize, xs: &[f32]) -> (Vec<String>, Vec<f32>, Vec<f32>) {
        let tracts = optimized(&softmax_model(rows, row));
        let mut ours = tracts.clone();
        swap_in(&mut ours).unwrap();
        let names = op_names(&ours);
        let x = Tensor::from_shape(&[rows, row], xs).unwrap();
        let values = |t: Tensor| {
            t.try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        (names, values(run_on(tracts, &x)), values(run_on(ours, &x)))
    }

    /// Within the stated bound of the f64 value for an input `below` its
    /// row's max: 2e-6 relative for `exp` and the sum, plus the rounding
    /// of `x - max` in f32 (2^-24 of it, relative), plus 1e-37.
    fn close(got: f32, want: f64, below: f64) -> bool {
        (got as f64 - want).abs() <= (2e-6 + below * 2f64.powi(-24)) * want + 1e-37
    }

    /// How far each input is below its row's max.
    fn below_max(xs: &[f32], row: usize) -> Vec<f64> {
        xs.chunks(row)
            .flat_map(|r| {
                let max = r.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                r.iter().map(move |&x| (max - x) as f64)
            })
            .collect()
    }

    #[test]
    fn attention_rows_are_within_the_stated_bound_of_f64_as_tracts_are() {
        let (rows, row) = (24, 128);
        let xs: Vec<f32> = (0..rows * row)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.01 - 10.0)
            .collect();
        let (names, tracts, ours) = both(rows, row, &xs);
        assert!(names.iter().any(|n| n == "FastSoftmax"), "{names:?}");
        let (want, below) = (exact(&xs, row), below_max(&xs, row));
        for (i, w) in want.iter().enumerate() {
            assert!(close(ours[i], *w, below[i]), "ours {} against {w}", ours[i]);
            assert!(close(tracts[i], *w, below[i]), "tract's {}: {w}", tracts[i]);
        }
    }

    #[test]
    fn extreme_rows_match_tracts_behaviour() {
        let row = 20;
        let mut xs = vec![0f32; 5 * row];
        xs[3] = f32::NAN; // row 0: NaN
        xs[row + 4] = f32::INFINITY; // row 1: +inf
        xs[2 * row..3 * row].fill(f32::NEG_INFINITY); // row 2: all -inf
        xs[3 * row + 1] = 1000.0; // row 3: one dominant value
        for (i, x) in xs[4 * row..].iter_mut().enumerate() {
            *x = -200.0 * i as f32; // row 4: underflowing tails
        }
        let (_, tracts, ours) = both(5, row, &xs);
        for (i, (t, o)) in tracts.iter().zip(&ours).enumerate() {
            assert_eq!(t.is_nan(), o.is_nan(), "{i}: tract {t}, ours {o}");
            if !t.is_nan() {
                assert!((t - o).abs() <= 1e-6 * t.abs(), "{i}: tract {t}, ours {o}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_row_is_within_the_stated_bound_of_f64(
            row in 1usize..70,
            rows in 1usize..4,
            seed in 0usize..10_000,
            spread in prop_oneof![Just(1.0f32), Just(30.0f32), Just(200.0f32)],
        ) {
            let xs: Vec<f32> = (0..rows * row)
                .map(|i| (((i + seed) * 7919) % 2003) as f32 / 2003.0 * spread - spread / 2.0)
                .collect();
            let (_, _, ours) = both(rows, row, &xs);
            let (want, below) = (exact(&xs, row), below_max(&xs, row));
            for (i, w) in want.iter().enumerate() {
                prop_assert!(close(ours[i], *w, below[i]), "ours {} against {}", ours[i], w);
            }
        }
    }
}
