//! The plumbing of an op that computes some tensors faster than the tract op
//! it replaced and hands every other to that op (which also gives its output
//! facts): `FastBroadcast`, `FastMaxPool`, `FastIm2col`; and the swap that
//! puts them in.

use tract_onnx::prelude::*;

/// Implements `Op`, `EvalOp` and `TypedOp` for `$op`, which has a `fallback`
/// field (tract's op), `fn label(&self) -> StaticName`, and
/// `fn try_eval(&self, &mut TVec<TValue>) -> TractResult<Option<Tensor>>`
/// that returns `None`, leaving the inputs as they were, for tensors it does
/// not take.
macro_rules! with_fallback {
    ($op:ty) => {
        impl Op for $op {
            fn name(&self) -> StaticName {
                self.label()
            }

            fn info(&self) -> TractResult<Vec<String>> {
                self.fallback.info()
            }

            fn validation(&self) -> Validation {
                self.fallback.validation()
            }

            op_as_typed_op!();
        }

        impl EvalOp for $op {
            op_out_of_plan!();

            fn eval(
                &self,
                ctx: &EvalContext,
                mut inputs: TVec<TValue>,
            ) -> TractResult<TVec<TValue>> {
                if let Some(output) = self.try_eval(&mut inputs)? {
                    return Ok(tvec!(output.into_tvalue()));
                }
                self.fallback.eval(ctx, inputs)
            }
        }

        impl TypedOp for $op {
            fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
                self.fallback.output_facts(inputs)
            }

            as_op!();
        }
    };
}

pub(crate) use with_fallback;

/// Puts `fast(model, node)`'s op, where it gives one, in place of each
/// node's op (same inputs, same outputs). Returns how many nodes changed.
pub(crate) fn replace_ops<F: TypedOp>(
    model: &mut TypedModel,
    fast: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<F>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        if let Some(op) = fast(model, &model.nodes()[id])? {
            model.node_mut(id).op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}
