//! f32 `Add`, `Sub`, `Mul` and `Div` that tract's optimiser left on its
//! generic broadcasting path, in loops the compiler vectorises.
//!
//! tract swaps a binary op for a fast kernel only when it can prove, from
//! the shapes, that the kernel fits; with two symbolic dimensions (a text
//! model's `batch` and `sequence`) it cannot, and with a per-channel operand
//! (`[1, C, 1, 1]`, a convolution's bias) no fast kernel exists. The generic
//! path walks an n-dimensional iterator per element (2–5 ns per element
//! here): int8 MiniLM spent 7.6 ms of 62 in it, the dynamic digits CNN a
//! third of its time at batch 32. This op looks at the actual shapes at run
//! time: when one operand is the output's shape and the other varies along
//! one contiguous block of axes (a scalar, a trailing vector, a channel), it
//! computes `a op b` element by element as tract does, so results are bit
//! for bit the same; any other shape goes to tract's op.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::{Add, Div, Mul, Sub};

/// Replaces every generic f32 `Add`/`Sub`/`Mul`/`Div` left in an optimised
/// model with [`FastBroadcast`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |model, node| {
        let Some((bin, kind)) = node
            .op_as::<TypedBinOp>()
            .and_then(|b| Some((b, Kind::of(b)?)))
        else {
            return Ok(None);
        };
        let facts = model.node_input_facts(node.id)?;
        if facts.len() != 2 || facts.iter().any(|f| f.datum_type != f32::datum_type()) {
            return Ok(None);
        }
        Ok(Some(FastBroadcast {
            kind,
            fallback: bin.clone(),
        }))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

impl Kind {
    fn of(bin: &TypedBinOp) -> Option<Kind> {
        // An output type override would change what the op computes.
        if bin.1.is_some() {
            return None;
        }
        let mini = &bin.0;
        Some(if mini.is::<Add>() {
            Kind::Add
        } else if mini.is::<Sub>() {
            Kind::Sub
        } else if mini.is::<Mul>() {
            Kind::Mul
        } else if mini.is::<Div>() {
            Kind::Div
        } else {
            return None;
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FastBroadcast {
    kind: Kind,
    /// tract's op, for the shapes this one does not take.
    fallback: TypedBinOp,
}

impl FastBroadcast {
    fn label(&self) -> StaticName {
        format!("FastBroadcast{:?}", self.kind).into()
    }

    /// `a op b` for the shapes this op takes, `None` (inputs untouched) for
    /// the others. The result is written over the operand that has the
    /// output's shape (see [`crate::inplace`]), as tract's own kernels do: a
    /// fresh buffer per call costs more than the arithmetic.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.datum_type() != f32::datum_type() || b.datum_type() != f32::datum_type() {
            return Ok(None);
        }
        let Some(mut layout) = Layout::of(a.shape(), b.shape()) else {
            return Ok(None);
        };
        if a.shape() == b.shape() && !a.is_exclusive() && b.is_exclusive() {
            layout.small_first = true;
        }
        let (full, small) = if layout.small_first {
            (inputs.remove(1), inputs.remove(0))
        } else {
            (inputs.remove(0), inputs.remove(0))
        };
        let mut c = crate::inplace::take_for_writing(full)?;
        {
            let small_ram = small.try_as_plain_ram()?;
            let small = small_ram.as_slice::<f32>()?;
            let mut c_ram = c.try_as_plain_ram_mut()?;
            let out = c_ram.as_slice_mut::<f32>()?;
            let kind = self.kind;
            crate::simd::vectorize(
                #[inline(always)]
                move || match kind {
                    Kind::Add => layout.apply(out, small, |x, y| x + y),
                    Kind::Sub => layout.apply(out, small, |x, y| x - y),
                    Kind::Mul => layout.apply(out, small, |x, y| x * y),
                    Kind::Div => layout.apply(out, small, |x, y| x / y),
                },
            );
        }
        Ok(Some(c))
    }
}

crate::fallback::with_fallback!(FastBroadcast);

/// How two same-rank operands broadcast, when one of them has the output's
/// shape and the other (`small`) varies only along one contiguous block of
/// axes: the output is `outer × mid × inner` elements (`outer` the axes
/// before the block, `inner` those after) and `small` holds `mid` of them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Whether `a` is the small operand.
    pub(crate) small_first: bool,
    mid: usize,
    inner: usize,
}

impl Layout {
    pub(crate) fn of(a: &[usize], b: &[usize]) -> Option<Layout> {
        if a.len() != b.len() {
            return None;
        }
        let shape: Vec<usize> = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| match (x, y) {
                _ if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if shape.contains(&0) {
            return None;
        }
        let (full, small, small_first) = if a == shape.as_slice() {
            (a, b, false)
        } else if b == shape.as_slice() {
            (b, a, true)
        } else {
            return None;
        };
        // The axes along which `small` varies must be contiguous (axes of
        // extent 1 in between do not matter); everywhere else it is 1.
        let varying: Vec<usize> = (0..full.len()).filter(|&i| small[i] != 1).collect();
        let (start, end) = match (varying.first(), varying.last()) {
            (Some(&s), Some(&e)) => (s, e + 1),
            _ => (0, 0),
        };
        if (start..end).any(|i| small[i] != full[i]) {
            return None;
        }
        let product = |r: &[usize]| r.iter().product::<usize>();
        Some(Layout {
            mid: product(&full[start..end]),
            inner: product(&full[end..]),
            small_first,
        })
    }

    /// `full = a op b` over the layout, where `full` holds the operand of
    /// the output's shape on entry.
    #[inline(always)]
    fn apply(&self, full: &mut [f32], small: &[f32], op: impl Fn(f32, f32) -> f32 + Copy) {
        if self.small_first {
            self.run(full, small, move |x, s| op(s, x));
        } else {
            self.run(full, small, op);
        }
    }

    /// `full = f(full, small)` element by element, `small` broadcast.
    #[inline(always)]
    pub(crate) fn run(&self, full: &mut [f32], small: &[f32], f: impl Fn(f32, f32) -> f32) {
        if self.inner == 1 {
            // Rows of `mid` elements against the small operand's `mid`.
            for row in full.chunks_exact_mut(self.mid) {
                for (x, s) in row.iter_mut().zip(small) {
                    *x = f(*x, *s);
                }
            }
        } else {
            // Runs of `inner` elements against one value each.
            for (i, run) in full.chunks_exact_mut(self.inner).enumerate() {
                let s = small[i % self.mid];
                for x in run {
                    *x = f(*x, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::onnx;
    use proptest::prelude::*;

    /// tract's own op on the same operands.
    fn tract(kind: Kind, a: &Tensor, b: &Tensor) -> Tensor {
        use tract_onnx::tract_core::ops::math;
        let op = match kind {
            Kind::Add => math::add(),
            Kind::Sub => math::sub(),
            Kind::Mul => math::mul(),
            Kind::Div => math::div(),
        };
        let inputs = tvec!(a.clone().into_tvalue(), b.clone().into_tvalue());
        let mut out = op.eval_out_of_plan(inputs).unwrap().unwrap();
        out.remove(0).into_tensor()
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let v = crate::rewrite::tests::values(shape.iter().product(), seed);
        Tensor::from_shape(shape, &v).unwrap()
    }

    fn same(kind: Kind, a_shape: &[usize], b_shape: &[usize]) -> bool {
        let (a, b) = (tensor(a_shape, 1), tensor(b_shape, 2));
        let fast = FastBroadcast {
            kind,
            fallback: TypedBinOp(Box::new(Add), None),
        };
        let want = tract(kind, &a, &b);
        // Operands held by nothing else are written over; ones still held
        // elsewhere (either or both) must come out untouched.
        for held in [[false, false], [true, false], [false, true], [true, true]] {
            let values = [a.clone().into_tvalue(), b.clone().into_tvalue()];
            let kept: Vec<Option<TValue>> = values
                .iter()
                .zip(held)
                .map(|(v, h)| h.then(|| v.clone()))
                .collect();
            let mut inputs: TVec<TValue> = values.into_iter().collect();
            let Some(got) = fast.try_eval(&mut inputs).unwrap() else {
                assert_eq!(inputs.len(), 2, "inputs kept for the fallback");
                return false;
            };
            assert_eq!(got.shape(), want.shape(), "{a_shape:?} {b_shape:?}");
            assert_eq!(
                got.as_bytes(),
                want.as_bytes(),
                "{kind:?} {a_shape:?} {b_shape:?} held {held:?}"
            );
            for (k, original) in kept.iter().zip([&a, &b]) {
                if let Some(k) = k {
                    assert_eq!(k.as_bytes(), original.as_bytes(), "held input changed");
                }
            }
        }
        true
    }

    #[test]
    fn the_shapes_of_bias_residual_and_channel_ops_are_taken_and_match_tract() {
        for kind in [Kind::Add, Kind::Sub, Kind::Mul, Kind::Div] {
            // Residual (same shapes), scalar either side, trailing vector
            // either side, per-channel, a middle block.
            assert!(same(kind, &[2, 5, 8], &[2, 5, 8]));
            assert!(same(kind, &[2, 5, 8], &[1, 1, 1]));
            assert!(same(kind, &[1, 1, 1], &[2, 5, 8]));
            assert!(same(kind, &[2, 5, 8], &[1, 1, 8]));
            assert!(same(kind, &[1, 1, 8], &[2, 5, 8]));
            assert!(same(kind, &[3, 4, 2, 2], &[1, 4, 1, 1]));
            assert!(same(kind, &[3, 4, 6, 2], &[1, 4, 6, 1]));
            assert!(same(kind, &[1, 1, 1], &[1, 1, 1]));
        }
        // Both operands broadcast, or a broken block: left to tract.
        assert!(!same(Kind::Add, &[2, 1, 8], &[1, 5, 8]));
        assert!(!same(Kind::Add, &[3, 4, 6, 2], &[3, 1, 6, 1]));
    }

    #[test]
    fn a_per_channel_add_left_generic_by_tract_is_swapped_with_identical_outputs() {
        use pb::tensor_proto::DataType as D;
        use tract_onnx::pb;
        let bias: Vec<u8> = (0..4)
            .flat_map(|i| (i as f32 * 0.3 - 0.5).to_le_bytes())
            .collect();
        let proto = crate::rewrite::tests::graph_model(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "Add".into(),
                input: vec!["x".into(), "bias".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![pb::TensorProto {
                name: "bias".into(),
                data_type: D::Float as i32,
                dims: vec![1, 4, 1, 1],
                raw_data: bias,
                ..Default::default()
            }],
            input: vec![crate::rewrite::tests::value("x", D::Float, &[3, 4, 5, 5])],
            output: vec![crate::rewrite::tests::value("y", D::Float, &[3, 4, 5, 5])],
            ..Default::default()
        });
        let optimized = onnx()
            .model_for_proto_model(&proto)
            .unwrap()
            .into_optimized()
            .unwrap();
        let mut swapped = optimized.clone();
        assert_eq!(swap_in(&mut swapped).unwrap(), 1);
        let x = tensor(&[3, 4, 5, 5], 3);
        assert_eq!(
            crate::rewrite::tests::run_on(optimized, &x).as_bytes(),
            crate::rewrite::tests::run_on(swapped, &x).as_bytes()
        );
    }

    proptest! {
        #[test]
        fn any_broadcast_it_takes_equals_tracts(
            shape in prop::collection::vec(1usize..5, 1..5),
            mask in prop::collection::vec(any::<bool>(), 5),
            swap in any::<bool>(),
            kind in prop_oneof![Just(Kind::Add), Just(Kind::Sub), Just(Kind::Mul), Just(Kind::Div)],
        ) {
            let small: Vec<usize> = shape
                .iter()
                .zip(&mask)
                .map(|(d, keep)| if *keep { *d } else { 1 })
                .collect();
            let (a, b) = if swap { (small, shape) } else { (shape, small) };
            // Whether taken or not, a taken shape must equal tract's.
            same(kind, &a, &b);
        }
    }
}
