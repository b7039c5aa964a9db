//! tract's fused element-wise chains (`OptBinChain`, e.g. a dense layer's
//! per-channel scale, bias and ReLU: `Mul+Add+Max`) on f32, in loops the
//! compiler vectorises.
//!
//! tract runs a chain whose operand is a per-channel vector one vector's
//! length at a time, through a kernel call per row and per step: 3–4.6 ns
//! per element on the digits MLPs at batch 32, a fifth to a quarter of the
//! whole model. This op takes the chains whose every operand broadcasts
//! along one contiguous block of axes (see [`Layout`]) and runs each step
//! as one pass over the accumulator, with the arithmetic of tract's f32
//! kernels (`a + b`, `a * b`, `a - b`, `b - a`, `a.min(b)`, `a.max(b)`), so
//! outputs are bit for bit the same; others go to tract's op.

use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinChain;

use crate::broadcast::Layout;

/// Replaces every f32 `OptBinChain` of an optimised model with
/// [`FastBinChain`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |model, node| {
        let Some(chain) = node.op_as::<OptBinChain>() else {
            return Ok(None);
        };
        let facts = model.node_input_facts(node.id)?;
        if facts.iter().any(|f| f.datum_type != f32::datum_type()) {
            return Ok(None);
        }
        Ok(Some(FastBinChain {
            ops: chain.steps.iter().map(|s| s.linalg_op).collect(),
            fallback: chain.clone(),
        }))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FastBinChain {
    /// Step `i` computes `acc = op(acc, input i + 1)`.
    ops: Vec<BinOp>,
    /// tract's op, for the shapes this one does not take.
    fallback: OptBinChain,
}

impl FastBinChain {
    fn label(&self) -> StaticName {
        let ops: Vec<String> = self.ops.iter().map(|op| format!("{op:?}")).collect();
        format!("FastBinChain({})", ops.join("+")).into()
    }

    /// The chain over the accumulator (input 0), written over it, when
    /// every operand broadcasts into it along one block of axes; `None`
    /// (inputs untouched) otherwise.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        if inputs.iter().any(|t| t.datum_type() != f32::datum_type()) {
            return Ok(None);
        }
        let acc_shape = inputs[0].shape();
        let Some(layouts) = inputs[1..]
            .iter()
            .map(|b| Layout::of(acc_shape, b.shape()).filter(|l| !l.small_first))
            .collect::<Option<Vec<Layout>>>()
        else {
            return Ok(None);
        };
        let mut acc = crate::inplace::take_for_writing(inputs.remove(0))?;
        {
            let mut acc_ram = acc.try_as_plain_ram_mut()?;
            let out = acc_ram.as_slice_mut::<f32>()?;
            for ((op, layout), b) in self.ops.iter().zip(&layouts).zip(inputs.iter()) {
                let b_ram = b.try_as_plain_ram()?;
                let b = b_ram.as_slice::<f32>()?;
                let out = &mut *out;
                let op = *op;
                crate::simd::vectorize(
                    #[inline(always)]
                    move || match op {
                        BinOp::Add => layout.run(out, b, |x, y| x + y),
                        BinOp::Mul => layout.run(out, b, |x, y| x * y),
                        BinOp::Sub => layout.run(out, b, |x, y| x - y),
                        BinOp::SubF => layout.run(out, b, |x, y| y - x),
                        BinOp::Min => layout.run(out, b, f32::min),
                        BinOp::Max => layout.run(out, b, f32::max),
                    },
                );
            }
        }
        Ok(Some(acc))
    }
}

crate::fallback::with_fallback!(FastBinChain);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{
        graph_model, initializer, op_names, optimized, run_on, untyped, value, values,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;

    /// `y = Max(Add(Mul(x, scale), bias), floor)`, x `[rows, cols]`, with
    /// `scale` and `bias` per column (`[cols]`) or per row (`[rows, 1]`):
    /// a dense layer's rescale and ReLU.
    fn relu_model(rows: usize, cols: usize, per_row: bool, params: &[f32]) -> pb::ModelProto {
        let dims: Vec<i64> = if per_row {
            vec![rows as i64, 1]
        } else {
            vec![cols as i64]
        };
        let n = if per_row { rows } else { cols };
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        graph_model(pb::GraphProto {
            node: vec![
                node("Mul", &["x", "scale"], "scaled"),
                node("Add", &["scaled", "bias"], "biased"),
                node("Max", &["biased", "floor"], "y"),
            ],
            initializer: vec![
                initializer("scale", D::Float, &dims, &bytes(&params[..n])),
                initializer("bias", D::Float, &dims, &bytes(&params[n..2 * n])),
                initializer("floor", D::Float, &[], &bytes(&params[2 * n..2 * n + 1])),
            ],
            input: vec![value("x", D::Float, &[rows as i64, cols as i64])],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// Runs the model as tract optimises it, and with the chain swapped:
    /// the op names of the swapped plan, and both outputs.
    fn both(model: &pb::ModelProto, x: &Tensor) -> (Vec<String>, Tensor, Tensor) {
        let tracts = optimized(model);
        let mut swapped = tracts.clone();
        swap_in(&mut swapped).unwrap();
        let names = op_names(&swapped);
        (names, run_on(tracts, x), run_on(swapped, x))
    }

    #[test]
    fn a_dense_layers_rescale_and_relu_is_one_fast_chain_with_identical_outputs() {
        for per_row in [false, true] {
            let (rows, cols) = (32, 64);
            let n = if per_row { rows } else { cols };
            let model = relu_model(rows, cols, per_row, &values(2 * n + 1, 1));
            let x = Tensor::from_shape(&[rows, cols], &values(rows * cols, 2)).unwrap();
            let (names, want, got) = both(&model, &x);
            assert!(
                names.iter().any(|n| n == "FastBinChain(Mul+Add+Max)"),
                "per_row {per_row}: {names:?}"
            );
            assert_eq!(want.as_bytes(), got.as_bytes(), "per_row {per_row}");
        }
    }

    proptest! {
        #[test]
        fn any_chain_it_takes_equals_tracts(
            rows in 1usize..6,
            cols in 1usize..40,
            per_row in any::<bool>(),
            seed in 0u64..1000,
            floor in prop_oneof![
                Just(0.0f32), Just(-0.0f32), Just(f32::NAN), -2.0f32..2.0,
            ],
            specials in prop::collection::vec(
                (0usize..400, prop_oneof![
                    Just(f32::NAN), Just(0.0f32), Just(-0.0f32),
                    Just(f32::INFINITY), Just(f32::NEG_INFINITY),
                ]),
                0..12,
            ),
        ) {
            let n = if per_row { rows } else { cols };
            let mut params = values(2 * n + 1, seed);
            let mut x = values(rows * cols, seed + 1);
            // NaN, ±0 and infinities in the input and in the operands.
            for (i, v) in specials {
                if i < x.len() {
                    x[i] = v;
                } else if i - x.len() < params.len() {
                    params[i - x.len()] = v;
                }
            }
            params[2 * n] = floor;
            let model = relu_model(rows, cols, per_row, &params);
            let x = Tensor::from_shape(&[rows, cols], &x).unwrap();
            let (_, want, got) = both(&model, &x);
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }
    }
}
