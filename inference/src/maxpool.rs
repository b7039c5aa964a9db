//! f32 `MaxPool` over unpadded channel-first planes, without tract's
//! per-call geometry.
//!
//! With a symbolic batch dimension tract keeps `MaxPool` unlowered and, on
//! every call, builds the concrete pool geometry (a patch description of the
//! whole image) before pooling: 7 µs of the digits CNN's 28 µs at batch 1,
//! about a quarter of it at batch 32. The pooling itself is a few loads and
//! comparisons per output. This op takes the same node when the windows
//! need no padding or dilation, reads the shape of the tensor it gets, and
//! folds each window in tract's order with tract's comparison, so the
//! values are bit for bit the same (NaN skipped, and which zero wins
//! between -0 and +0 as tract picks it); any other pool stays tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Replaces every `MaxPool` left unlowered in an optimised model (a
/// symbolic input shape) that [`FastMaxPool`] computes exactly. Returns how
/// many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |model, node| {
        let Some(pool) = node.op_as::<MaxPool>() else {
            return Ok(None);
        };
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            return Ok(None);
        }
        Ok(FastMaxPool::of(pool))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FastMaxPool {
    kernel: [usize; 2],
    strides: [usize; 2],
    /// tract's op, for its output facts and whatever tensor this one does
    /// not take.
    fallback: MaxPool,
}

/// Whether each of the pool's outputs is one of its input values (NaN
/// aside): no padding, so every window lies inside the image, and only the
/// pooled values as output.
pub(crate) fn picks_input_values(pool: &MaxPool) -> bool {
    let unpadded = match &pool.pool_spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after)
        | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            before.iter().chain(after).all(|&p| p == 0)
        }
        _ => false,
    };
    unpadded && pool.with_index_outputs.is_none()
}

impl FastMaxPool {
    fn of(pool: &MaxPool) -> Option<FastMaxPool> {
        let spec = &pool.pool_spec;
        let channels_first = matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW);
        let kernel: [usize; 2] = spec.kernel_shape.as_slice().try_into().ok()?;
        let strides: [usize; 2] = spec.strides().as_ref().try_into().ok()?;
        let undilated = spec.dilations().iter().all(|&d| d == 1);
        // tract pools a 2×2 window at stride 1 with its own vector kernel,
        // whose order of comparison this op does not copy.
        let tracts_vector_kernel = kernel == [2, 2] && strides == [1, 1];
        (picks_input_values(pool)
            && channels_first
            && undilated
            && !tracts_vector_kernel
            && kernel.iter().chain(&strides).all(|&k| k >= 1))
        .then(|| FastMaxPool {
            kernel,
            strides,
            fallback: pool.clone(),
        })
    }

    fn label(&self) -> StaticName {
        "FastMaxPool".into()
    }

    /// The pooled tensor, or `None` for a tensor this op does not take.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        let input = &inputs[0];
        let shape = input.shape();
        if input.datum_type() != f32::datum_type() || shape.len() < 2 {
            return Ok(None);
        }
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let ([kh, kw], [sh, sw]) = (self.kernel, self.strides);
        if h < kh || w < kw {
            return Ok(None);
        }
        let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
        let out_shape = self.fallback.pool_spec.output_shape(shape)?.shape;
        if out_shape[out_shape.len() - 2..] != [oh, ow] {
            return Ok(None);
        }
        let ram = input.try_as_plain_ram()?;
        let xs = ram.as_slice::<f32>()?;
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        let mut out_ram = output.try_as_plain_ram_mut()?;
        let out = out_ram.as_slice_mut::<f32>()?;
        let format = self.fallback.pool_spec.data_format;
        if self.kernel == [2, 2] && format == DataFormat::NCHW {
            // tract's 2×2 path (NCHW only): f32::max from f32::MIN.
            self.pool(xs, [h, w], out, [oh, ow], f32::max);
        } else {
            // tract's general path: the larger by `<`, first kept on ties.
            self.pool(xs, [h, w], out, [oh, ow], |m, v| if m < v { v } else { m });
        }
        Ok(Some(output))
    }

    /// Every output of every `h × w` plane in `xs`: `fold` over its window
    /// row by row from `f32::MIN`.
    fn pool(
        &self,
        xs: &[f32],
        [h, w]: [usize; 2],
        out: &mut [f32],
        [oh, ow]: [usize; 2],
        fold: impl Fn(f32, f32) -> f32,
    ) {
        let ([kh, kw], [sh, sw]) = (self.kernel, self.strides);
        if [kh, kw, sh, sw] == [2; 4] {
            // The classic pool, with the loop shape fixed: 10× faster than
            // the general walk on the small images of a CNN, where per-row
            // set-up dominates. Same fold, same order.
            let planes = xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow));
            for (plane, out) in planes {
                for (rows, out) in plane.chunks_exact(2 * w).zip(out.chunks_exact_mut(ow)) {
                    let (top, bottom) = rows.split_at(w);
                    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                    for (o, (a, b)) in out.iter_mut().zip(windows) {
                        *o = fold(fold(fold(fold(f32::MIN, a[0]), a[1]), b[0]), b[1]);
                    }
                }
            }
            return;
        }
        for (plane, out) in xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                out.fill(f32::MIN);
                // Tap by tap across the whole output row: each output still
                // folds its window in (ky, kx) order, and the row loop
                // vectorises.
                for row in plane[oy * sh * w..][..kh * w].chunks_exact(w) {
                    for kx in 0..kw {
                        let taps = row[kx..].iter().step_by(sw);
                        for (m, &v) in out.iter_mut().zip(taps) {
                            *m = fold(*m, v);
                        }
                    }
                }
            }
        }
    }
}

crate::fallback::with_fallback!(FastMaxPool);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    fn max_pool(kernel: [usize; 2], strides: [usize; 2], format: DataFormat) -> MaxPool {
        MaxPool {
            pool_spec: PoolSpec {
                data_format: format,
                kernel_shape: kernel.into_iter().collect(),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(strides.into_iter().collect()),
                input_channels: 3,
                output_channels: 3,
            },
            with_index_outputs: None,
        }
    }

    /// Values with repeats, both zeros and NaN, so ties and skips show; odd
    /// seeds draw only from NaN, ±0 and -1, so whole windows tie at zero.
    fn input(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..n as u64)
            .map(|i| {
                let k = (i * 7919 + seed * 104_729) % 13;
                match (seed % 2, k) {
                    (_, 0) => f32::NAN,
                    (_, 1) => 0.0,
                    (_, 2) => -0.0,
                    (1, _) => [0.0, -0.0, -1.0][k as usize % 3],
                    _ => (k as f32 - 6.0) * 0.5,
                }
            })
            .collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    /// Whether the fast op takes the case; if it does, its bytes must equal
    /// tract's.
    fn same(kernel: [usize; 2], strides: [usize; 2], shape: &[usize], seed: u64) -> bool {
        let format = if shape.len() == 4 {
            DataFormat::NCHW
        } else {
            DataFormat::CHW
        };
        let pool = max_pool(kernel, strides, format);
        let Some(fast) = FastMaxPool::of(&pool) else {
            return false;
        };
        let x = input(shape, seed);
        let Some(got) = fast.try_eval(&mut tvec!(x.clone().into_tvalue())).unwrap() else {
            return false;
        };
        let want = pool
            .eval_out_of_plan(tvec!(x.into_tvalue()))
            .unwrap()
            .unwrap()
            .remove(0);
        assert_eq!(
            got.shape(),
            want.shape(),
            "{kernel:?} {strides:?} {shape:?}"
        );
        assert_eq!(
            got.as_bytes(),
            want.as_bytes(),
            "{kernel:?} {strides:?} {shape:?}"
        );
        true
    }

    #[test]
    fn the_classic_pools_are_taken_and_match_tract() {
        assert!(same([2, 2], [2, 2], &[4, 3, 8, 8], 1));
        assert!(same([2, 2], [2, 2], &[1, 3, 7, 9], 2));
        assert!(same([3, 3], [2, 2], &[2, 3, 9, 9], 3));
        assert!(same([3, 3], [1, 1], &[2, 3, 5, 6], 4));
        assert!(same([2, 3], [3, 1], &[3, 8, 8], 5));
        assert!(same([2, 2], [2, 2], &[3, 8, 8], 6));
        // tract's own vector kernel, and windows larger than the image.
        assert!(!same([2, 2], [1, 1], &[1, 3, 8, 8], 6));
        assert!(!same([3, 3], [1, 1], &[1, 3, 2, 8], 7));
    }

    /// x [batch, 3, 8, 8] → MaxPool(2×2, stride 2) → y, `batch` named or
    /// fixed.
    fn pool_model(batch: Option<i64>) -> TypedModel {
        use pb::tensor_shape_proto::dimension::Value as V;
        use tract_onnx::pb;
        let dims = [
            batch.map_or(V::DimParam("N".into()), V::DimValue),
            V::DimValue(3),
            V::DimValue(8),
            V::DimValue(8),
        ];
        let ints = |name: &str| crate::rewrite::tests::ints(name, &[2, 2]);
        let proto = crate::rewrite::tests::graph_model(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "MaxPool".into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                attribute: vec![ints("kernel_shape"), ints("strides")],
                ..Default::default()
            }],
            input: vec![crate::rewrite::tests::value_with(
                "x",
                pb::tensor_proto::DataType::Float,
                &dims,
            )],
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        crate::rewrite::tests::optimized(&proto)
    }

    #[test]
    fn a_pool_over_a_named_batch_is_swapped_with_the_fixed_shape_outputs() {
        let mut dynamic = pool_model(None);
        assert_eq!(swap_in(&mut dynamic).unwrap(), 1);
        let dynamic = dynamic.into_runnable().unwrap();
        for batch in [1, 5] {
            // tract lowers a pool over a fixed shape to its own fast op.
            let fixed = pool_model(Some(batch as i64)).into_runnable().unwrap();
            let x = input(&[batch, 3, 8, 8], 7);
            let run = |plan: &Arc<TypedSimplePlan>| {
                plan.run(tvec!(x.clone().into_tvalue())).unwrap().remove(0)
            };
            assert_eq!(run(&dynamic).as_bytes(), run(&fixed).as_bytes());
        }
    }

    proptest! {
        #[test]
        fn any_pool_it_takes_equals_tracts(
            kernel in (1usize..4, 1usize..4),
            strides in (1usize..4, 1usize..4),
            shape in (0usize..3, 1usize..10, 1usize..10),
            seed in 0u64..1000,
        ) {
            // A batch of 0 stands for no batch axis (CHW).
            let (n, h, w) = shape;
            let shape = if n == 0 { vec![3, h, w] } else { vec![n, 3, h, w] };
            let (kernel, strides) = ([kernel.0, kernel.1], [strides.0, strides.1]);
            let taken = same(kernel, strides, &shape, seed);
            let expected = !(kernel == [2, 2] && strides == [1, 1]) && h >= kernel[0] && w >= kernel[1];
            prop_assert_eq!(taken, expected, "{:?} {:?} {:?}", kernel, strides, shape);
        }
    }
}
