//! Writing an op's result over its input, and results with natural strides.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;

/// The input's tensor to overwrite with a same-shaped result: taken as is
/// when nothing else holds it, copied otherwise. Its strides are made the
/// natural ones of its shape: an axis op that inserts a unit axis leaves
/// other strides on it (`[384, 384, 1]` for `[1, 128, 384]`), and tract's
/// fused element-wise chains take their fast path only on natural strides
/// (int8 MiniLM's chains ran 13× slower on them). A fresh buffer, as tract's
/// own ops write, always has them.
pub(crate) fn take_for_writing(value: TValue) -> TractResult<Tensor> {
    let mut tensor = value.into_tensor();
    let shape: TVec<usize> = tensor.shape().into();
    if tensor.strides() != &*Tensor::natural_strides(&shape) {
        // Only unit axes can differ: tract tensors are contiguous.
        tensor.set_shape(&[tensor.len()])?;
        tensor.set_shape(&shape)?;
    }
    Ok(tensor)
}

/// `value` as is when its strides are the natural ones of its shape, else
/// restrided in place (copied first only if something else holds it).
fn with_natural_strides(value: TValue) -> TractResult<TValue> {
    if value.strides() == &*Tensor::natural_strides(value.shape()) {
        return Ok(value);
    }
    Ok(take_for_writing(value)?.into_tvalue())
}

/// Wraps every `AxisOp` of an optimised model (reshapes, added and removed
/// axes) in [`NaturalAxisOp`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |_, node| {
        Ok(node.op_as::<AxisOp>().map(|op| NaturalAxisOp(op.clone())))
    })
}

/// tract's `AxisOp`, its result given natural strides (a cheap fix of the
/// shape's metadata: the op's result is its own). tract leaves a matrix
/// product's `[128, 384]` reshaped to `[1, 128, 384]` with strides
/// `[384, 384, 1]`, and the element-wise chain that reads it falls to its
/// per-element path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NaturalAxisOp(AxisOp);

impl Op for NaturalAxisOp {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.0.info()
    }

    op_as_typed_op!();
}

impl EvalOp for NaturalAxisOp {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.0
            .eval(ctx, inputs)?
            .into_iter()
            .map(with_natural_strides)
            .collect()
    }
}

impl TypedOp for NaturalAxisOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// `f` of every element of an f32 input, written over it.
pub(crate) fn map_in_place(value: TValue, f: impl Fn(f32) -> f32) -> TractResult<TValue> {
    let mut tensor = take_for_writing(value)?;
    {
        let mut ram = tensor.try_as_plain_ram_mut()?;
        let xs = ram.as_slice_mut::<f32>()?;
        crate::simd::vectorize(
            #[inline(always)]
            move || {
                for x in xs {
                    *x = f(*x);
                }
            },
        );
    }
    Ok(tensor.into_tvalue())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_axis_inserted_by_an_axis_op_gets_natural_strides() {
        let mut t = Tensor::from_shape(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        t.insert_axis(0).unwrap();
        assert_eq!(t.strides(), &[3, 3, 1]);
        // (A clone would get natural strides: hand over the tensor itself.)
        let bytes = t.as_bytes().to_vec();
        let taken = take_for_writing(t.into_tvalue()).unwrap();
        assert_eq!(taken.strides(), &[6, 3, 1]);
        assert_eq!(taken.shape(), &[1, 2, 3]);
        assert_eq!(taken.as_bytes(), bytes);
    }

    #[test]
    fn an_axis_op_in_a_plan_gives_natural_strides_and_a_natural_tensor_passes_as_is() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3])).unwrap();
        let y = model.wire_node("add_axis", AxisOp::Add(0), &[x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let x = Tensor::from_shape(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let run = |model: TypedModel| crate::rewrite::tests::run_on(model, &x);
        // tract's own op: the inserted axis takes its neighbour's stride.
        assert_eq!(run(model.clone()).strides(), &[3, 3, 1]);
        assert_eq!(swap_in(&mut model).unwrap(), 1);
        let y = run(model);
        assert_eq!((y.shape(), y.strides()), (&[1, 2, 3][..], &[6, 3, 1][..]));
        assert_eq!(y.as_bytes(), x.as_bytes());
        // Natural already: handed on as it is.
        let shared = x.clone().into_tvalue();
        let same = with_natural_strides(shared.clone()).unwrap();
        assert!(std::ptr::eq(shared.as_bytes(), same.as_bytes()));
    }
}
