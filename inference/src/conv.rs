//! Small f32 convolutions as one patch gather and one [`crate::dense`]
//! product per image.
//!
//! tract lowers a convolution to `Im2col` → matrix product, with the
//! product called once per image: for the digits CNN's 3×3 convolution
//! (16 channels out of 1, 8×8 pixels, `k` = 9) that is 63 µs of product and
//! 37 µs of patch writing at batch 32, about 70 % of the model. This op
//! gathers each image's patches by a table built at load (which input
//! value, or the zero padding, feeds each pixel's `k` taps, in tract's
//! order: input channel, then kernel row, then kernel column) and runs
//! [`crate::dense`]'s panel product over them, then adds the bias while
//! writing channels out first. Each output is `Σ_k w·x` in `k` order by
//! fused multiply-adds from +0 (the padding taps included, as zeros), then
//! `+ bias`: what tract's f32 kernel computes, so outputs are bit-identical
//! to tract's on an FMA CPU, subnormals read as zero as tract's kernels do
//! (see `dense`'s doc for the one exception). A convolution with one
//! output pixel stays
//! tract's: it picks a matrix-vector kernel that sums in another order.
//!
//! Takes f32 2-D convolutions, NCHW with an OIHW constant kernel of at most
//! [`crate::dense::MAX_WEIGHTS`] values and a constant bias, one group, an
//! image of fixed size (the batch may be symbolic), and at most
//! [`MAX_TABLE`] table slots; on a CPU with FMA, as `dense` is.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::dense::{COLS, ROWS, daz, tile};

/// Table slots (pixels × `k`, 4 bytes each) per convolution: 4 MiB.
const MAX_TABLE: usize = 1 << 20;
/// A table slot that reads the zero padding.
const PADDING: u32 = u32::MAX;

/// Replaces each convolution this op takes (see the module's doc) in a
/// decluttered model by [`FastConv`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    if crate::simd::vector_level() == "baseline" {
        return Ok(0);
    }
    let mut swapped = 0;
    for id in model.eval_order()? {
        let Some(op) = FastConv::of(model, id)? else {
            continue;
        };
        let node = model.node(id);
        let (name, input) = (node.name.clone(), node.inputs[0]);
        crate::dense::splice(model, &[input], op, name, OutletId::new(id, 0))?;
        swapped += 1;
    }
    model.compact()?;
    Ok(swapped)
}

/// See the module's doc.
#[derive(Debug, Clone, PartialEq)]
struct FastConv {
    /// Input channels, height, width.
    image: [usize; 3],
    /// Output channels, height, width.
    output: [usize; 3],
    /// `k`: input channels × kernel height × kernel width.
    k: usize,
    /// One image's patches in `dense`'s panel layout: for each block of
    /// [`COLS`] output pixels, for each of the `k` taps, the pixels' input
    /// offsets ([`PADDING`] for the zero padding, and for pixels past the
    /// last).
    table: Arc<[u32]>,
    /// The kernel's rows (output channels) [`ROWS`] at a time, interleaved
    /// per tap: `[w[c][kk], w[c + 1][kk], ..]`, zero past the last channel.
    kernel: Arc<[[f32; ROWS]]>,
    bias: Arc<[f32]>,
}

impl FastConv {
    fn of(model: &TypedModel, id: usize) -> TractResult<Option<FastConv>> {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            return Ok(None);
        };
        let spec = &conv.pool_spec;
        if conv.group != 1
            || conv.q_params.is_some()
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.data_format != DataFormat::NCHW
            || spec.kernel_shape.len() != 2
        {
            return Ok(None);
        }
        let facts = model.node_input_facts(id)?;
        if facts.len() != 3 || facts.iter().any(|f| f.datum_type != f32::datum_type()) {
            return Ok(None);
        }
        let (Some(kernel), Some(bias)) = (&facts[1].konst, &facts[2].konst) else {
            return Ok(None);
        };
        let dims: Option<Vec<usize>> = facts[0]
            .shape
            .iter()
            .skip(1)
            .map(|d| d.to_usize().ok())
            .collect();
        let Some([c, h, w]) = dims.and_then(|d| <[usize; 3]>::try_from(d).ok()) else {
            return Ok(None);
        };
        let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
        let co = spec.output_channels;
        let k = c * kh * kw;
        if facts[0].rank() != 4
            || kernel.shape() != [co, c, kh, kw]
            || k == 0
            || co == 0
            || k * co > crate::dense::MAX_WEIGHTS
        {
            return Ok(None);
        }
        let bias = match bias.shape() {
            [] | [1] => vec![bias.cast_to_scalar::<f32>()?; co],
            [n] if *n == co => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            _ => return Ok(None),
        };
        let padding = spec.computed_padding(&[h, w]);
        let (oh, ow) = (padding[0].convoluted, padding[1].convoluted);
        let want = tvec![
            facts[0].shape[0].clone(),
            co.to_dim(),
            oh.to_dim(),
            ow.to_dim()
        ];
        // One output pixel: tract runs its matrix-vector kernel, which
        // sums `k` in four interleaved parts, another order.
        if model.outlet_fact(OutletId::new(id, 0))?.shape.to_tvec() != want
            || oh * ow < 2
            || oh * ow * k > MAX_TABLE
            || c * h * w >= PADDING as usize
        {
            return Ok(None);
        }
        let (strides, dilations) = (spec.strides(), spec.dilations());
        // Tap `kk` of pixel `(oy, ox)`: channel, then kernel row and column.
        let tap = |pixel: usize, kk: usize| -> u32 {
            let (oy, ox) = (pixel / ow, pixel % ow);
            let (ci, ky, kx) = (kk / (kh * kw), kk / kw % kh, kk % kw);
            let y = (oy * strides[0] + ky * dilations[0]).checked_sub(padding[0].pad_before);
            let x = (ox * strides[1] + kx * dilations[1]).checked_sub(padding[1].pad_before);
            match (y, x) {
                (Some(y), Some(x)) if y < h && x < w => ((ci * h + y) * w + x) as u32,
                _ => PADDING,
            }
        };
        let pixels = oh * ow;
        let mut table = Vec::with_capacity(pixels.div_ceil(COLS) * k * COLS);
        for first in (0..pixels).step_by(COLS) {
            for kk in 0..k {
                for pixel in first..first + COLS {
                    table.push(if pixel < pixels {
                        tap(pixel, kk)
                    } else {
                        PADDING
                    });
                }
            }
        }
        let kernel = kernel.cast_to::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let mut rows = Vec::with_capacity(co.div_ceil(ROWS) * k);
        for first in (0..co).step_by(ROWS) {
            for kk in 0..k {
                rows.push(std::array::from_fn(|i| {
                    let c = first + i;
                    if c < co { daz(kernel[c * k + kk]) } else { 0.0 }
                }));
            }
        }
        Ok(Some(FastConv {
            image: [c, h, w],
            output: [co, oh, ow],
            k,
            table: table.into(),
            kernel: rows.into(),
            bias: bias.into_iter().map(daz).collect(),
        }))
    }
}

impl Hash for FastConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.image, self.output).hash(state);
    }
}

impl Eq for FastConv {}

impl Op for FastConv {
    fn name(&self) -> StaticName {
        "FastConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let [c, h, w] = self.image;
        let [co, oh, ow] = self.output;
        Ok(vec![format!("{c}×{h}×{w} → {co}×{oh}×{ow}, k:{}", self.k)])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for FastConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = inputs[0].shape();
        ensure!(
            shape.len() == 4 && shape[1..] == self.image,
            "FastConv: input shape {shape:?}, expected [N, {:?}]",
            self.image
        );
        let [co, oh, ow] = self.output;
        let mut out = Tensor::zero::<f32>(&[shape[0], co, oh, ow])?;
        let x = inputs[0].try_as_plain_ram()?;
        self.run(
            x.as_slice::<f32>()?,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl FastConv {
    /// Every image of `x` into `out`, `[N, C, H, W]` to `[N, CO, OH, OW]`:
    /// per image, its patches gathered into panels, then each group of
    /// kernel rows times each panel, written channel by channel.
    fn run(&self, x: &[f32], out: &mut [f32]) {
        let [c, h, w] = self.image;
        let [co, oh, ow] = self.output;
        let (k, pixels) = (self.k, oh * ow);
        let (table, kernel, bias) = (&*self.table, &*self.kernel, &*self.bias);
        let mut panels = vec![0f32; table.len()];
        crate::simd::vectorize(
            #[inline(always)]
            move || {
                let images = x.chunks_exact(c * h * w);
                for (image, out) in images.zip(out.chunks_exact_mut(co * pixels)) {
                    for (v, &from) in panels.iter_mut().zip(table) {
                        *v = daz(image.get(from as usize).copied().unwrap_or(0.0));
                    }
                    for (g, rows) in kernel.chunks_exact(k).enumerate() {
                        for (p, panel) in panels.chunks_exact(k * COLS).enumerate() {
                            let acc = tile(panel, rows);
                            let first = p * COLS;
                            let width = COLS.min(pixels - first);
                            for (i, sums) in acc.iter().enumerate() {
                                let channel = g * ROWS + i;
                                if channel >= co {
                                    break;
                                }
                                let b = bias[channel];
                                let out = &mut out[channel * pixels + first..][..width];
                                for (o, v) in out.iter_mut().zip(sums) {
                                    *o = daz(*v) + b;
                                }
                            }
                        }
                    }
                }
            },
        )
    }
}

impl TypedOp for FastConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [co, oh, ow] = self.output;
        Ok(tvec!(f32::fact([
            inputs[0].shape[0].clone(),
            co.to_dim(),
            oh.to_dim(),
            ow.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im2col::tests::{DIGITS, Geometry, conv_proto, geometries};
    use crate::rewrite::tests::{values, with_and_without};
    use proptest::prelude::*;
    use tract_onnx::pb;

    /// An input for `g`: values that the products round (the weights are
    /// sixteenths), so that another order of summation shows.
    fn input(g: Geometry, batch: usize, seed: u64) -> Tensor {
        let shape = [batch, g.c, g.image[0], g.image[1]];
        Tensor::from_shape(&shape, &values(shape.iter().product(), seed)).unwrap()
    }

    /// The model as tract runs it and with [`FastConv`] swapped in: the op
    /// names of the swapped model and both outputs for `x`.
    fn both(model: &pb::ModelProto, x: &Tensor) -> (Vec<String>, Tensor, Tensor) {
        with_and_without(model, swap_in, x)
    }

    /// `g`'s convolution with a symbolic batch, its bias input dropped
    /// unless `bias`.
    fn model(g: Geometry, bias: bool) -> pb::ModelProto {
        let mut proto = conv_proto(g, None);
        if !bias {
            let graph = proto.graph.as_mut().unwrap();
            graph.node[0].input.truncate(2);
            graph.initializer.retain(|t| t.name != "b");
        }
        proto
    }

    #[test]
    fn the_digits_convolution_is_one_op_with_identical_outputs() {
        let three = Geometry { c: 3, ..DIGITS };
        for (batch, g, bias) in [(1, DIGITS, true), (32, DIGITS, true), (3, three, false)] {
            let (names, want, got) = both(&model(g, bias), &input(g, batch, 2));
            if crate::simd::vector_level() != "baseline" {
                assert!(names.iter().any(|n| n == "FastConv"), "{names:?}");
                assert!(!names.iter().any(|n| n == "Conv"), "{names:?}");
            }
            assert_eq!(want.shape(), [batch, 16, 8, 8]);
            assert_eq!(want.as_bytes(), got.as_bytes(), "batch {batch}, {g:?}");
        }
    }

    #[test]
    fn a_grouped_or_large_convolution_stays_with_tract() {
        let big = Geometry {
            c: 64,
            m: 128,
            image: [4, 4],
            ..DIGITS
        };
        let grouped = Geometry {
            c: 4,
            m: 8,
            group: 2,
            ..DIGITS
        };
        for g in [big, grouped] {
            let (names, want, got) = both(&model(g, true), &input(g, 1, 2));
            assert!(!names.iter().any(|n| n == "FastConv"), "{names:?}");
            assert_eq!(want.as_bytes(), got.as_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn any_convolution_it_takes_equals_tracts(
            g in geometries(4, 20, 2),
            batch in 1usize..4,
            bias in any::<bool>(),
            seed in 0u64..1000,
            specials in prop::collection::vec(
                (0usize..600, prop_oneof![
                    Just(f32::NAN), Just(-0.0f32), Just(f32::INFINITY), Just(1e-40f32),
                ]),
                0..4,
            ),
        ) {
            let mut x = input(g, batch, seed);
            {
                let mut ram = x.try_as_plain_ram_mut().unwrap();
                let xs = ram.as_slice_mut::<f32>().unwrap();
                for (i, v) in specials {
                    if i < xs.len() {
                        xs[i] = v;
                    }
                }
            }
            let (_, want, got) = both(&model(g, bias), &x);
            prop_assert_eq!(want.shape(), got.shape());
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }
    }
}
