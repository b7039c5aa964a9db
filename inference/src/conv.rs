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
//! [`MAX_TABLE`] table slots; on a CPU with FMA, as `dense` is. Quantized
//! convolutions (`QLinearConv`, `ConvInteger`) of the same shapes run the
//! same loop on centred integers, exactly (see [`Quantized`]).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::dense::{
    COLS, MAX_BIAS, ROWS, Requant, centred, daz, is_int8, round_to_i32, sums_stay_exact, tile,
};

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
        // A quantized convolution also reads the input's zero point, which
        // dynamic quantization computes per call.
        let inputs = if op.quantized.is_some() {
            vec![node.inputs[0], node.inputs[3]]
        } else {
            vec![node.inputs[0]]
        };
        let name = node.name.clone();
        crate::dense::splice(model, &inputs, op, name, OutletId::new(id, 0))?;
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
    /// Per output channel (f32 convolutions).
    bias: Arc<[f32]>,
    /// For a quantized convolution, how its integer sums become outputs.
    quantized: Option<Quantized>,
}

/// What a quantized convolution (`QLinearConv`, `ConvInteger`: int8 or
/// uint8 input and constant kernel) adds. The op's second input is the
/// input's zero point `x_zp`. The kernel rows hold `w - w_zp` and the
/// patches `x - x_zp`, tract's padding value (the input's zero
/// point) becoming 0; each sum is then an integer that f32 holds exactly
/// (the same bound as `dense`'s integer products), and the output is
/// `sum + bias` as int32, or that requantized to 8 bits: tract's, bit for
/// bit.
#[derive(Debug, Clone, PartialEq)]
struct Quantized {
    /// Per output channel: integers below [`MAX_BIAS`] in magnitude.
    bias: Arc<[f64]>,
    /// 8-bit outputs (`QLinearConv`); without, the int32 sums.
    requant: Option<Requant>,
}

impl FastConv {
    fn of(model: &TypedModel, id: usize) -> TractResult<Option<FastConv>> {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            return Ok(None);
        };
        let spec = &conv.pool_spec;
        if conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.data_format != DataFormat::NCHW
            || spec.kernel_shape.len() != 2
        {
            return Ok(None);
        }
        let facts = model.node_input_facts(id)?;
        let types: TVec<DatumType> = facts.iter().map(|f| f.datum_type).collect();
        let float = conv.q_params.is_none() && types[..] == [f32::datum_type(); 3];
        let integer =
            conv.q_params.is_some() && facts.len() == 9 && is_int8(types[0]) && is_int8(types[1]);
        if !(float || integer) {
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
            [] | [1] => vec![bias.cast_to_scalar::<f64>()?; co],
            [n] if *n == co => bias
                .cast_to::<f64>()?
                .try_as_plain_ram()?
                .as_slice::<f64>()?
                .to_vec(),
            _ => return Ok(None),
        };
        let quantized = match conv.q_params {
            None => None,
            Some(out) => {
                // The bias is per channel: the requantization gets a zero
                // one, and this op adds the channel's first.
                let zero = Arc::new(tensor0(0i32));
                let constant = |i: usize| facts[i].konst.as_ref();
                let quantization = [
                    Some(&zero),
                    constant(4),
                    constant(6),
                    constant(7),
                    constant(8),
                ];
                let (Some(requant), Some(w_zp)) = (Requant::plan(out, quantization)?, constant(5))
                else {
                    return Ok(None);
                };
                let small = |b: &f64| b.abs() < f64::from(MAX_BIAS);
                if facts[3].shape.volume() != 1.to_dim()
                    || w_zp.len() != 1
                    || !bias.iter().all(small)
                {
                    return Ok(None);
                }
                let w_zp = w_zp.cast_to_scalar::<i32>()?;
                Some((
                    Quantized {
                        bias: bias.iter().map(|b| f64::from(*b as i32)).collect(),
                        requant,
                    },
                    w_zp,
                ))
            }
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
        let kernel: Vec<f32> = match quantized {
            None => {
                let kernel = kernel.cast_to::<f32>()?;
                let kernel = kernel.try_as_plain_ram()?;
                kernel.as_slice::<f32>()?.to_vec()
            }
            Some((_, w_zp)) => {
                let centred = centred(kernel, w_zp)?;
                // Per output channel (a kernel row).
                let largest = centred
                    .chunks_exact(k)
                    .map(|row| row.iter().map(|w| f64::from(w.abs())).sum::<f64>())
                    .fold(0.0, f64::max);
                if !sums_stay_exact(largest) {
                    return Ok(None);
                }
                centred
            }
        };
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
            bias: bias.into_iter().map(|b| daz(b as f32)).collect(),
            quantized: quantized.map(|(q, _)| q),
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
        match &self.quantized {
            None => "FastConv".into(),
            Some(Quantized { requant: None, .. }) => "FastConvInt".into(),
            Some(_) => "FastConvQuant".into(),
        }
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
        let out_shape = [shape[0], co, oh, ow];
        let x = inputs[0].try_as_plain_ram()?;
        let Some(quantized) = &self.quantized else {
            let bias = &*self.bias;
            let mut out = Tensor::zero::<f32>(&out_shape)?;
            self.run(
                x.as_slice::<f32>()?,
                out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                daz,
                #[inline(always)]
                move |sums, channel| {
                    let b = bias[channel];
                    let mut out = [0.0; COLS];
                    for j in 0..COLS {
                        out[j] = daz(sums[j]) + b;
                    }
                    out
                },
            );
            return Ok(tvec!(out.into_tvalue()));
        };
        let x_zp = inputs[1].cast_to_scalar::<i32>()?;
        let out = match x.as_slice::<u8>() {
            Ok(x) => self.quantized(x, x_zp, quantized, &out_shape)?,
            Err(_) => self.quantized(x.as_slice::<i8>()?, x_zp, quantized, &out_shape)?,
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

/// `x - zero_point`: an integer that f32 holds.
#[inline(always)]
fn centre<X: Into<i32>>(x: X, zero_point: i32) -> f32 {
    (x.into() - zero_point) as f32
}

impl FastConv {
    /// A quantized convolution of `x` (zero point `x_zp`), output `shape`.
    fn quantized<X: Copy + Into<i32>>(
        &self,
        x: &[X],
        x_zp: i32,
        quantized: &Quantized,
        shape: &[usize],
    ) -> TractResult<Tensor> {
        match quantized.requant {
            // Integers below 2^25.
            None => self.integer(x, x_zp, &quantized.bias, shape, round_to_i32),
            Some(requant) if requant.signed() => self.integer(
                x,
                x_zp,
                &quantized.bias,
                shape,
                #[inline(always)]
                move |sum| requant.apply(sum) as i8,
            ),
            Some(requant) => self.integer(
                x,
                x_zp,
                &quantized.bias,
                shape,
                #[inline(always)]
                move |sum| requant.apply(sum) as u8,
            ),
        }
    }

    /// The convolution of `x` (zero point `x_zp`) as `to(sum + bias)`.
    fn integer<X: Copy + Into<i32>, T: Datum + Copy + Default + tract_num_traits::Zero>(
        &self,
        x: &[X],
        x_zp: i32,
        bias: &[f64],
        shape: &[usize],
        to: impl Fn(f64) -> T + Copy,
    ) -> TractResult<Tensor> {
        let mut out = Tensor::zero::<T>(shape)?;
        self.run(
            x,
            out.try_as_plain_ram_mut()?.as_slice_mut::<T>()?,
            #[inline(always)]
            move |v| centre(v, x_zp),
            #[inline(always)]
            move |sums, channel| {
                let b = bias[channel];
                let mut out = [T::default(); COLS];
                for j in 0..COLS {
                    out[j] = to(f64::from(sums[j]) + b);
                }
                out
            },
        );
        Ok(out)
    }

    /// Every image of `x` into `out`, `[N, C, H, W]` to `[N, CO, OH, OW]`:
    /// per image, its values read as f32 by `load`, its patches gathered
    /// into panels, then each group of kernel rows times each panel,
    /// written channel by channel as `finish(sums, channel)`: a whole
    /// panel's width at a time, so that its loop vectorises (a loop over a
    /// run-time width under one vector does not).
    #[inline(always)]
    fn run<X: Copy, T: Copy>(
        &self,
        x: &[X],
        out: &mut [T],
        load: impl Fn(X) -> f32 + Copy,
        finish: impl Fn(&[f32; COLS], usize) -> [T; COLS] + Copy,
    ) {
        let [c, h, w] = self.image;
        let [co, oh, ow] = self.output;
        let (k, pixels, size) = (self.k, oh * ow, c * h * w);
        let (table, kernel) = (&*self.table, &*self.kernel);
        let mut panels = vec![0f32; table.len()];
        // One image, then a zero: what the padding's table slots read.
        let mut image = vec![0f32; size + 1];
        crate::simd::vectorize(
            #[inline(always)]
            move || {
                let images = x.chunks_exact(size);
                for (values, out) in images.zip(out.chunks_exact_mut(co * pixels)) {
                    for (v, x) in image.iter_mut().zip(values) {
                        *v = load(*x);
                    }
                    let image = &image[..=size];
                    // In bounds by construction: the compiler can gather.
                    for (v, &from) in panels.iter_mut().zip(table) {
                        *v = image[(from as usize).min(size)];
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
                                let out = &mut out[channel * pixels + first..][..width];
                                out.copy_from_slice(&finish(sums, channel)[..width]);
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
        let dt = match &self.quantized {
            None => f32::datum_type(),
            Some(Quantized { requant: None, .. }) => i32::datum_type(),
            Some(Quantized {
                requant: Some(requant),
                ..
            }) => requant.datum_type(),
        };
        Ok(tvec!(dt.fact([
            inputs[0].shape[0].clone(),
            co.to_dim(),
            oh.to_dim(),
            ow.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::im2col::tests::{DIGITS, Geometry, conv_node, conv_proto, geometries, weight_shape};
    use crate::rewrite::tests::{
        graph_model, initializer, untyped, value_with, values, with_and_without,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;

    /// An input for `g`: values that the products round (the weights are
    /// sixteenths), so that another order of summation shows.
    pub(super) fn input(g: Geometry, batch: usize, seed: u64) -> Tensor {
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
    pub(super) fn model(g: Geometry, bias: bool) -> pb::ModelProto {
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

    /// How a quantized test convolution is written.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Quant {
        /// `QLinearConv` with this output type (int8 when signed, its zero
        /// point `y_zp - 128`) and scales, else `ConvInteger`.
        pub(super) qlinear: Option<(bool, [f32; 3])>,
        x_zp: u8,
        w_zp: i8,
        y_zp: u8,
        /// A bias input (`QLinearConv` only).
        bias: bool,
        seed: u64,
    }

    pub(super) const QUANT: Quant = Quant {
        qlinear: Some((false, [0.05, 0.01, 0.2])),
        x_zp: 7,
        w_zp: 0,
        y_zp: 100,
        bias: true,
        seed: 3,
    };

    /// `g`'s convolution as `QLinearConv` or `ConvInteger` over a uint8
    /// input, int8 weights in ±120.
    pub(super) fn quantized_model(g: Geometry, q: Quant) -> pb::ModelProto {
        let n = g.m * g.c / g.group * g.kernel[0] * g.kernel[1];
        let w: Vec<u8> = (0..n as u64)
            .map(|i| (((i * 7919 + q.seed * 31) % 241) as i32 - 120) as i8 as u8)
            .collect();
        let scalar = |name: &str, v: f32| initializer(name, D::Float, &[], &v.to_le_bytes());
        let mut initializers = vec![
            initializer("w", D::Int8, &weight_shape(g), &w),
            initializer("x_zp", D::Uint8, &[], &[q.x_zp]),
            initializer("w_zp", D::Int8, &[], &[q.w_zp as u8]),
        ];
        let inputs: &[&str] = match q.qlinear {
            None => &["x", "w", "x_zp", "w_zp"],
            Some((signed, [x_scale, w_scale, y_scale])) => {
                let (y_type, y_zp) = if signed {
                    (D::Int8, q.y_zp.wrapping_sub(128))
                } else {
                    (D::Uint8, q.y_zp)
                };
                let bias: Vec<u8> = (0..g.m as i32)
                    .flat_map(|c| ((c * 389 + q.seed as i32) % 2001 - 1000).to_le_bytes())
                    .collect();
                initializers.extend([
                    scalar("x_scale", x_scale),
                    scalar("w_scale", w_scale),
                    scalar("y_scale", y_scale),
                    initializer("y_zp", y_type, &[], &[y_zp]),
                    initializer("b", D::Int32, &[g.m as i64], &bias),
                ]);
                if q.bias {
                    &[
                        "x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b",
                    ]
                } else {
                    &[
                        "x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
                    ]
                }
            }
        };
        let op = if q.qlinear.is_some() {
            "QLinearConv"
        } else {
            "ConvInteger"
        };
        let (node, dims) = conv_node(g, op, inputs, None);
        graph_model(pb::GraphProto {
            node: vec![node],
            initializer: initializers,
            input: vec![value_with("x", D::Uint8, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    pub(super) fn quantized_input(g: Geometry, batch: usize, seed: u64) -> Tensor {
        let shape = [batch, g.c, g.image[0], g.image[1]];
        let xs: Vec<u8> = (0..shape.iter().product::<usize>() as u64)
            .map(|i| ((i * 104_729 + seed * 7) % 256) as u8)
            .collect();
        Tensor::from_shape(&shape, &xs).unwrap()
    }

    #[test]
    fn a_quantized_digits_convolution_is_one_op_with_identical_outputs() {
        let configs = [
            (QUANT, "FastConvQuant", u8::datum_type()),
            (
                Quant {
                    qlinear: Some((true, [0.05, 0.01, 0.2])),
                    w_zp: -3,
                    ..QUANT
                },
                "FastConvQuant",
                i8::datum_type(),
            ),
            (
                Quant {
                    bias: false,
                    ..QUANT
                },
                "FastConvQuant",
                u8::datum_type(),
            ),
            // Outputs saturate at both ends.
            (
                Quant {
                    qlinear: Some((false, [0.05, 0.01, 0.01])),
                    ..QUANT
                },
                "FastConvQuant",
                u8::datum_type(),
            ),
            (
                Quant {
                    qlinear: None,
                    w_zp: 2,
                    ..QUANT
                },
                "FastConvInt",
                i32::datum_type(),
            ),
        ];
        for (q, op, dt) in configs {
            for batch in [1, 5] {
                let model = quantized_model(DIGITS, q);
                let (names, want, got) =
                    with_and_without(&model, swap_in, &quantized_input(DIGITS, batch, 2));
                if crate::simd::vector_level() != "baseline" {
                    assert!(names.iter().any(|n| n == op), "{q:?}: {names:?}");
                }
                assert_eq!(got.datum_type(), dt, "{q:?}");
                assert_eq!(want.shape(), [batch, 16, 8, 8]);
                assert_eq!(want.as_bytes(), got.as_bytes(), "{q:?}, batch {batch}");
            }
        }
    }

    #[test]
    fn a_dynamically_quantized_convolution_reads_its_zero_point_per_call() {
        // The zero point comes from `DynamicQuantizeLinear`, as onnxruntime's
        // dynamic quantization writes a convolution.
        let mut model = quantized_model(
            DIGITS,
            Quant {
                qlinear: None,
                ..QUANT
            },
        );
        let graph = model.graph.as_mut().unwrap();
        let mut quantize = crate::rewrite::node("DynamicQuantizeLinear", &["image"], "x", None);
        quantize.output = vec!["x".into(), "x_scale".into(), "x_zp".into()];
        graph.node.insert(0, quantize);
        graph.initializer.retain(|t| t.name != "x_zp");
        graph.input[0].name = "image".into();
        if let Some(pb::type_proto::Value::TensorType(t)) = graph.input[0]
            .r#type
            .as_mut()
            .and_then(|t| t.value.as_mut())
        {
            t.elem_type = D::Float as i32;
        }
        for (batch, seed) in [(1, 2), (3, 5)] {
            let x = input(DIGITS, batch, seed);
            let (names, want, got) = both(&model, &x);
            if crate::simd::vector_level() != "baseline" {
                assert!(names.iter().any(|n| n == "FastConvInt"), "{names:?}");
            }
            assert_eq!(got.datum_type(), i32::datum_type());
            assert_eq!(want.as_bytes(), got.as_bytes(), "batch {batch}");
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

        #[test]
        fn any_quantized_convolution_it_takes_equals_tracts(
            g in geometries(4, 20, 2),
            batch in 1usize..4,
            qlinear in prop::option::of((
                any::<bool>(),
                (-8i32..0, -10i32..-2, -6i32..2),
                any::<bool>(),
            )),
            x_zp in any::<u8>(),
            w_zp in -8i8..8,
            y_zp in any::<u8>(),
            bias in any::<bool>(),
            seed in 0u64..1000,
        ) {
            // Whole powers of two sometimes, which make ties common.
            let qlinear = qlinear.map(|(signed, (xe, we, ye), pow2)| {
                let m = |e: i32, f: f32| if pow2 { 2f32.powi(e) } else { f * 2f32.powi(e) };
                (signed, [m(xe, 0.77), m(we, 0.61), m(ye, 0.93)])
            });
            let q = Quant { qlinear, x_zp, w_zp, y_zp, bias, seed };
            let x = quantized_input(g, batch, seed);
            let (_, want, got) = with_and_without(&quantized_model(g, q), swap_in, &x);
            prop_assert_eq!(want.shape(), got.shape());
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }
    }
}
