//! Batches of small products of two activations (a transformer's
//! attention: `Q · Kᵀ` and `softmax · V` per sequence and head) in one op
//! of our own.
//!
//! tract runs such an `EinSum` as a packing node per operand and a kernel
//! call per sequence and head, each padded to its 64-row tile: int8 MiniLM
//! at 12 tokens and batch 32 spent 24 ms in its twelve attention products
//! (384 calls each, 12 × 12 × 32 values) and 8 ms more packing them; at 128
//! tokens and batch 1 they ran at 19 GMAC/s. This op takes every f32
//! `EinSum` of two non-constant operands with one `m`, one `n` and one `k`
//! axis, the other axes batch axes of equal length in both operands, and
//! for each batch index runs [`crate::dense`]'s product: the second operand
//! packed in panels (read in place, whatever its strides), each output
//! `Σ_k a·b` by fused multiply-adds from +0 in `k` order. A constant scalar
//! `Mul` reading only the product (attention's `1/√d`) is absorbed, as
//! tract's fused `scalarMul` is: one f32 multiply of each sum.
//!
//! Outputs are tract's bit for bit on an FMA CPU. tract's kernels run with
//! denormals-are-zero: they read a subnormal operand, and a subnormal sum
//! they scale, as a zero of its sign, and this op does the same ([`daz`]);
//! they do not flush their outputs, nor does this op. The one place the two
//! can differ is a partial sum that is itself subnormal inside the `k`
//! loop: tract reads it as zero on its next multiply-add, this op carries
//! it (the output then differs by less than 2^-126). On a CPU without FMA
//! tract keeps the products.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Mul;

use crate::dense::{
    Finish, Panels, axis_place, daz, flush_into, product_here, sole_reader, splice,
};

/// Replaces each product of two activations that [`FastBatched`] takes.
/// Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    if crate::simd::vector_level() == "baseline" {
        return Ok(0);
    }
    let outputs: std::collections::HashSet<OutletId> =
        model.output_outlets()?.iter().copied().collect();
    let mut swapped = 0;
    for id in model.eval_order()? {
        let Some(op) = plan(model, id)? else {
            continue;
        };
        let (op, last) = match scale_after(model, id, &outputs)? {
            Some((scale, mul)) => (
                FastBatched {
                    scale: Some(scale),
                    ..op
                },
                mul,
            ),
            None => (op, id),
        };
        let inputs = model.node(id).inputs.clone();
        let name = model.node(id).name.clone();
        splice(model, &inputs, op, name, OutletId::new(last, 0))?;
        swapped += 1;
    }
    if swapped > 0 {
        model.compact()?;
    }
    Ok(swapped)
}

/// The op for node `id` if it is an f32 product of two activations this op
/// takes.
fn plan(model: &TypedModel, id: usize) -> TractResult<Option<FastBatched>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let facts = model.node_input_facts(id)?;
    let f32_operands = facts
        .iter()
        .all(|f| f.datum_type == f32::datum_type() && f.konst.is_none() && !f.is_exotic());
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || facts.len() != 2
        || !f32_operands
    {
        return Ok(None);
    }
    let (mut batch, mut m, mut n, mut k) = (vec![], None, None, None);
    for axis in einsum.axes.iter_all_axes() {
        let (Some(a), Some(b), Some(c)) = (
            axis_place(&axis.inputs[0]),
            axis_place(&axis.inputs[1]),
            axis_place(&axis.outputs[0]),
        ) else {
            return Ok(None);
        };
        match (a, b, c) {
            (Some(a), Some(b), Some(c)) => {
                if facts[0].shape[a] != facts[1].shape[b] {
                    return Ok(None);
                }
                batch.push((c, a, b));
            }
            (Some(a), None, Some(c)) if m.is_none() => m = Some((a, c)),
            (None, Some(b), Some(c)) if n.is_none() => n = Some((b, c)),
            (Some(a), Some(b), None) if k.is_none() => k = Some((a, b)),
            _ => return Ok(None),
        }
    }
    let (Some((a_m, c_m)), Some((b_n, c_n)), Some((a_k, b_k))) = (m, n, k) else {
        return Ok(None);
    };
    batch.sort_unstable();
    let order = |of: fn(&(usize, usize, usize)) -> usize, last: [usize; 2]| -> TVec<usize> {
        batch.iter().map(of).chain(last).collect()
    };
    Ok(Some(FastBatched {
        a_axes: order(|x| x.1, [a_m, a_k]),
        b_axes: order(|x| x.2, [b_k, b_n]),
        c_axes: order(|x| x.0, [c_m, c_n]),
        scale: None,
    }))
}

/// The constant scalar that a `Mul` reading only node `id`'s output
/// multiplies it by, and that `Mul`'s node.
fn scale_after(
    model: &TypedModel,
    id: usize,
    outputs: &std::collections::HashSet<OutletId>,
) -> TractResult<Option<(f32, usize)>> {
    let Some(mul) = sole_reader(model, id, outputs)? else {
        return Ok(None);
    };
    let is_mul = mul
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.is::<Mul>() && op.1.is_none());
    if !is_mul || mul.inputs.len() != 2 {
        return Ok(None);
    }
    let other = if mul.inputs[0].node == id { 1 } else { 0 };
    let fact = model.outlet_fact(mul.inputs[other])?;
    let Some(scale) = &fact.konst else {
        return Ok(None);
    };
    let out = model.outlet_fact(OutletId::new(mul.id, 0))?;
    if scale.len() != 1
        || scale.datum_type() != f32::datum_type()
        || out.shape != model.outlet_fact(OutletId::new(id, 0))?.shape
    {
        return Ok(None);
    }
    Ok(Some((scale.cast_to_scalar::<f32>()?, mul.id)))
}

/// `c = a · b` per batch index (then `· scale`): see the module's doc. Each
/// `*_axes` lists an operand's axes as the product reads them: the batch
/// axes (in the output's order), then `[m, k]` for `a`, `[k, n]` for `b`,
/// `[m, n]` for `c`.
#[derive(Debug, Clone, PartialEq)]
struct FastBatched {
    a_axes: TVec<usize>,
    b_axes: TVec<usize>,
    c_axes: TVec<usize>,
    scale: Option<f32>,
}

impl Eq for FastBatched {}

impl Hash for FastBatched {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (
            &self.a_axes,
            &self.b_axes,
            &self.c_axes,
            self.scale.map(f32::to_bits),
        )
            .hash(state);
    }
}

impl Op for FastBatched {
    fn name(&self) -> StaticName {
        match self.scale {
            Some(_) => "FastBatched+Scale".into(),
            None => "FastBatched".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "a {:?} b {:?} c {:?}",
            self.a_axes, self.b_axes, self.c_axes
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for FastBatched {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        use tract_ndarray::{Axis, Dimension, Ix2, IxDyn};
        let a = inputs[0].to_plain_array_view::<f32>()?;
        let a = a.permuted_axes(IxDyn(&self.a_axes));
        let b = inputs[1].to_plain_array_view::<f32>()?;
        let b = b.permuted_axes(IxDyn(&self.b_axes));
        let batches = self.a_axes.len() - 2;
        let (a_dims, b_dims) = (a.shape(), b.shape());
        let (m, k, n) = (a_dims[batches], a_dims[batches + 1], b_dims[batches + 1]);
        ensure!(
            a_dims[..batches] == b_dims[..batches] && b_dims[batches] == k,
            "FastBatched: operands {a_dims:?} and {b_dims:?}"
        );
        let mut c_shape: TVec<usize> = tvec![0; self.c_axes.len()];
        for (at, dim) in self
            .c_axes
            .iter()
            .zip(a_dims[..batches].iter().chain(&[m, n]))
        {
            c_shape[*at] = *dim;
        }
        let mut output = Tensor::zero::<f32>(&c_shape)?;
        if m * n * k == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        // Each logical axis's stride in the output: a batch index's `m × n`
        // block starts at `Σ index · stride`, row `r` `r · row` further on.
        let natural = Tensor::natural_strides(&c_shape);
        let strides: TVec<usize> = self.c_axes.iter().map(|at| natural[*at] as usize).collect();
        let (row, column) = (strides[batches], strides[batches + 1]);
        let mut plain = output.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<f32>()?;
        let finish = match self.scale {
            Some(scale) => Finish::Scale(daz(scale)),
            None => Finish::Sum,
        };
        let batch_dims = IxDyn(&a_dims[..batches]);
        crate::simd::vectorize(
            #[inline(always)]
            move || -> TractResult<()> {
                let mut panels = Panels::default();
                let mut rows = vec![0f32; m * k];
                // Where an output row is not contiguous, sums go here first.
                let mut sums = vec![0f32; if column == 1 { 0 } else { m * n }];
                for index in tract_ndarray::indices(batch_dims) {
                    let (mut a, mut b) = (a.view(), b.view());
                    let mut start = 0;
                    for (&i, stride) in index.slice().iter().zip(&strides) {
                        a = a.index_axis_move(Axis(0), i);
                        b = b.index_axis_move(Axis(0), i);
                        start += i * stride;
                    }
                    let a = a.into_dimensionality::<Ix2>()?;
                    panels.pack(b.into_dimensionality::<Ix2>()?);
                    // `a` row-major, read as tract's kernels read it.
                    for (row, to) in a.rows().into_iter().zip(rows.chunks_exact_mut(k)) {
                        match row.as_slice() {
                            Some(row) => flush_into(to, row),
                            None => to.iter_mut().zip(row).for_each(|(t, v)| *t = daz(*v)),
                        }
                    }
                    if column == 1 {
                        let c = &mut out[start..];
                        product_here::<false>(&rows, m, &panels, finish, c, row);
                        continue;
                    }
                    product_here::<false>(&rows, m, &panels, finish, &mut sums, n);
                    for (r, sums) in sums.chunks_exact(n).enumerate() {
                        for (j, v) in sums.iter().enumerate() {
                            out[start + r * row + j * column] = *v;
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastBatched {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let batches = self.a_axes.len() - 2;
        let a = &inputs[0].shape;
        let b = &inputs[1].shape;
        let mut shape: TVec<TDim> = tvec![0.to_dim(); self.c_axes.len()];
        let dims = self.a_axes[..batches]
            .iter()
            .map(|at| a[*at].clone())
            .chain([
                a[self.a_axes[batches]].clone(),
                b[self.b_axes[batches + 1]].clone(),
            ]);
        for (at, dim) in self.c_axes.iter().zip(dims) {
            shape[*at] = dim;
        }
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{
        decluttered_and_swapped, graph_model, ints, op_names, untyped, value_with, values,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as V;

    /// `[N, S, heads, d]` f32, batch and sequence symbolic.
    fn heads_input(name: &str, heads: usize, d: usize) -> pb::ValueInfoProto {
        let dims = [
            V::DimParam("N".into()),
            V::DimParam("S".into()),
            V::DimValue(heads as i64),
            V::DimValue(d as i64),
        ];
        value_with(name, D::Float, &dims)
    }

    fn transpose(input: &str, perm: &[i64], output: &str) -> pb::NodeProto {
        let mut node = crate::rewrite::node("Transpose", &[input], output, None);
        node.attribute.push(ints("perm", perm));
        node
    }

    /// Attention as BERT exports it, over inputs `q`, `k`, `v` `[N, S,
    /// heads, d]`: `softmax(qᵀ·k · scale) · v`, back to `[N, S, heads, d]`.
    fn attention(heads: usize, d: usize, scale: f32) -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let mut softmax = node("Softmax", &["scores"], "p");
        softmax.attribute.push(pb::AttributeProto {
            name: "axis".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: -1,
            ..Default::default()
        });
        graph_model(pb::GraphProto {
            node: vec![
                transpose("q", &[0, 2, 1, 3], "qt"),
                transpose("k", &[0, 2, 3, 1], "kt"),
                transpose("v", &[0, 2, 1, 3], "vt"),
                node("MatMul", &["qt", "kt"], "qk"),
                node("Mul", &["qk", "scale"], "scores"),
                softmax,
                node("MatMul", &["p", "vt"], "pv"),
                transpose("pv", &[0, 2, 1, 3], "y"),
            ],
            initializer: vec![crate::rewrite::tests::initializer(
                "scale",
                D::Float,
                &[],
                &scale.to_le_bytes(),
            )],
            input: vec![
                heads_input("q", heads, d),
                heads_input("k", heads, d),
                heads_input("v", heads, d),
            ],
            output: untyped(&["y", "scores"]),
            ..Default::default()
        })
    }

    /// Runs `proto` optimised as tract would and with [`swap_in`] applied
    /// after declutter: our op names, then tract's outputs and ours.
    fn both(
        proto: &pb::ModelProto,
        inputs: &[Tensor],
    ) -> (Vec<String>, TVec<Tensor>, TVec<Tensor>) {
        let (typed, ours) = decluttered_and_swapped(proto, swap_in);
        let names = op_names(&ours);
        let run = |mut m: TypedModel| -> TVec<Tensor> {
            m.optimize().unwrap();
            let inputs = inputs.iter().map(|t| t.clone().into_tvalue()).collect();
            let plan = m.into_runnable().unwrap();
            plan.run(inputs)
                .unwrap()
                .into_iter()
                .map(|t| t.into_tensor())
                .collect()
        };
        (names, run(typed), run(ours))
    }

    fn input(batch: usize, seq: usize, heads: usize, d: usize, seed: u64) -> Tensor {
        let n = batch * seq * heads * d;
        Tensor::from_shape(&[batch, seq, heads, d], &values(n, seed)).unwrap()
    }

    fn swaps() -> bool {
        crate::simd::vector_level() != "baseline"
    }

    #[test]
    fn attention_products_are_ours_and_bit_identical_with_the_scale_absorbed() {
        let (heads, d) = (3, 8);
        let model = attention(heads, d, 0.353_553_38);
        for (batch, seq) in [(1, 1), (1, 5), (2, 7), (3, 13)] {
            let inputs: Vec<Tensor> = (0..3).map(|i| input(batch, seq, heads, d, i)).collect();
            let (names, want, got) = both(&model, &inputs);
            if swaps() {
                assert!(names.iter().any(|n| n == "FastBatched+Scale"), "{names:?}");
                assert!(names.iter().any(|n| n == "FastBatched"), "{names:?}");
                assert!(
                    !names.iter().any(|n| n == "EinSum" || n == "Mul"),
                    "{names:?}"
                );
            }
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(w.shape(), g.shape());
                assert_eq!(w.as_bytes(), g.as_bytes(), "batch {batch} seq {seq}");
            }
        }
    }

    /// `Q · Kᵀ` read transposed (`[batch, heads, n, m]`): its output rows
    /// are not contiguous, and the product's sums reach them one by one.
    #[test]
    fn a_product_written_transposed_is_ours_and_bit_identical() {
        let (heads, d) = (2, 5);
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let model = graph_model(pb::GraphProto {
            node: vec![
                transpose("q", &[0, 2, 1, 3], "qt"),
                transpose("k", &[0, 2, 3, 1], "kt"),
                node("MatMul", &["qt", "kt"], "qk"),
                transpose("qk", &[0, 1, 3, 2], "y"),
            ],
            input: vec![heads_input("q", heads, d), heads_input("k", heads, d)],
            output: untyped(&["y"]),
            ..Default::default()
        });
        for (batch, seq) in [(1, 3), (2, 9), (3, 17)] {
            let inputs: Vec<Tensor> = (0..2).map(|i| input(batch, seq, heads, d, i)).collect();
            let (names, want, got) = both(&model, &inputs);
            if swaps() {
                assert!(names.iter().any(|n| n == "FastBatched"), "{names:?}");
            }
            assert_eq!(want[0].shape(), &[batch, heads, seq, seq]);
            assert_eq!(
                want[0].as_bytes(),
                got[0].as_bytes(),
                "batch {batch} seq {seq}"
            );
        }
    }

    #[test]
    fn subnormal_operands_and_outputs_read_and_write_as_tracts_do() {
        let (heads, d) = (2, 4);
        // 2^-130 and friends: subnormal operands, whose products underflow.
        let tiny = f32::from_bits(0x0008_0000);
        let mut q = values(6 * heads * d, 1);
        for (i, v) in q.iter_mut().enumerate() {
            if i % 3 == 0 {
                *v = if i % 2 == 0 { tiny } else { -tiny };
            }
        }
        let q = Tensor::from_shape(&[1, 6, heads, d], &q).unwrap();
        let inputs = [q, input(1, 6, heads, d, 2), input(1, 6, heads, d, 3)];
        // A scale that takes some scores below 2^-126: tract reads
        // subnormal operands as zero but does not flush its outputs.
        let (_, want, got) = both(&attention(heads, d, 2e-38), &inputs);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.as_bytes(), g.as_bytes());
        }
    }

    /// `w` and `g` bit for bit, or (where a partial sum was subnormal, see
    /// the module's doc) less than 2^-126 apart, plus the rounding of the
    /// sums that followed.
    fn same_or_a_subnormal_apart(w: f32, g: f32) -> bool {
        let ulp = f32::EPSILON * w.abs().max(g.abs());
        w.to_bits() == g.to_bits() || (w - g).abs() <= f32::MIN_POSITIVE + ulp
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_attention_shape_gives_tracts_outputs(
            batch in 1usize..4,
            seq in 1usize..40,
            heads in 1usize..5,
            d in 1usize..40,
            seed in 0u64..1000,
        ) {
            let model = attention(heads, d, 1.0 / (d as f32).sqrt());
            let inputs: Vec<Tensor> =
                (0..3).map(|i| input(batch, seq, heads, d, seed + i)).collect();
            let (_, want, got) = both(&model, &inputs);
            for (w, g) in want.iter().zip(&got) {
                prop_assert_eq!(w.shape(), g.shape());
                let (w, g) = (w.as_plain_ram().unwrap(), g.as_plain_ram().unwrap());
                for (w, g) in w.as_slice::<f32>().unwrap().iter().zip(g.as_slice::<f32>().unwrap()) {
                    prop_assert!(same_or_a_subnormal_apart(*w, *g), "{w:e} {g:e}");
                }
            }
        }
    }
}
