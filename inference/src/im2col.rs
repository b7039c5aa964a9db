//! f32 `Im2col` (the patch matrix a convolution multiplies) copied by a
//! table built at load.
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

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PatchSpec;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::PackedFormat;

/// The slots of all of a model's tables together (4 bytes each): 16 MiB.
/// Convolutions past it stay tract's, so a model of many large
/// convolutions with tiny weights cannot make loading take memory without
/// bound.
const MAX_TABLES: usize = 1 << 22;

/// Replaces f32 `Im2col`s over an NCHW image of fixed size (the batch may
/// be symbolic) with [`FastIm2col`], in graph order while their tables fit
/// in [`MAX_TABLES`]. Returns how many.
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FastIm2col {
    /// The input's shape past the batch axis: `[c, h, w]`.
    chw: [usize; 3],
    format: PackedFormat,
    k: usize,
    mn: usize,
    /// For each slot of one image-and-group's packed buffer, the index of
    /// its value in that group's channels, or [`Self::zero`].
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
        let Some(format) = packed.format.downcast_ref::<PackedFormat>() else {
            return Ok(None);
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
            && input.datum_type == f32::datum_type()
            && format.dt == f32::datum_type()
            && node.inputs.len() == 1
            && spec.kernel_shape.len() == 2
            && c % group == 0
            && Some(k) == (c / group).checked_mul(kernel_len)
            && k > 0
            && mn > 0
            && format.r > 0
            && mn.checked_mul(k).is_some_and(|n| n <= max_slots)
            && format.len(k, mn) <= max_slots;
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
        let (r, panel_len) = (format.r, format.single_panel_len(k));
        let plane = h * w;
        let mut table = vec![Self::zero(group_len); format.len(k, mn)];
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
                        Self::zero(group_len) as isize
                    };
                    table[n / r * panel_len + row * r + n % r] = source as u32;
                }
            }
        }
        Ok(Some(FastIm2col {
            chw: [c, h, w],
            format: format.clone(),
            k,
            mn,
            table: table.into(),
            fallback: im2col.clone(),
        }))
    }

    /// The scratch slot past a group's channels, holding zero: the padding
    /// (tract's, for an op without a pad-value input) and the packing's
    /// unused lanes.
    fn zero(group_len: usize) -> u32 {
        group_len as u32
    }

    fn label(&self) -> StaticName {
        "FastIm2col".into()
    }

    /// The packed patches, or `None` for a tensor this op does not take.
    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        let x = &inputs[0];
        let shape = x.shape();
        let [batch, chw @ ..] = shape else {
            return Ok(None);
        };
        if x.datum_type() != f32::datum_type() || chw != self.chw {
            return Ok(None);
        }
        let ram = x.try_as_plain_ram()?;
        let xs = ram.as_slice::<f32>()?;
        let group = self.fallback.group;
        let group_len = self.chw.iter().product::<usize>() / group;
        let mut scratch = vec![0f32; group_len + 1];
        let mut values: TVec<Box<dyn MMMInputValue>> = TVec::with_capacity(batch * group);
        for channels in xs.chunks_exact(group_len) {
            scratch[..group_len].copy_from_slice(channels);
            let mut packed =
                Tensor::zero_aligned::<f32>(&[self.table.len()], self.format.alignment())?;
            let mut packed_ram = packed.try_as_plain_ram_mut()?;
            let slots = packed_ram.as_slice_mut::<f32>()?;
            for (slot, &from) in slots.iter_mut().zip(self.table.iter()) {
                *slot = scratch[from as usize];
            }
            values.push(Box::new(EagerPackedInput {
                fact: PackedExoticFact {
                    format: Box::new(self.format.clone()),
                    k: self.k,
                    mn: self.mn.to_dim(),
                },
                packed: Arc::new(packed.into_blob()?),
                panel_bytes: self.format.single_panel_len(self.k) * size_of::<f32>(),
                mn: self.mn,
            }));
        }
        let storage = PackedMatrixStorage::new_batched(&[*batch, group], values);
        Ok(Some(storage.into_tensor(f32::datum_type())))
    }
}

crate::fallback::with_fallback!(FastIm2col);

#[cfg(test)]
mod tests {
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
    struct Geometry {
        c: usize,
        m: usize,
        group: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
        image: [usize; 2],
    }

    /// Values that differ from slot to slot, so a value in the wrong slot
    /// shows; `seed` varies them.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| ((i * 7919 + seed * 104_729) % 251) as f32 / 16.0 - 7.5)
            .collect()
    }

    /// x [batch, c, h, w] → Conv (weights and bias constant) → y, `batch`
    /// named or fixed; optimised.
    fn conv_model(g: Geometry, batch: Option<i64>) -> TypedModel {
        use pb::tensor_shape_proto::dimension::Value as V;
        let [kh, kw] = g.kernel;
        let weights = values(g.m * g.c / g.group * kh * kw, 3);
        let bias = values(g.m, 5);
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let attribute =
            |name: &str, v: &[usize]| ints(name, &v.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let group = pb::AttributeProto {
            name: "group".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: g.group as i64,
            ..Default::default()
        };
        let dims = [
            batch.map_or(V::DimParam("N".into()), V::DimValue),
            V::DimValue(g.c as i64),
            V::DimValue(g.image[0] as i64),
            V::DimValue(g.image[1] as i64),
        ];
        let w_shape = [g.m, g.c / g.group, kh, kw].map(|d| d as i64);
        let proto = graph_model(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "Conv".into(),
                input: vec!["x".into(), "w".into(), "b".into()],
                output: vec!["y".into()],
                attribute: vec![
                    attribute("kernel_shape", &g.kernel),
                    attribute("strides", &g.strides),
                    attribute("dilations", &g.dilations),
                    attribute("pads", &g.pads),
                    group,
                ],
                ..Default::default()
            }],
            initializer: vec![
                initializer("w", D::Float, &w_shape, &bytes(&weights)),
                initializer("b", D::Float, &[g.m as i64], &bytes(&bias)),
            ],
            input: vec![value_with("x", D::Float, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        });
        optimized(&proto)
    }

    fn input(g: Geometry, batch: usize, seed: u64) -> Tensor {
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
        let run = |model: TypedModel| {
            let plan = model.into_runnable().unwrap();
            plan.run(tvec!(x.clone().into_tvalue())).unwrap().remove(0)
        };
        assert_eq!(run(ours).as_bytes(), run(tracts).as_bytes(), "{g:?}");
        true
    }

    const DIGITS: Geometry = Geometry {
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
        let strided = Geometry {
            c: 4,
            m: 6,
            group: 2,
            kernel: [3, 2],
            strides: [2, 3],
            dilations: [2, 1],
            pads: [0, 2, 1, 0],
            image: [9, 11],
        };
        assert!(same(strided, 3, 4));
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
        let run = |model: TypedModel| {
            let plan = model.into_runnable().unwrap();
            plan.run(tvec!(x.clone().into_tvalue())).unwrap().remove(0)
        };
        assert_eq!(
            run(fixed).as_bytes(),
            run(conv_model(DIGITS, Some(4))).as_bytes()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_convolution_it_takes_packs_as_tract_does(
            channels in (1usize..4, 1usize..4, 1usize..3),
            kernel in (1usize..4, 1usize..4),
            strides in (1usize..4, 1usize..4),
            dilations in (1usize..3, 1usize..3),
            pads in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
            image in (1usize..10, 1usize..10),
            batch in 0usize..3,
            seed in 0u64..1000,
        ) {
            let (c, m, group) = channels;
            let g = Geometry {
                c: c * group,
                m: m * group,
                group,
                kernel: [kernel.0, kernel.1],
                strides: [strides.0, strides.1],
                dilations: [dilations.0, dilations.1],
                pads: [pads.0, pads.1, pads.2, pads.3],
                image: [image.0, image.1],
            };
            // The dilated kernel must fit the padded image (no empty output).
            let fits = |axis: usize| {
                g.image[axis] + g.pads[axis] + g.pads[axis + 2]
                    > g.dilations[axis] * (g.kernel[axis] - 1)
            };
            prop_assume!(fits(0) && fits(1));
            prop_assert!(same(g, batch, seed));
        }
    }
}
