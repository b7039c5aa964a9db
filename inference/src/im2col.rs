//! `Im2col` (the patch matrix a convolution multiplies: f32, or int8 on a
//! CPU with fast int8 kernels) copied by a table built at load.
//!
//! tract lowers a convolution to `Im2col` → matrix product, the patch matrix
//! written straight into the product's packed layout (panels of `r`
//! columns, `k` rows each). Its writer goes element by element, checking
//! the padding for every row of every kernel tap: 40 µs of the digits CNN's
//! 140 µs at batch 32, for 18 k values; with a symbolic batch it also
//! rebuilds the patch geometry on every call. Which input value (or the
//! padding) lands in each slot of the packed buffer depends only on the
//! image's shape, which the model fixes, so this op works that out once and
//! per image copies by the table. The product reads the same values in the
//! same slots as from tract's op, so its results are bit-identical.

use std::sync::Arc;

use tract_onnx::prelude::tract_num_traits::Zero;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PatchSpec;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::tract_linalg::mmm::MMMInputFormat;
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::{PackedFormat, PackedI8K4};

/// The slots of all of a model's tables together (4 bytes each): 16 MiB.
/// Convolutions past it stay tract's, so a model of many large
/// convolutions with tiny weights cannot make loading take memory without
/// bound.
const MAX_TABLES: usize = 1 << 22;

/// Replaces `Im2col`s over an NCHW image of fixed size (the batch may be
/// symbolic) with [`FastIm2col`], in graph order while their tables fit in
/// [`MAX_TABLES`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    let budget = std::cell::Cell::new(MAX_TABLES);
    crate::fallback::replace_ops(model, |model, node| {
        let Some(im2col) = node.op_as::<Im2Col>() else {
            return Ok(None);
        };
        let fast = FastIm2col::of(model, node, im2col, budget.get())?;
        if let Some(fast) = &fast {
            budget.set(budget.get() - fast.table.len());
        }
        Ok(fast)
    })
}

/// The two packed layouts tract's `Im2col` writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Layout {
    /// Panels of `r` columns, one row of `r` values per `k` (f32, and int8
    /// on AVX2).
    Rows(PackedFormat),
    /// Panels of `r` columns, `k` in blocks of 4 values per column (int8
    /// for the VNNI and dot-product kernels), `k` padded to a multiple of 4.
    K4(PackedI8K4),
}

impl Layout {
    fn of(format: &dyn MMMInputFormat, dt: DatumType) -> Option<Layout> {
        if let Some(f) = format.downcast_ref::<PackedFormat>() {
            (f.dt == dt && f.r > 0).then(|| Layout::Rows(f.clone()))
        } else if let Some(f) = format.downcast_ref::<PackedI8K4>() {
            (dt.size_of() == 1 && f.r > 0).then(|| Layout::K4(f.clone()))
        } else {
            None
        }
    }

    fn r(&self) -> usize {
        match self {
            Layout::Rows(f) => f.r,
            Layout::K4(f) => f.r,
        }
    }

    fn panel_len(&self, k: usize) -> usize {
        match self {
            Layout::Rows(f) => f.single_panel_len(k),
            Layout::K4(f) => f.single_panel_len(k),
        }
    }

    /// Values in the packed buffer of `mn` columns.
    fn len(&self, k: usize, mn: usize) -> usize {
        mn.div_ceil(self.r()) * self.panel_len(k)
    }

    fn alignment(&self) -> usize {
        match self {
            Layout::Rows(f) => f.alignment(),
            Layout::K4(f) => f.alignment(),
        }
    }

    /// Where row `row` of column `n` goes.
    fn slot(&self, k: usize, row: usize, n: usize) -> usize {
        let (r, panel) = (self.r(), n / self.r() * self.panel_len(k));
        match self {
            Layout::Rows(_) => panel + row * r + n % r,
            Layout::K4(_) => panel + row / 4 * r * 4 + n % r * 4 + row % 4,
        }
    }

    fn boxed(&self) -> Box<dyn MMMInputFormat> {
        match self {
            Layout::Rows(f) => Box::new(f.clone()),
            Layout::K4(f) => Box::new(f.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FastIm2col {
    /// The input's shape past the batch axis: `[c, h, w]`.
    chw: [usize; 3],
    dt: DatumType,
    layout: Layout,
    k: usize,
    mn: usize,
    /// For each slot of one image-and-group's packed buffer, the index of
    /// its value in that group's channels, [`Self::pad`] or [`Self::zero`].
    table: Arc<[u32]>,
    /// tract's op, for its output facts and whatever tensor this one does
    /// not take.
    fallback: Im2Col,
}

impl FastIm2col {
    /// The op for `im2col`'s node, if it takes the node's input and its
    /// table has at most `max_slots` slots.
    fn of(
        model: &TypedModel,
        node: &TypedNode,
        im2col: &Im2Col,
        max_slots: usize,
    ) -> TractResult<Option<Self>> {
        let input = model.outlet_fact(node.inputs[0])?;
        let spec = &im2col.pool_spec;
        // The batch may be symbolic; channels and image size must be fixed.
        let chw: Option<[usize; 3]> = (input.shape.rank() == 4)
            .then(|| {
                let tail = &input.shape.dims()[1..];
                let tail: Option<Vec<usize>> = tail.iter().map(|d| d.to_usize().ok()).collect();
                tail?.try_into().ok()
            })
            .flatten();
        let output = model.outlet_fact(OutletId::new(node.id, 0))?;
        let packed = output
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<PackedExoticFact>());
        let (Some([c, h, w]), Some(packed)) = (chw, packed) else {
            return Ok(None);
        };
        let dt = input.datum_type;
        let Some(layout) = Layout::of(&*packed.format, dt) else {
            return Ok(None);
        };
        // The padding value, when it is not 0: a scalar of the input's type,
        // or for int8 an i32 (an int8 convolution's zero point) of which
        // tract takes the first byte.
        let pad_fits = match node.inputs.get(1) {
            None => true,
            Some(pad) => {
                let pad = model.outlet_fact(*pad)?;
                let int8_zero_point = dt.size_of() == 1 && pad.datum_type == i32::datum_type();
                (pad.datum_type == dt || int8_zero_point)
                    && pad.shape.volume().to_usize().ok() == Some(1)
            }
        };
        let group = im2col.group;
        let kernel_len = spec
            .kernel_shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        let group_len = (c.checked_div(group))
            .and_then(|c| c.checked_mul(h)?.checked_mul(w))
            .filter(|&n| n > 0 && n < u32::MAX as usize);
        let (k, mn) = (packed.k, packed.mn.to_usize().unwrap_or(0));
        let (Some(kernel_len), Some(group_len)) = (kernel_len, group_len) else {
            return Ok(None);
        };
        let fits = spec.data_format == DataFormat::NCHW
            && [f32::datum_type(), i8::datum_type(), u8::datum_type()].contains(&dt)
            && node.inputs.len() <= 2
            && pad_fits
            && spec.kernel_shape.len() == 2
            && c % group == 0
            && Some(k) == (c / group).checked_mul(kernel_len)
            && k > 0
            && mn > 0
            && mn
                .checked_mul(k.next_multiple_of(4))
                .is_some_and(|n| n <= max_slots)
            && layout.len(k, mn) <= max_slots;
        if !fits {
            return Ok(None);
        }
        let patch = PatchSpec::for_full_shape(DataFormat::NCHW, &[1, c, h, w])?
            .with_kernel_shape(spec.kernel_shape.clone())
            .with_padding(spec.padding.clone())
            .with_strides(spec.strides().into_owned().into())
            .with_dilations(spec.dilations().into_owned().into())
            .into_patch();
        let (oh, ow) = (patch.output_shape[0], patch.output_shape[1]);
        if oh * ow != mn {
            return Ok(None);
        }
        let plane = h * w;
        let mut table = vec![Self::zero(group_len); layout.len(k, mn)];
        let (sy, sx) = (
            patch.spec.strides[0] as isize,
            patch.spec.strides[1] as isize,
        );
        for ci in 0..c / group {
            // data_field: each kernel tap's (dy, dx) from an output's corner,
            // dilation and padding included, in tract's order of taps.
            for (tap, offset) in patch.data_field.outer_iter().enumerate() {
                let row = ci * kernel_len + tap;
                for n in 0..mn {
                    let y = (n / ow) as isize * sy + offset[0];
                    let x = (n % ow) as isize * sx + offset[1];
                    let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                    let source = if inside {
                        (ci * plane) as isize + y * w as isize + x
                    } else {
                        Self::pad(group_len) as isize
                    };
                    table[layout.slot(k, row, n)] = source as u32;
                }
            }
        }
        Ok(Some(FastIm2col {
            chw: [c, h, w],
            dt,
            layout,
            k,
            mn,
            table: table.into(),
            fallback: im2col.clone(),
        }))
    }

    /// The scratch slot past a group's channels, holding the padding value
    /// (the op's second input, or 0).
    fn pad(group_len: usize) -> u32 {
        group_len as u32
    }

    /// The scratch slot after [`Self::pad`], holding 0: the packing's unused
    /// lanes, past `mn` and (K4) past `k`, which the product multiplies and
    /// must find 0 in.
    fn zero(group_len: usize) -> u32 {
        group_len as u32 + 1
    }

    fn label(&self) -> StaticName {
        "FastIm2col".into()
    }

    /// The packed patches, or `None` for a tensor this op does not take.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        let x = &inputs[0];
        let [batch, chw @ ..] = x.shape() else {
            return Ok(None);
        };
        if x.datum_type() != self.dt || chw != self.chw {
            return Ok(None);
        }
        let batch = *batch;
        if self.dt == f32::datum_type() {
            self.gather::<f32>(inputs, batch)
        } else if self.dt == i8::datum_type() {
            self.gather::<i8>(inputs, batch)
        } else if self.dt == u8::datum_type() {
            self.gather::<u8>(inputs, batch)
        } else {
            Ok(None)
        }
    }

    fn gather<T: Datum + Copy + Zero + PadValue>(
        &self,
        inputs: &TVec<TValue>,
        batch: usize,
    ) -> TractResult<Option<Tensor>> {
        let pad = match inputs.get(1) {
            None => T::zero(),
            Some(pad) if pad.len() == 1 => match T::read(pad.as_bytes()) {
                Some(pad) => pad,
                None => return Ok(None),
            },
            Some(_) => return Ok(None),
        };
        let ram = inputs[0].try_as_plain_ram()?;
        let xs = ram.as_slice::<T>()?;
        let group = self.fallback.group;
        let group_len = self.chw.iter().product::<usize>() / group;
        let mut scratch = vec![T::zero(); group_len + 2];
        scratch[Self::pad(group_len) as usize] = pad;
        let panel_bytes = self.layout.panel_len(self.k) * self.dt.size_of();
        let mut values: TVec<Box<dyn MMMInputValue>> = TVec::with_capacity(batch * group);
        for channels in xs.chunks_exact(group_len) {
            scratch[..group_len].copy_from_slice(channels);
            let mut packed =
                Tensor::zero_aligned::<T>(&[self.table.len()], self.layout.alignment())?;
            let mut packed_ram = packed.try_as_plain_ram_mut()?;
            let slots = packed_ram.as_slice_mut::<T>()?;
            for (slot, &from) in slots.iter_mut().zip(self.table.iter()) {
                *slot = scratch[from as usize];
            }
            values.push(Box::new(EagerPackedInput {
                fact: PackedExoticFact {
                    format: self.layout.boxed(),
                    k: self.k,
                    mn: self.mn.to_dim(),
                },
                packed: Arc::new(packed.into_blob()?),
                panel_bytes,
                mn: self.mn,
            }));
        }
        let storage = PackedMatrixStorage::new_batched(&[batch, group], values);
        Ok(Some(storage.into_tensor(self.dt)))
    }
}

/// A padding value from the bytes of a one-element tensor, read as tract's
/// `Im2col` reads it: its first bytes as the input's type (for int8, the
/// low byte of an i32 zero point).
trait PadValue: Sized {
    fn read(bytes: &[u8]) -> Option<Self>;
}

impl PadValue for f32 {
    fn read(bytes: &[u8]) -> Option<f32> {
        Some(f32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
    }
}

impl PadValue for i8 {
    fn read(bytes: &[u8]) -> Option<i8> {
        Some(i8::from_ne_bytes([*bytes.first()?]))
    }
}

impl PadValue for u8 {
    fn read(bytes: &[u8]) -> Option<u8> {
        bytes.first().copied()
    }
}

crate::fallback::with_fallback!(FastIm2col);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rewrite::tests::{
        graph_model, initializer, ints, op_names, optimized, untyped, value_with,
    };
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;

    /// A convolution's shape: channels in and out, group, kernel, strides,
    /// dilations, pads (top, left, bottom, right) and image size.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Geometry {
        pub(crate) c: usize,
        pub(crate) m: usize,
        pub(crate) group: usize,
        pub(crate) kernel: [usize; 2],
        pub(crate) strides: [usize; 2],
        pub(crate) dilations: [usize; 2],
        pub(crate) pads: [usize; 4],
        pub(crate) image: [usize; 2],
    }

    /// Convolutions with an output (the dilated kernel fits the padded
    /// image): `c` input and `m` output channels per group, below the
    /// bounds given.
    pub(crate) fn geometries(c: usize, m: usize, groups: usize) -> impl Strategy<Value = Geometry> {
        let pairs = |a: usize, b: usize| (1..a, 1..b);
        (
            (1..c, 1..m, 1..groups),
            (pairs(4, 4), pairs(4, 4), pairs(3, 3)),
            (0usize..3, 0usize..3, 0usize..3, 0usize..3),
            pairs(10, 10),
        )
            .prop_map(
                |((c, m, group), (kernel, strides, dilations), pads, image)| Geometry {
                    c: c * group,
                    m: m * group,
                    group,
                    kernel: [kernel.0, kernel.1],
                    strides: [strides.0, strides.1],
                    dilations: [dilations.0, dilations.1],
                    pads: [pads.0, pads.1, pads.2, pads.3],
                    image: [image.0, image.1],
                },
            )
            .prop_filter("no output", |g| {
                (0..2).all(|axis| {
                    g.image[axis] + g.pads[axis] + g.pads[axis + 2]
                        > g.dilations[axis] * (g.kernel[axis] - 1)
                })
            })
    }

    /// Values that differ from slot to slot, so a value in the wrong slot
    /// shows; `seed` varies them.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| ((i * 7919 + seed * 104_729) % 251) as f32 / 16.0 - 7.5)
            .collect()
    }

    /// `op_type` over `inputs` with `g`'s attributes, and the dims of an
    /// input `x` of `g`'s shape, the batch `N` or `batch`.
    pub(crate) fn conv_node(
        g: Geometry,
        op_type: &str,
        inputs: &[&str],
        batch: Option<i64>,
    ) -> (pb::NodeProto, [pb::tensor_shape_proto::dimension::Value; 4]) {
        use pb::tensor_shape_proto::dimension::Value as V;
        let attribute =
            |name: &str, v: &[usize]| ints(name, &v.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let group = pb::AttributeProto {
            name: "group".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: g.group as i64,
            ..Default::default()
        };
        let node = pb::NodeProto {
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            attribute: vec![
                attribute("kernel_shape", &g.kernel),
                attribute("strides", &g.strides),
                attribute("dilations", &g.dilations),
                attribute("pads", &g.pads),
                group,
            ],
            ..Default::default()
        };
        let dims = [
            batch.map_or(V::DimParam("N".into()), V::DimValue),
            V::DimValue(g.c as i64),
            V::DimValue(g.image[0] as i64),
            V::DimValue(g.image[1] as i64),
        ];
        (node, dims)
    }

    pub(crate) fn weight_shape(g: Geometry) -> [i64; 4] {
        [g.m, g.c / g.group, g.kernel[0], g.kernel[1]].map(|d| d as i64)
    }

    /// x [batch, c, h, w] → Conv (weights and bias constant) → y, `batch`
    /// named or fixed; optimised.
    fn conv_model(g: Geometry, batch: Option<i64>) -> TypedModel {
        optimized(&conv_proto(g, batch))
    }

    /// x [batch, c, h, w] → Conv (weights and bias constant) → y, `batch`
    /// named or fixed.
    pub(crate) fn conv_proto(g: Geometry, batch: Option<i64>) -> pb::ModelProto {
        let weights = values(g.m * g.c / g.group * g.kernel[0] * g.kernel[1], 3);
        let bias = values(g.m, 5);
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (node, dims) = conv_node(g, "Conv", &["x", "w", "b"], batch);
        graph_model(pb::GraphProto {
            node: vec![node],
            initializer: vec![
                initializer("w", D::Float, &weight_shape(g), &bytes(&weights)),
                initializer("b", D::Float, &[g.m as i64], &bytes(&bias)),
            ],
            input: vec![value_with("x", D::Float, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        })
    }

    pub(crate) fn input(g: Geometry, batch: usize, seed: u64) -> Tensor {
        let shape = [batch, g.c, g.image[0], g.image[1]];
        Tensor::from_shape(&shape, &values(shape.iter().product(), seed)).unwrap()
    }

    /// Every value `a` packs equals `b`'s at the same place (padding lanes
    /// aside, which the product never reads).
    fn same_packing(a: &Tensor, b: &Tensor) {
        let a = a.try_storage_as::<PackedMatrixStorage>().unwrap();
        let b = b.try_storage_as::<PackedMatrixStorage>().unwrap();
        assert_eq!(a.batch_shape(), b.batch_shape());
        assert_eq!(a.values().len(), b.values().len());
        for (a, b) in a.values().iter().zip(b.values()) {
            assert_eq!((a.k(), a.mn()), (b.k(), b.mn()));
            let (mut x, mut y) = (vec![0f32; a.k()], vec![0f32; b.k()]);
            for mn in 0..a.mn() {
                a.extract_at_mn_f32(mn, &mut x).unwrap();
                b.extract_at_mn_f32(mn, &mut y).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&x), bits(&y), "column {mn}");
            }
        }
    }

    /// Whether the convolution's `Im2col` is swapped; if it is, the packed
    /// patches and the convolution's outputs must be tract's, bit for bit.
    fn same(g: Geometry, batch: usize, seed: u64) -> bool {
        let tracts = conv_model(g, None);
        let mut ours = tracts.clone();
        let swapped = swap_in(&mut ours).unwrap();
        let im2col = tracts.nodes().iter().find_map(|n| n.op_as::<Im2Col>());
        assert_eq!(swapped, usize::from(im2col.is_some()), "{g:?}");
        let Some(im2col) = im2col else {
            return false;
        };
        let fast = ours
            .nodes()
            .iter()
            .find_map(|n| n.op_as::<FastIm2col>())
            .unwrap();
        let x = input(g, batch, seed);
        let pack = |op: &dyn EvalOp| {
            op.eval_out_of_plan(tvec!(x.clone().into_tvalue()))
                .unwrap()
                .unwrap()
                .remove(0)
        };
        same_packing(&pack(fast), &pack(im2col));
        assert_same_outputs(ours, tracts, &x, g);
        true
    }

    /// x u8 [batch, c, h, w] → ConvInteger (int8 weights, input zero point
    /// 7, so the padding is 7, not 0) → y i32, the batch named; optimised.
    fn conv_integer_model(g: Geometry) -> TypedModel {
        let n = g.m * g.c / g.group * g.kernel[0] * g.kernel[1];
        let weights: Vec<u8> = (0..n)
            .map(|i| ((i * 37 % 255) as i16 - 127) as i8 as u8)
            .collect();
        let (node, dims) = conv_node(g, "ConvInteger", &["x", "w", "x_zero_point"], None);
        let proto = graph_model(pb::GraphProto {
            node: vec![node],
            initializer: vec![
                initializer("w", D::Int8, &weight_shape(g), &weights),
                initializer("x_zero_point", D::Uint8, &[], &[7]),
            ],
            input: vec![value_with("x", D::Uint8, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        });
        optimized(&proto)
    }

    /// Whether the integer convolution's `Im2col` is swapped; if it is, the
    /// convolution's outputs must be tract's, bit for bit (every slot holds
    /// a different value, so one in the wrong slot, or padding that is not
    /// the zero point, or a nonzero unused lane, changes them).
    fn same_integer(g: Geometry, batch: usize, seed: u64) -> bool {
        let tracts = conv_integer_model(g);
        let mut ours = tracts.clone();
        let swapped = swap_in(&mut ours).unwrap();
        let im2col = tracts.nodes().iter().any(|n| n.op_is::<Im2Col>());
        assert_eq!(swapped, usize::from(im2col), "{g:?}");
        if !im2col {
            return false;
        }
        let shape = [batch, g.c, g.image[0], g.image[1]];
        let xs: Vec<u8> = values(shape.iter().product(), seed)
            .iter()
            .map(|v| ((v + 7.5) * 16.0) as u8)
            .collect();
        let x = Tensor::from_shape(&shape, &xs).unwrap();
        assert_same_outputs(ours, tracts, &x, g);
        true
    }

    #[test]
    fn an_integer_convolution_is_swapped_with_tracts_outputs() {
        for (batch, seed) in [(1, 1), (5, 2), (0, 3)] {
            assert!(same_integer(DIGITS, batch, seed));
        }
        assert!(same_integer(STRIDED, 3, 4));
    }

    /// Runs `ours` and `tracts` on `x`: their outputs must be the same bytes.
    fn assert_same_outputs(ours: TypedModel, tracts: TypedModel, x: &Tensor, g: Geometry) {
        use crate::rewrite::tests::run_on;
        assert_eq!(
            run_on(ours, x).as_bytes(),
            run_on(tracts, x).as_bytes(),
            "{g:?}"
        );
    }

    /// Groups, an uneven kernel, strides, dilation and uneven padding.
    const STRIDED: Geometry = Geometry {
        c: 4,
        m: 6,
        group: 2,
        kernel: [3, 2],
        strides: [2, 3],
        dilations: [2, 1],
        pads: [0, 2, 1, 0],
        image: [9, 11],
    };

    pub(crate) const DIGITS: Geometry = Geometry {
        c: 1,
        m: 16,
        group: 1,
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        image: [8, 8],
    };

    #[test]
    fn the_digits_convolution_is_swapped_with_tracts_outputs() {
        for (batch, seed) in [(1, 1), (5, 2), (0, 3)] {
            assert!(same(DIGITS, batch, seed));
        }
        assert!(same(STRIDED, 3, 4));
    }

    #[test]
    fn a_convolution_past_the_table_budget_stays_tracts() {
        // 9 taps × a megapixel: 9.4 M slots.
        let big = Geometry {
            image: [1024, 1024],
            ..DIGITS
        };
        let mut model = conv_model(big, None);
        assert_eq!(swap_in(&mut model).unwrap(), 0);
        assert!(op_names(&model).contains(&"Im2col".to_string()));
    }

    #[test]
    fn a_fixed_batch_is_swapped_too() {
        let mut fixed = conv_model(DIGITS, Some(4));
        assert_eq!(swap_in(&mut fixed).unwrap(), 1);
        assert!(op_names(&fixed).contains(&"FastIm2col".to_string()));
        let x = input(DIGITS, 4, 9);
        assert_same_outputs(fixed, conv_model(DIGITS, Some(4)), &x, DIGITS);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_convolution_it_takes_packs_as_tract_does(
            g in geometries(4, 4, 3),
            batch in 0usize..3,
            seed in 0u64..1000,
        ) {
            // `same` asserts that the swap happens exactly where tract packs
            // through `Im2col`, and then that packing and outputs are
            // tract's. Some geometries (a 1×1 kernel at unit stride and no
            // padding) tract runs as a plain product, without `Im2col`:
            // nothing to take there, which is not a failure.
            same(g, batch, seed);
            same_integer(g, batch, seed);
        }
    }
}
