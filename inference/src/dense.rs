//! Small dense layers (a matrix product with a constant weight, `[m, k] ·
//! [k, n]`) in one pass of our own, for the products where tract's cost is
//! its per-call overhead rather than arithmetic.
//!
//! tract runs every product as a packing node, a kernel call per tile and,
//! for integer products, four more nodes that centre the operands and
//! correct for zero points. On the digits models that is 5.4 µs for a
//! 64×10 product at batch 32 (its 64-row f32 tile is 84 % padding) and 3 µs
//! for a 64×64 int8 product at batch 1: most of each model's time. This op
//! takes the products of a decluttered model whose weight holds at most
//! [`MAX_WEIGHTS`] values, and runs them over the weight packed in panels of
//! [`COLS`] columns:
//!
//! - f32 (`MatMul`, `Gemm`, QDQ products once tract folded the weight's
//!   `DequantizeLinear`): each output is `Σ_k a·w` accumulated in `k`
//!   order with fused multiply-adds from +0, then `+ bias` when the product
//!   feeds an `Add` of a constant per-column bias (which this op then
//!   absorbs). That is what tract's f32 kernels compute, so outputs are
//!   bit-identical to tract's on an FMA CPU. tract's x86 kernels also run
//!   with denormals-are-zero: they read a subnormal operand as a zero of
//!   its sign. This op flushes subnormal weights, bias and activations to
//!   match ([`daz`]), and the sum before the bias. The one place the two can
//!   differ is a partial sum that is itself subnormal (non-zero, below
//!   2^-126 in magnitude) inside the `k` loop: tract reads it as zero on its
//!   next multiply-add, this op carries it; the output differs by less than
//!   2^-126.
//! - integer (`MatMulInteger`, tract's `EinSum` with int32 output, scalar
//!   zero points): `Σ_k (a - a_zp)(w - w_zp)` over the same f32 panels. The
//!   weight's bound makes every partial sum an integer below 2^24 (see
//!   [`IntWeights`]), so the f32 arithmetic is exact and the int32 output
//!   equals tract's, bit for bit.
//! - requantized (`QLinearMatMul`, the same `EinSum` with a uint8 or int8
//!   output and constant scalar scales): the same exact sums, then
//!   tract's own requantization ([`Requant`]), bit for bit.
//!
//! The swap happens only on a CPU with FMA (AVX2 or AVX-512): elsewhere the
//! fused multiply-add is a library call per element, and tract keeps the
//! products. Bigger products (MiniLM's, 384×384 and up) stay with tract's
//! packed kernels, which run them faster than this loop would.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::tract_linalg::Scaler;
use tract_onnx::tract_core::tract_linalg::mmm::RoundingPolicy;

/// Columns per weight panel: one AVX-512 register, two AVX2 ones.
pub(crate) const COLS: usize = 16;
/// Rows of the activation per pass over a panel: six accumulators (twelve
/// on AVX2) in flight hide the multiply-add's latency, and leave registers
/// for the weights.
pub(crate) const ROWS: usize = 6;
/// Panels per pass for a lone row.
const WIDE: usize = 4;
/// The largest weight (`k · n` values) this op takes.
pub(crate) const MAX_WEIGHTS: usize = 1 << 16;
/// Every integer of magnitude below this is an f32.
const F32_EXACT: f64 = (1u32 << 24) as f64;

/// Whether an integer product whose weights (centred on their zero
/// point) sum to at most `largest` in magnitude per output keeps every
/// partial sum an integer that f32 holds: activations centred on theirs
/// are within ±255.
pub(crate) fn sums_stay_exact(largest: f64) -> bool {
    largest * 255.0 < F32_EXACT
}

/// An integer weight as f32 values `w - zero_point`.
pub(crate) fn centred(weight: &Tensor, zero_point: i32) -> TractResult<Vec<f32>> {
    let w = weight.cast_to::<i32>()?;
    let w = w.try_as_plain_ram()?;
    Ok(w.as_slice::<i32>()?
        .iter()
        .map(|&v| (v - zero_point) as f32)
        .collect())
}

/// Whether `t` is one of the 8-bit integer types quantized operators take.
pub(crate) fn is_int8(t: DatumType) -> bool {
    t == u8::datum_type() || t == i8::datum_type()
}

/// Replaces each small constant-weight product of a decluttered model by
/// [`FastDense`], on a CPU with FMA. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    if crate::simd::vector_level() == "baseline" {
        return Ok(0);
    }
    let outputs: std::collections::HashSet<OutletId> =
        model.output_outlets()?.iter().copied().collect();
    let mut swapped = 0;
    for id in model.eval_order()? {
        let Some((op, inputs)) = plan(model, id)? else {
            continue;
        };
        let (op, last) = match op.int {
            None => match bias_after(model, id, op.panels.n, &outputs)? {
                Some((bias, add)) => (
                    FastDense {
                        bias: Some(bias),
                        ..op
                    },
                    add,
                ),
                None => (op, id),
            },
            Some(int) if int.requant.is_some() => (op, id),
            Some(int) => match cast_to_float_after(model, id, &outputs)? {
                Some(cast) => (
                    FastDense {
                        int: Some(IntWeights {
                            as_float: true,
                            ..int
                        }),
                        ..op
                    },
                    cast,
                ),
                None => (op, id),
            },
        };
        let name = model.node(id).name.clone();
        splice(model, &inputs, op, name, OutletId::new(last, 0))?;
        swapped += 1;
    }
    model.compact()?;
    Ok(swapped)
}

/// Wires `op` (named `name`) over `inputs` and gives its output to every
/// reader of `replaced`.
pub(crate) fn splice(
    model: &mut TypedModel,
    inputs: &[OutletId],
    op: impl TypedOp,
    name: String,
    replaced: OutletId,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = inputs
        .iter()
        .map(|i| patch.tap_model(model, *i))
        .collect::<TractResult<TVec<_>>>()?;
    let out = patch.wire_node(name, op, &taps)?[0];
    patch.shunt_outside(model, replaced, out)?;
    patch.apply(model)
}

/// The op for node `id` if it is a product this op takes, with the inputs
/// it reads (the activation, and an integer product's zero point).
fn plan(model: &TypedModel, id: usize) -> TractResult<Option<(FastDense, TVec<OutletId>)>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let facts = model.node_input_facts(id)?;
    let (Some(transposed), Some(weight)) = (matrix_product(einsum, &facts), &facts[1].konst) else {
        return Ok(None);
    };
    let dims = weight.shape();
    let (k, n) = if transposed {
        (dims[1..].iter().product::<usize>(), dims[0])
    } else {
        (
            dims[..dims.len() - 1].iter().product(),
            dims[dims.len() - 1],
        )
    };
    let a_k: Option<usize> = facts[0]
        .shape
        .iter()
        .skip(1)
        .map(|d| d.to_usize().ok())
        .product();
    if k == 0 || n == 0 || k * n > MAX_WEIGHTS || a_k != Some(k) {
        return Ok(None);
    }
    let a_type = facts[0].datum_type;
    match einsum.q_params {
        // A fixed single row: tract runs its matrix-vector kernel, which
        // sums `k` in four interleaved parts, another order.
        None if facts.len() == 2
            && a_type == f32::datum_type()
            && weight.datum_type() == a_type
            && !facts[0].shape[0].is_one() =>
        {
            let w = weight.cast_to::<f32>()?;
            let w = w.try_as_plain_ram()?;
            let panels = Panels::new(k, n, transposed, w.as_slice::<f32>()?)?;
            let op = FastDense {
                panels: Arc::new(panels),
                bias: None,
                int: None,
            };
            Ok(Some((op, tvec![node.inputs[0]])))
        }
        Some(out) => {
            let Some(int) = IntWeights::plan(&facts, a_type, k, out)? else {
                return Ok(None);
            };
            let w = centred(weight, int.w_zero_point)?;
            let panels = Panels::new(k, n, transposed, &w)?;
            if !sums_stay_exact(panels.max_column_sum()) {
                return Ok(None);
            }
            let op = FastDense {
                panels: Arc::new(panels),
                bias: None,
                int: Some(int),
            };
            Ok(Some((op, tvec![node.inputs[0], node.inputs[3]])))
        }
        _ => Ok(None),
    }
}

/// Whether `einsum` is `[m, k] · [k, n] → [m, n]` (`Some(false)`) or
/// `[m, k] · [n, k]ᵀ` (`Some(true)`), with any further inputs (an integer
/// product's bias, scales and zero points) scalars. `k` may be several
/// axes (tract folds a `Flatten` before the product into it: `[m, c, h,
/// w] · [c, h, w, n]`) when both operands hold them in the same order, so
/// that flattening them row-major gives tract's `k`.
fn matrix_product(einsum: &EinSum, facts: &[&TypedFact]) -> Option<bool> {
    if facts.len() < 2 || facts[2..].iter().any(|f| f.rank() != 0) {
        return None;
    }
    let (a_rank, w_rank) = (facts[0].rank(), facts[1].rank());
    let (mut m, mut n, mut ks) = (false, None, Vec::new());
    for axis in einsum.axes.iter_all_axes() {
        if axis.inputs[2..].iter().any(|i| !i.is_empty()) {
            return None;
        }
        match (
            axis_place(&axis.inputs[0])?,
            axis_place(&axis.inputs[1])?,
            axis_place(&axis.outputs[0])?,
        ) {
            (Some(0), None, Some(0)) => m = true,
            (None, Some(w), Some(1)) => n = Some(w),
            (Some(a), Some(w), None) => ks.push((a, w)),
            _ => return None,
        }
    }
    let n = n?;
    let transposed = match n {
        0 => true,
        n if n + 1 == w_rank => false,
        _ => return None,
    };
    ks.sort_unstable();
    let first = usize::from(transposed);
    let in_order = ks
        .iter()
        .enumerate()
        .all(|(i, &(a, w))| a == i + 1 && w == i + first);
    (m && a_rank >= 2 && ks.len() + 1 == a_rank && ks.len() + 1 == w_rank && in_order)
        .then_some(transposed)
}

/// An axis's place in one operand: `Some(None)` where the axis is absent,
/// `Some(Some(p))` at one place `p`, `None` where it appears twice.
pub(crate) fn axis_place(places: &[usize]) -> Option<Option<usize>> {
    match places {
        [] => Some(None),
        [p] => Some(Some(*p)),
        _ => None,
    }
}

/// The constant per-column bias that an `Add` reading only the product's
/// output adds to it, and that `Add`'s node.
fn bias_after(
    model: &TypedModel,
    id: usize,
    n: usize,
    outputs: &std::collections::HashSet<OutletId>,
) -> TractResult<Option<(Arc<[f32]>, usize)>> {
    let Some(add) = sole_reader(model, id, outputs)? else {
        return Ok(None);
    };
    let is_add = add
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.name() == "Add");
    if !is_add || add.inputs.len() != 2 {
        return Ok(None);
    }
    let other = if add.inputs[0].node == id { 1 } else { 0 };
    let fact = model.outlet_fact(add.inputs[other])?;
    let (Some(bias), out) = (&fact.konst, model.outlet_fact(OutletId::new(add.id, 0))?) else {
        return Ok(None);
    };
    let per_column = match bias.shape() {
        [c] | [1, c] => *c == n,
        _ => false,
    };
    if !per_column
        || bias.datum_type() != f32::datum_type()
        || out.shape != model.outlet_fact(OutletId::new(id, 0))?.shape
    {
        return Ok(None);
    }
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some((bias.into(), add.id)))
}

/// The node that alone reads node `id`'s output, which is not a model
/// output: one this op may absorb.
pub(crate) fn sole_reader<'m>(
    model: &'m TypedModel,
    id: usize,
    outputs: &std::collections::HashSet<OutletId>,
) -> TractResult<Option<&'m TypedNode>> {
    if outputs.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    model.single_succ(id)
}

/// The `Cast` to f32 that alone reads an integer product's output.
fn cast_to_float_after(
    model: &TypedModel,
    id: usize,
    outputs: &std::collections::HashSet<OutletId>,
) -> TractResult<Option<usize>> {
    Ok(sole_reader(model, id, outputs)?
        .filter(|cast| {
            cast.op_as::<Cast>()
                .is_some_and(|c| c.to == f32::datum_type())
        })
        .map(|cast| cast.id))
}

/// The weight, `(w - w_zp)` for an integer product, in panels of [`COLS`]
/// columns: panel `p` holds, for each `k` in order, columns
/// `p·COLS .. p·COLS + COLS`, zero past `n`. Every value is read as tract's
/// kernels read it ([`daz`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Panels {
    pub(crate) k: usize,
    n: usize,
    values: Vec<f32>,
}

impl Panels {
    /// From the weight as stored: `[k, n]`, or `[n, k]` when `transposed`.
    pub(crate) fn new(k: usize, n: usize, transposed: bool, w: &[f32]) -> TractResult<Panels> {
        use tract_ndarray::ArrayView2;
        let w = if transposed {
            ArrayView2::from_shape((n, k), w).map(|w| w.reversed_axes())
        } else {
            ArrayView2::from_shape((k, n), w)
        };
        let mut panels = Panels::default();
        panels.pack(w?);
        Ok(panels)
    }

    /// Packs `w` (`[k, n]`, any strides) into these panels, reusing their
    /// buffer: for a product whose second operand is an activation.
    #[inline(always)]
    pub(crate) fn pack(&mut self, w: tract_ndarray::ArrayView2<'_, f32>) {
        let (k, n) = w.dim();
        self.k = k;
        self.n = n;
        self.values.clear();
        self.values.resize(n.div_ceil(COLS) * k * COLS, 0.0);
        let panel = k * COLS;
        if panel == 0 {
            return;
        }
        if w.strides()[0] == 1 && w.strides()[1] != 1 {
            // A `[n, k]` weight, its columns contiguous: per panel, each
            // `kk`'s values gathered into one vector, flushed and stored at
            // once (not one strided store per value).
            let columns: Option<Vec<&[f32]>> =
                w.columns().into_iter().map(|c| c.to_slice()).collect();
            if let Some(columns) = columns {
                let panels = self.values.chunks_exact_mut(panel);
                for (out, columns) in panels.zip(columns.chunks(COLS)) {
                    let Ok(columns) = <&[&[f32]; COLS]>::try_from(columns) else {
                        // The last panel, part empty.
                        for (j, values) in columns.iter().enumerate() {
                            let column = out[j..].iter_mut().step_by(COLS);
                            column.zip(*values).for_each(|(o, v)| *o = daz(*v));
                        }
                        continue;
                    };
                    let columns = columns.map(|c| &c[..k]);
                    for (kk, out) in out.chunks_exact_mut(COLS).enumerate() {
                        let v: [f32; COLS] = std::array::from_fn(|j| columns[j][kk]);
                        out.copy_from_slice(&v.map(daz));
                    }
                }
                return;
            }
        }
        for (row, values) in w.rows().into_iter().enumerate() {
            match values.as_slice() {
                Some(values) => {
                    for (p, values) in values.chunks(COLS).enumerate() {
                        let out = &mut self.values[p * panel + row * COLS..][..values.len()];
                        flush_into(out, values);
                    }
                }
                None => {
                    for (col, v) in values.iter().enumerate() {
                        self.values[(col / COLS) * panel + row * COLS + col % COLS] = daz(*v);
                    }
                }
            }
        }
    }

    /// The largest `Σ_k |w|` over the columns.
    fn max_column_sum(&self) -> f64 {
        let mut max = 0f64;
        for panel in self.values.chunks_exact(self.k * COLS) {
            let mut sums = [0f64; COLS];
            for row in panel.chunks_exact(COLS) {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += f64::from(v.abs());
                }
            }
            max = sums.iter().copied().fold(max, f64::max);
        }
        max
    }
}

/// What an integer product needs beyond the centred weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IntWeights {
    w_zero_point: i32,
    /// The sums go out as f32, for the `Cast` to f32 this op absorbed: the
    /// same values, each an integer below 2^24 (a zero sum is +0, as the
    /// cast of int32 0 is: the sums start at +0).
    as_float: bool,
    /// The sums go out requantized to 8 bits (`QLinearMatMul`).
    requant: Option<Requant>,
}

impl IntWeights {
    /// Takes tract's integer `EinSum` (inputs: A, B, bias, A0, A scale,
    /// B0, B scale, C0, C scale) with int8 or uint8 operands, a constant
    /// weight zero point, and `k` small enough for the 255 bound below to
    /// mean anything. With an int32 output (`MatMulInteger`), the bias and
    /// output zero point must be 0 and the scales 1; with an 8-bit one
    /// (`QLinearMatMul`) they must be constants, and become a [`Requant`].
    fn plan(
        facts: &[&TypedFact],
        a_type: DatumType,
        k: usize,
        out: DatumType,
    ) -> TractResult<Option<IntWeights>> {
        if facts.len() != 9
            || !is_int8(a_type)
            || !is_int8(facts[1].datum_type)
            || facts[3].datum_type != a_type
            || k == 0
        {
            return Ok(None);
        }
        let Some(w_zero_point) = &facts[5].konst else {
            return Ok(None);
        };
        let constant = |i: usize| facts[i].konst.as_ref();
        let Some(requant) = Requant::plan(out, [2, 4, 6, 7, 8].map(constant))? else {
            return Ok(None);
        };
        Ok(Some(IntWeights {
            w_zero_point: w_zero_point.cast_to_scalar::<i32>()?,
            as_float: false,
            requant,
        }))
    }
}

/// How tract turns an integer product's sums into 8-bit outputs
/// (`QLinearMatMul`, `QLinearConv`): `clamp(scaler(sum + bias) +
/// zero_point)` to the output type's range, in int32, where tract's
/// `Scaler` is a 24-bit multiplier and a shift that rounds half to even.
/// This computes it in f64 (see [`Requant::apply`]), which vectorises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Requant {
    /// The scaler's multiplier times 2^-shift: exactly what it multiplies
    /// by.
    scale: f64,
    bias: i32,
    zero_point: i32,
    /// int8 output, else uint8.
    signed: bool,
}

impl Eq for Requant {}

impl Hash for Requant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (
            self.scale.to_bits(),
            self.bias,
            self.zero_point,
            self.signed,
        )
            .hash(state);
    }
}

/// The largest bias (in magnitude) a [`Requant`] takes: with sums below
/// 2^24 (the f32 exactness bound), `sum + bias` stays below 2^25.
pub(crate) const MAX_BIAS: i32 = 1 << 24;

impl Requant {
    /// For an integer product with output type `out` and, as constants,
    /// its `[bias, A scale, B scale, C zero point, C scale]` (tract's
    /// quantized `EinSum` and `Conv` inputs 2, 4, 6, 7 and 8): `Some(None)`
    /// for an int32 output that is the plain sums (zero bias and zero
    /// point, unit scales: `MatMulInteger`, `ConvInteger`), `Some(Some(_))`
    /// for an 8-bit one with scalar f32 scales, `None` for anything else.
    pub(crate) fn plan(
        out: DatumType,
        [bias, a_scale, b_scale, c_zero_point, c_scale]: [Option<&Arc<Tensor>>; 5],
    ) -> TractResult<Option<Option<Requant>>> {
        let (Some(bias), Some(a_scale), Some(b_scale), Some(c_zero_point), Some(c_scale)) =
            (bias, a_scale, b_scale, c_zero_point, c_scale)
        else {
            return Ok(None);
        };
        let scalars = [bias, a_scale, b_scale, c_zero_point, c_scale];
        if scalars.iter().any(|t| t.len() != 1) {
            return Ok(None);
        }
        let value = |t: &Arc<Tensor>| t.cast_to_scalar::<f32>();
        if out == i32::datum_type() {
            let unit = value(bias)? == 0.0
                && value(a_scale)? == 1.0
                && value(b_scale)? == 1.0
                && value(c_zero_point)? == 0.0
                && value(c_scale)? == 1.0;
            return Ok(unit.then_some(None));
        }
        let f32_scales = [a_scale, b_scale, c_scale]
            .iter()
            .all(|t| t.datum_type() == f32::datum_type());
        if !is_int8(out) || !f32_scales {
            return Ok(None);
        }
        // tract's `combine_scales`, in f32, then its `Scale` op.
        let scale = value(a_scale)? * value(b_scale)? / value(c_scale)?;
        Ok(Requant::new(
            bias.cast_to_scalar::<i32>()?,
            Scaler::new(scale, RoundingPolicy::Even),
            c_zero_point.cast_to_scalar::<i32>()?,
            out == i8::datum_type(),
        )
        .map(Some))
    }

    /// `None` where f64 could differ from tract's int64 arithmetic: a shift
    /// of 64 or more (ill-defined there), a scale of 16 or more (a scaled
    /// sum could pass 2^31, where tract's int32 wraps), a bias of
    /// [`MAX_BIAS`] or more. Within those, `(sum + bias) · scale` (25 bits
    /// times 24) is exact in f64, and rounding it half to even is tract's
    /// shift.
    fn new(bias: i32, scaler: Scaler, zero_point: i32, signed: bool) -> Option<Requant> {
        let (mult, shift) = match scaler.mult {
            Some(mult) => (f64::from(mult), scaler.shift + 31),
            None => (1.0, scaler.shift),
        };
        let scale = mult * 2f64.powi(-(shift as i32));
        let fits = shift < 64 && scale < 16.0 && bias.unsigned_abs() < MAX_BIAS as u32;
        fits.then_some(Requant {
            scale,
            bias,
            zero_point,
            signed,
        })
    }

    /// An int8 output, else uint8.
    pub(crate) fn signed(self) -> bool {
        self.signed
    }

    /// The output type: int8 or uint8.
    pub(crate) fn datum_type(self) -> DatumType {
        if self.signed {
            i8::datum_type()
        } else {
            u8::datum_type()
        }
    }

    /// The output for `sum` (an integer, `|sum| < 2^24`), in the output
    /// type's range, for the caller to narrow.
    #[inline(always)]
    pub(crate) fn apply(self, sum: f64) -> i32 {
        let (low, high) = if self.signed { (-128, 127) } else { (0, 255) };
        self.rescale(sum)
            .wrapping_add(self.zero_point)
            .clamp(low, high)
    }

    /// `(sum + bias)` times tract's scaler, rounded half to even (the
    /// product is below 2^31 in magnitude, see `new`).
    #[inline(always)]
    fn rescale(self, sum: f64) -> i32 {
        round_to_i32((sum + f64::from(self.bias)) * self.scale)
    }
}

/// `v` (below 2^31 in magnitude) rounded to an integer, half to even.
/// Adding 1.5 · 2^52 rounds it, as every f64 sum rounds, and leaves the
/// integer, two's complement, in the low 32 bits. Unlike `round_ties_even`
/// then a saturating cast, this vectorises.
#[inline(always)]
pub(crate) fn round_to_i32(v: f64) -> i32 {
    const ROUND: f64 = 6_755_399_441_055_744.0;
    (v + ROUND).to_bits() as i32
}

/// `[m, k] · weight (+ bias)`: see the module's doc.
#[derive(Debug, Clone, PartialEq)]
struct FastDense {
    panels: Arc<Panels>,
    bias: Option<Arc<[f32]>>,
    /// An integer product: inputs are the activation and its zero point.
    int: Option<IntWeights>,
}

impl Hash for FastDense {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.panels.k, self.panels.n, self.bias.is_some(), self.int).hash(state);
    }
}

impl Eq for FastDense {}

impl Op for FastDense {
    fn name(&self) -> StaticName {
        match (&self.int, &self.bias) {
            (
                Some(IntWeights {
                    requant: Some(_), ..
                }),
                _,
            ) => "FastDenseQuant".into(),
            (Some(_), _) => "FastDenseInt".into(),
            (None, Some(_)) => "FastDense+Bias".into(),
            (None, None) => "FastDense".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("k:{} n:{}", self.panels.k, self.panels.n)])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for FastDense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (k, n) = (self.panels.k, self.panels.n);
        let shape = inputs[0].shape();
        ensure!(
            shape.len() >= 2 && shape[1..].iter().product::<usize>() == k,
            "FastDense: input shape {shape:?}, k {k}"
        );
        let m = shape[0];
        let output = match &self.int {
            None => {
                let a = inputs[0].try_as_plain_ram()?;
                let mut c = Tensor::zero::<f32>(&[m, n])?;
                product(
                    a.as_slice::<f32>()?,
                    &self.panels,
                    self.bias.as_deref(),
                    c.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                );
                c
            }
            Some(int) => {
                let zero_point = inputs[1].cast_to_scalar::<i32>()?;
                let a = inputs[0].try_as_plain_ram()?;
                let a = match a.as_slice::<u8>() {
                    Ok(a) => Activation::U8(a),
                    Err(_) => Activation::I8(a.as_slice::<i8>()?),
                };
                let mut sums = Tensor::zero::<f32>(&[m, n])?;
                integer_product(
                    a,
                    zero_point,
                    &self.panels,
                    sums.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                );
                match int.requant {
                    Some(requant) => {
                        let sums = sums.try_as_plain_ram()?;
                        requantize(sums.as_slice::<f32>()?, requant, &[m, n])?
                    }
                    None if int.as_float => sums,
                    // Exact: integers below 2^24.
                    None => sums.cast_to::<i32>()?.into_owned(),
                }
            }
        };
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastDense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = match self.int {
            Some(IntWeights {
                requant: Some(requant),
                ..
            }) => requant.datum_type(),
            Some(IntWeights {
                as_float: false, ..
            }) => i32::datum_type(),
            _ => f32::datum_type(),
        };
        Ok(tvec!(dt.fact([
            inputs[0].shape[0].clone(),
            self.panels.n.to_dim()
        ])))
    }

    as_op!();
}

/// `c = a · panels (+ bias)`, `a` `[m, k]` and `c` `[m, n]` row-major.
fn product(a: &[f32], panels: &Panels, bias: Option<&[f32]>, c: &mut [f32]) {
    crate::simd::vectorize(
        #[inline(always)]
        move || {
            let finish = bias.map_or(Finish::Sum, Finish::Bias);
            product_here::<true>(a, c.len() / panels.n, panels, finish, c, panels.n)
        },
    )
}

/// The 8-bit outputs for `sums` (integers, exact in f32), `shape` `[m, n]`.
fn requantize(sums: &[f32], requant: Requant, shape: &[usize]) -> TractResult<Tensor> {
    if requant.signed {
        map_sums(
            sums,
            shape,
            #[inline(always)]
            move |s| requant.apply(s) as i8,
        )
    } else {
        map_sums(
            sums,
            shape,
            #[inline(always)]
            move |s| requant.apply(s) as u8,
        )
    }
}

/// `to(sum)` for each of `sums` (integers, exact in f32), `shape`.
fn map_sums<T: Datum + Copy + tract_num_traits::Zero>(
    sums: &[f32],
    shape: &[usize],
    to: impl Fn(f64) -> T + Copy,
) -> TractResult<Tensor> {
    let mut out = Tensor::zero::<T>(shape)?;
    let mut plain = out.try_as_plain_ram_mut()?;
    let ys = plain.as_slice_mut::<T>()?;
    crate::simd::vectorize(
        #[inline(always)]
        move || {
            for (y, s) in ys.iter_mut().zip(sums) {
                *y = to(f64::from(*s));
            }
        },
    );
    Ok(out)
}

/// An integer product's activation.
#[derive(Clone, Copy)]
enum Activation<'a> {
    U8(&'a [u8]),
    I8(&'a [i8]),
}

/// `c = (a - zero_point) · panels`, exact (see [`IntWeights`]).
fn integer_product(a: Activation<'_>, zero_point: i32, panels: &Panels, c: &mut [f32]) {
    let len = match a {
        Activation::U8(a) => a.len(),
        Activation::I8(a) => a.len(),
    };
    let mut centred = vec![0f32; len];
    crate::simd::vectorize(
        #[inline(always)]
        move || {
            match a {
                Activation::U8(a) => {
                    for (x, v) in centred.iter_mut().zip(a) {
                        *x = (i32::from(*v) - zero_point) as f32;
                    }
                }
                Activation::I8(a) => {
                    for (x, v) in centred.iter_mut().zip(a) {
                        *x = (i32::from(*v) - zero_point) as f32;
                    }
                }
            }
            // Integers: nothing to flush.
            let m = c.len() / panels.n;
            product_here::<false>(&centred, m, panels, Finish::Sum, c, panels.n);
        },
    )
}

/// What a product does with each sum before it stores it.
#[derive(Clone, Copy)]
pub(crate) enum Finish<'b> {
    /// Stores the sum.
    Sum,
    /// Adds the column's bias, both read as tract's kernels read them.
    Bias(&'b [f32]),
    /// Multiplies by the scale, the sum read as tract's kernels read it.
    Scale(f32),
}

/// [`product`] on the caller's instruction set, `a` `[m, k]` row-major,
/// output row `r` at `c[r * ldc..][..n]`. With `FLUSH`, `a`'s values are
/// read as tract's kernels read them ([`daz`]); without, the caller has
/// done so (or `a` holds integers).
#[inline(always)]
pub(crate) fn product_here<const FLUSH: bool>(
    a: &[f32],
    m: usize,
    panels: &Panels,
    finish: Finish<'_>,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, n) = (panels.k, panels.n);
    let whole = m / ROWS * ROWS;
    let read = |v: f32| if FLUSH { daz(v) } else { v };
    let pairs = crate::simd::vector_level() == "avx512";
    // Two panels at a time where the registers hold both tiles' sums
    // (AVX-512: twelve of 32): twice the multiply-adds in flight.
    let paired = if pairs {
        panels.values.len() / (2 * k * COLS)
    } else {
        0
    };
    let (both, rest) = panels.values.split_at(paired * 2 * k * COLS);
    // Each group of rows, interleaved: `[a[r][kk], a[r + 1][kk], ..]` per `kk`.
    let mut group = vec![[0f32; ROWS]; k];
    for r in (0..whole).step_by(ROWS) {
        let rows: [&[f32]; ROWS] = std::array::from_fn(|i| &a[(r + i) * k..(r + i + 1) * k]);
        for (kk, x) in group.iter_mut().enumerate() {
            for (v, row) in x.iter_mut().zip(&rows) {
                *v = read(row[kk]);
            }
        }
        for (q, two) in both.chunks_exact(2 * k * COLS).enumerate() {
            let acc = tile_pair(two, &group);
            for (h, tile) in acc.iter().enumerate() {
                for (i, sums) in tile.iter().enumerate() {
                    let out = &mut c[(r + i) * ldc..][..n];
                    store(sums, out, 2 * q + h, finish);
                }
            }
        }
        for (p, panel) in rest.chunks_exact(k * COLS).enumerate() {
            let acc = tile(panel, &group);
            for (i, sums) in acc.iter().enumerate() {
                let out = &mut c[(r + i) * ldc..][..n];
                store(sums, out, 2 * paired + p, finish);
            }
        }
    }
    // The rows left over (a batch of one, say) one at a time, against
    // [`WIDE`] panels at once: as many independent sums as a group's, with
    // no padding rows to compute.
    let mut row = vec![0f32; k];
    let wide = panels.values.len() / (WIDE * k * COLS) * WIDE;
    let (blocks, rest) = panels.values.split_at(wide * k * COLS);
    for r in whole..m {
        for (x, v) in row.iter_mut().zip(&a[r * k..(r + 1) * k]) {
            *x = read(*v);
        }
        let row = &row[..];
        let out = &mut c[r * ldc..][..n];
        for (b, block) in blocks.chunks_exact(WIDE * k * COLS).enumerate() {
            let acc = tile_wide::<WIDE>(block, row);
            for (i, sums) in acc.iter().enumerate() {
                store(sums, out, b * WIDE + i, finish);
            }
        }
        for (p, panel) in rest.chunks_exact(k * COLS).enumerate() {
            let acc = tile_wide::<1>(panel, row);
            store(&acc[0], out, wide + p, finish);
        }
    }
}

/// One row `x` times `P` consecutive panels: `P × COLS` sums, each over `k`
/// in order by fused multiply-adds from +0, as [`tile`]'s.
#[inline(always)]
fn tile_wide<const P: usize>(panels: &[f32], x: &[f32]) -> [[f32; COLS]; P] {
    let k = x.len();
    let mut acc = [[0f32; COLS]; P];
    let panels: [&[f32]; P] = std::array::from_fn(|p| &panels[p * k * COLS..(p + 1) * k * COLS]);
    for (kk, v) in x.iter().enumerate() {
        for (acc, panel) in acc.iter_mut().zip(&panels) {
            let w = &panel[kk * COLS..(kk + 1) * COLS];
            for j in 0..COLS {
                acc[j] = v.mul_add(w[j], acc[j]);
            }
        }
    }
    acc
}

/// `R` rows (interleaved) times two consecutive panels, as [`tile`] does
/// for one.
#[inline(always)]
fn tile_pair<const R: usize>(two: &[f32], rows: &[[f32; R]]) -> [[[f32; COLS]; R]; 2] {
    let mut acc = [[[0f32; COLS]; R]; 2];
    let (first, second) = two.split_at(two.len() / 2);
    for ((w0, w1), x) in first
        .chunks_exact(COLS)
        .zip(second.chunks_exact(COLS))
        .zip(rows)
    {
        for r in 0..R {
            for j in 0..COLS {
                acc[0][r][j] = x[r].mul_add(w0[j], acc[0][r][j]);
                acc[1][r][j] = x[r].mul_add(w1[j], acc[1][r][j]);
            }
        }
    }
    acc
}

/// `R` rows (interleaved, see [`product_here`]) times one panel: `R ×
/// COLS` sums, each over `k` in order by fused multiply-adds from +0. `R`
/// independent accumulators per column block keep the multiply-adds from
/// waiting on each other.
#[inline(always)]
pub(crate) fn tile<const R: usize>(panel: &[f32], rows: &[[f32; R]]) -> [[f32; COLS]; R] {
    let mut acc = [[0f32; COLS]; R];
    for (w, x) in panel.chunks_exact(COLS).zip(rows) {
        for r in 0..R {
            for j in 0..COLS {
                acc[r][j] = x[r].mul_add(w[j], acc[r][j]);
            }
        }
    }
    acc
}

/// `v`, or a zero of its sign if it is subnormal: how tract's x86 kernels
/// read every operand (they run with the CPU's denormals-are-zero flag).
#[inline(always)]
pub(crate) fn daz(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE {
        v * 0.0
    } else {
        v
    }
}

/// `row`'s values into `to` as tract's kernels read them, a vector's
/// width at a time: a row as short as attention's (32 values) is otherwise
/// left to the loop's scalar remainder.
#[inline(always)]
pub(crate) fn flush_into(to: &mut [f32], row: &[f32]) {
    let mut chunks = to.chunks_exact_mut(COLS);
    for (to, row) in (&mut chunks).zip(row.chunks_exact(COLS)) {
        // Arrays, so that the loop's length is a constant to the compiler.
        if let (Ok(to), Ok(row)) = (
            <&mut [f32; COLS]>::try_from(to),
            <&[f32; COLS]>::try_from(row),
        ) {
            *to = row.map(daz);
        }
    }
    let tail = row.len() / COLS * COLS;
    for (t, v) in chunks.into_remainder().iter_mut().zip(&row[tail..]) {
        *t = daz(*v);
    }
}

/// Panel `p`'s columns of one output row, finished.
#[inline(always)]
fn store(acc: &[f32; COLS], out: &mut [f32], p: usize, finish: Finish<'_>) {
    let first = p * COLS;
    let last = (first + COLS).min(out.len());
    // A whole panel's width in loops of constant length, which vectorise
    // (a loop of run-time length up to one vector does not).
    if let Ok(out) = <&mut [f32; COLS]>::try_from(&mut out[first..last]) {
        finish_into(acc, out, first, finish);
        return;
    }
    let mut whole = [0f32; COLS];
    finish_into(acc, &mut whole, first, finish);
    let out = &mut out[first..last];
    out.copy_from_slice(&whole[..out.len()]);
}

/// `acc` finished into `out`, the columns from `first` on.
#[inline(always)]
fn finish_into(acc: &[f32; COLS], out: &mut [f32; COLS], first: usize, finish: Finish<'_>) {
    match finish {
        Finish::Bias(bias) => {
            let mut b = [0f32; COLS];
            let given = &bias[first..bias.len().min(first + COLS)];
            b[..given.len()].copy_from_slice(given);
            for j in 0..COLS {
                out[j] = daz(acc[j]) + daz(b[j]);
            }
        }
        Finish::Scale(scale) => {
            for j in 0..COLS {
                out[j] = daz(acc[j]) * scale;
            }
        }
        Finish::Sum => *out = *acc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{
        graph_model, initializer, untyped, value_with, values, with_and_without,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as V;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The model input `x`, `[N, k]` f32 with a symbolic batch, or
    /// `[rows, k]` with `fixed` rows.
    fn batch_of(k: usize, fixed: Option<usize>) -> pb::ValueInfoProto {
        let rows = match fixed {
            Some(rows) => V::DimValue(rows as i64),
            None => V::DimParam("N".into()),
        };
        value_with("x", D::Float, &[rows, V::DimValue(k as i64)])
    }

    /// `y = x · w + bias` with `x` `[N, k]`: a `MatMul` and an `Add`, or
    /// a `Gemm` with `transB` (the weight stored `[n, k]`).
    fn dense_model(
        k: usize,
        n: usize,
        gemm: bool,
        bias: bool,
        fixed: Option<usize>,
        seed: u64,
    ) -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let w_dims = if gemm {
            [n as i64, k as i64]
        } else {
            [k as i64, n as i64]
        };
        let mut initializers = vec![initializer(
            "w",
            D::Float,
            &w_dims,
            &f32_bytes(&values(k * n, seed)),
        )];
        let b: Vec<f32> = values(n, seed + 1).iter().map(|v| v * 0.1).collect();
        initializers.push(initializer("b", D::Float, &[n as i64], &f32_bytes(&b)));
        let nodes = match (gemm, bias) {
            (true, _) => {
                let mut gemm = node(
                    "Gemm",
                    if bias { &["x", "w", "b"] } else { &["x", "w"] },
                    "y",
                );
                gemm.attribute.push(pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: 1,
                    ..Default::default()
                });
                vec![gemm]
            }
            (false, true) => vec![
                node("MatMul", &["x", "w"], "xw"),
                node("Add", &["xw", "b"], "y"),
            ],
            (false, false) => vec![node("MatMul", &["x", "w"], "y")],
        };
        graph_model(pb::GraphProto {
            node: nodes,
            initializer: initializers,
            input: vec![batch_of(k, fixed)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// `DynamicQuantizeLinear(x)` times an int8 weight by `MatMulInteger`,
    /// then (`cast`) cast to f32, as onnxruntime's dynamic quantization
    /// writes a dense layer.
    fn integer_model(k: usize, n: usize, w: &[i8], w_zp: i8, cast: bool) -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let mut quantize = node("DynamicQuantizeLinear", &["x"], "xq");
        quantize.output = vec!["xq".into(), "x_scale".into(), "x_zp".into()];
        let product = if cast { "acc" } else { "y" };
        let mut nodes = vec![
            quantize,
            node("MatMulInteger", &["xq", "w", "x_zp", "w_zp"], product),
        ];
        if cast {
            nodes.push(crate::rewrite::node("Cast", &["acc"], "y", Some(D::Float)));
        }
        let w_bytes: Vec<u8> = w.iter().map(|v| *v as u8).collect();
        graph_model(pb::GraphProto {
            node: nodes,
            initializer: vec![
                initializer("w", D::Int8, &[k as i64, n as i64], &w_bytes),
                initializer("w_zp", D::Int8, &[], &[w_zp as u8]),
            ],
            input: vec![batch_of(k, None)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// The scales and zero points of a [`qlinear_model`].
    #[derive(Debug, Clone, Copy)]
    struct QLinear {
        x_scale: f32,
        x_zp: u8,
        w_scale: f32,
        w_zp: i8,
        y_scale: f32,
        /// An int8 output (zero point `y_zp - 128`), else uint8.
        signed: bool,
        y_zp: u8,
    }

    /// `QuantizeLinear(x)` times an int8 weight by `QLinearMatMul`, as
    /// onnxruntime's static QOperator quantization writes a dense layer.
    fn qlinear_model(k: usize, n: usize, w: &[i8], q: QLinear) -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str| {
            crate::rewrite::node(op, inputs, output, None)
        };
        let (y_type, y_zp) = if q.signed {
            (D::Int8, q.y_zp.wrapping_sub(128))
        } else {
            (D::Uint8, q.y_zp)
        };
        let scalar = |name: &str, v: f32| initializer(name, D::Float, &[], &v.to_le_bytes());
        let w_bytes: Vec<u8> = w.iter().map(|v| *v as u8).collect();
        graph_model(pb::GraphProto {
            node: vec![
                node("QuantizeLinear", &["x", "x_scale", "x_zp"], "xq"),
                node(
                    "QLinearMatMul",
                    &[
                        "xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
                    ],
                    "y",
                ),
            ],
            initializer: vec![
                scalar("x_scale", q.x_scale),
                initializer("x_zp", D::Uint8, &[], &[q.x_zp]),
                initializer("w", D::Int8, &[k as i64, n as i64], &w_bytes),
                scalar("w_scale", q.w_scale),
                initializer("w_zp", D::Int8, &[], &[q.w_zp as u8]),
                scalar("y_scale", q.y_scale),
                initializer("y_zp", y_type, &[], &[y_zp]),
            ],
            input: vec![batch_of(k, None)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    /// The model as tract runs it and with our products swapped in: the op
    /// names of the swapped model and both outputs for `x` (`[rows, k]`).
    fn both(model: &pb::ModelProto, x: &[f32], rows: usize) -> (Vec<String>, Tensor, Tensor) {
        let x = Tensor::from_shape(&[rows, x.len() / rows], x).unwrap();
        with_and_without(model, swap_in, &x)
    }

    fn swaps() -> bool {
        crate::simd::vector_level() != "baseline"
    }

    #[test]
    fn a_dense_layer_is_one_product_with_its_bias_and_identical_outputs() {
        for (gemm, bias) in [(false, true), (false, false), (true, true), (true, false)] {
            let (k, n, rows) = (64, 10, 13);
            let model = dense_model(k, n, gemm, bias, None, 3);
            let (names, want, got) = both(&model, &values(rows * k, 4), rows);
            let want_op = if bias { "FastDense+Bias" } else { "FastDense" };
            if swaps() {
                assert!(
                    names.iter().any(|o| o == want_op),
                    "{gemm} {bias}: {names:?}"
                );
                assert!(
                    !names.iter().any(|o| o == "Add"),
                    "{gemm} {bias}: {names:?}"
                );
            }
            assert_eq!(want.shape(), [rows, n]);
            assert_eq!(want.as_bytes(), got.as_bytes(), "gemm {gemm} bias {bias}");
        }
    }

    #[test]
    fn a_flatten_before_the_product_is_taken_too() {
        // tract folds the Flatten into the product: k is three axes.
        let mut model = dense_model(24, 10, false, true, None, 5);
        let graph = model.graph.as_mut().unwrap();
        graph
            .node
            .insert(0, crate::rewrite::node("Flatten", &["image"], "x", None));
        graph.input = vec![value_with(
            "image",
            D::Float,
            &[
                V::DimParam("N".into()),
                V::DimValue(4),
                V::DimValue(3),
                V::DimValue(2),
            ],
        )];
        let rows = 7;
        let x = Tensor::from_shape(&[rows, 4, 3, 2], &values(rows * 24, 6)).unwrap();
        let (names, want, got) = with_and_without(&model, swap_in, &x);
        if swaps() {
            assert!(names.iter().any(|o| o == "FastDense+Bias"), "{names:?}");
            assert!(!names.iter().any(|o| o == "Reshape"), "{names:?}");
        }
        assert_eq!(want.as_bytes(), got.as_bytes());
    }

    #[test]
    fn a_fixed_single_row_stays_with_tracts_matrix_vector_kernel() {
        // tract sums a lone row in four interleaved parts: another order.
        for rows in [1, 2, 5] {
            let model = dense_model(64, 10, false, true, Some(rows), 3);
            let (names, want, got) = both(&model, &values(rows * 64, 4), rows);
            let swapped = names.iter().any(|o| o.starts_with("FastDense"));
            assert_eq!(swapped, swaps() && rows > 1, "rows {rows}: {names:?}");
            assert_eq!(want.as_bytes(), got.as_bytes(), "rows {rows}");
        }
    }

    /// `n` int8 weights over the whole range.
    fn spread(n: usize) -> Vec<i8> {
        (0..n)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect()
    }

    #[test]
    fn an_integer_product_is_exact_and_absorbs_its_cast() {
        let (k, n, rows) = (64, 24, 7);
        let w = spread(k * n);
        for (cast, w_zp) in [(true, 0), (false, 0), (true, -3), (false, 5)] {
            let model = integer_model(k, n, &w, w_zp, cast);
            let (names, want, got) = both(&model, &values(rows * k, 9), rows);
            if swaps() {
                assert!(names.iter().any(|o| o == "FastDenseInt"), "{names:?}");
                assert!(!names.iter().any(|o| o == "Cast"), "{names:?}");
            }
            let dt = if cast {
                f32::datum_type()
            } else {
                i32::datum_type()
            };
            assert_eq!(got.datum_type(), dt);
            assert_eq!(want.as_bytes(), got.as_bytes(), "cast {cast}, w_zp {w_zp}");
        }
    }

    #[test]
    fn a_qlinear_product_is_requantized_as_tract_does() {
        let (k, n, rows) = (64, 24, 7);
        let w = spread(k * n);
        let q = QLinear {
            x_scale: 0.1,
            x_zp: 128,
            w_scale: 0.02,
            w_zp: 0,
            y_scale: 0.7,
            signed: false,
            y_zp: 120,
        };
        let configs = [
            q,
            QLinear { signed: true, ..q },
            QLinear {
                w_zp: -3,
                x_zp: 7,
                ..q
            },
            // A power-of-two scale: tract's scaler is a plain shift.
            QLinear {
                x_scale: 0.125,
                w_scale: 0.0625,
                y_scale: 1.0,
                ..q
            },
            // Outputs saturate at both ends.
            QLinear { y_scale: 0.05, ..q },
        ];
        for q in configs {
            let model = qlinear_model(k, n, &w, q);
            let (names, want, got) = both(&model, &values(rows * k, 9), rows);
            if swaps() {
                assert!(names.iter().any(|o| o == "FastDenseQuant"), "{names:?}");
            }
            let dt = if q.signed {
                i8::datum_type()
            } else {
                u8::datum_type()
            };
            assert_eq!(got.datum_type(), dt, "{q:?}");
            assert_eq!(want.as_bytes(), got.as_bytes(), "{q:?}");
        }
    }

    #[test]
    fn rescaling_rounds_as_tracts_scaler_does_ties_included() {
        // Scales of few significant bits, so that many products are ties.
        for mantissa in (1..16).step_by(2) {
            for exponent in -12..4 {
                let scale = mantissa as f32 / 16.0 * 2f32.powi(exponent);
                let scaler = Scaler::new(scale, RoundingPolicy::Even);
                let requant = Requant::new(3, scaler, 0, false).unwrap();
                for sum in -3000..3000 {
                    let want = (sum + 3) * scaler;
                    assert_eq!(requant.rescale(f64::from(sum)), want, "{sum} {scaler:?}");
                }
            }
        }
    }

    #[test]
    fn an_integer_product_that_could_leave_f32s_exact_range_stays_with_tract() {
        // 255 · 600 · 127 > 2^24.
        let (k, n) = (600, 4);
        let w = vec![127i8; k * n];
        let (names, want, got) = both(&integer_model(k, n, &w, 0, true), &values(2 * k, 1), 2);
        assert!(
            !names.iter().any(|o| o.starts_with("FastDense")),
            "{names:?}"
        );
        assert_eq!(want.as_bytes(), got.as_bytes());
        // One less column sum of 127 and it fits.
        let w = vec![127i8; 500 * n];
        let (names, ..) = both(&integer_model(500, n, &w, 0, true), &values(2 * 500, 1), 2);
        assert_eq!(
            swaps(),
            names.iter().any(|o| o == "FastDenseInt"),
            "{names:?}"
        );
    }

    #[test]
    fn a_large_weight_stays_with_tracts_packed_kernels() {
        let model = dense_model(512, 256, false, true, None, 1);
        let (names, want, got) = both(&model, &values(2 * 512, 2), 2);
        assert!(
            !names.iter().any(|o| o.starts_with("FastDense")),
            "{names:?}"
        );
        assert_eq!(want.as_bytes(), got.as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn any_dense_layer_it_takes_equals_tracts(
            rows in 1usize..20,
            k in 1usize..70,
            n in 1usize..40,
            gemm in any::<bool>(),
            bias in any::<bool>(),
            fixed in any::<bool>(),
            seed in 0u64..1000,
            specials in prop::collection::vec(
                (0usize..1400, prop_oneof![
                    Just(f32::NAN), Just(0.0f32), Just(-0.0f32),
                    Just(f32::INFINITY), Just(1e30f32), Just(1e-40f32),
                ]),
                0..6,
            ),
        ) {
            let mut x = values(rows * k, seed);
            for (i, v) in specials {
                if i < x.len() {
                    x[i] = v;
                }
            }
            // tract declutters some shapes (a single output column, say)
            // into other ops: what matters is that outputs never change.
            let model = dense_model(k, n, gemm, bias, fixed.then_some(rows), seed + 1);
            let (_, want, got) = both(&model, &x, rows);
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }

        #[test]
        fn any_integer_product_it_takes_equals_tracts(
            rows in 1usize..20,
            k in 1usize..70,
            n in 1usize..40,
            w_zp in -8i8..8,
            cast in any::<bool>(),
            seed in 0u64..1000,
        ) {
            // Weights within ±120, so that `w - w_zp` stays an int8.
            let w: Vec<i8> = (0..k * n)
                .map(|i| (((i as u64 * 7919 + seed * 31) % 241) as i32 - 120) as i8)
                .collect();
            let model = integer_model(k, n, &w, w_zp, cast);
            let (_, want, got) = both(&model, &values(rows * k, seed), rows);
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }

        #[test]
        fn any_qlinear_product_it_takes_equals_tracts(
            rows in 1usize..20,
            k in 1usize..70,
            n in 1usize..40,
            x_zp in any::<u8>(),
            w_zp in -8i8..8,
            y_zp in any::<u8>(),
            signed in any::<bool>(),
            scales in (-8i32..2, -10i32..0, -6i32..4, 0.5f32..1.0, 0.5f32..1.0, 0.5f32..1.0),
            pow2 in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let w: Vec<i8> = (0..k * n)
                .map(|i| (((i as u64 * 7919 + seed * 31) % 241) as i32 - 120) as i8)
                .collect();
            // A whole power of two makes ties common.
            let (xe, we, ye, xm, wm, ym) = scales;
            let (xm, wm, ym) = if pow2 { (1.0, 1.0, 1.0) } else { (xm, wm, ym) };
            let q = QLinear {
                x_scale: xm * 2f32.powi(xe),
                x_zp,
                w_scale: wm * 2f32.powi(we),
                w_zp,
                y_scale: ym * 2f32.powi(ye),
                signed,
                y_zp,
            };
            let model = qlinear_model(k, n, &w, q);
            let (_, want, got) = both(&model, &values(rows * k, seed), rows);
            prop_assert_eq!(want.as_bytes(), got.as_bytes());
        }

        #[test]
        fn requantizing_clamps_tracts_scaler(
            sum in -(1i32 << 24)..(1 << 24),
            bias in -1000i32..1000,
            scale in prop_oneof![
                Just(0.0f32),
                (-30i32..8).prop_map(|e| 2f32.powi(e)),
                (1e-9f32..100.0),
            ],
            zero_point in -128i32..256,
            signed in any::<bool>(),
        ) {
            let scaler = Scaler::new(scale, RoundingPolicy::Even);
            let (low, high) = if signed { (-128, 127) } else { (0, 255) };
            let want = ((sum + bias) * scaler + zero_point).clamp(low, high);
            match Requant::new(bias, scaler, zero_point, signed) {
                Some(requant) => {
                    prop_assert_eq!(requant.apply(f64::from(sum)), want, "{:?}", scaler);
                }
                // tract's int32 could wrap: that scale stays tract's.
                None => prop_assert!(scale >= 16.0, "{:?}", scaler),
            }
        }
    }
}
