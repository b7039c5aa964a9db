//! An int8 activation packed for tract's VNNI and dot-product kernels in
//! four-byte copies.
//!
//! Before an int8 product tract packs its activation (`[mn, k]`, `k`
//! contiguous) into panels of `r` rows, `k` in blocks of 4 bytes per row
//! (`PackedI8K4`): one `OptMatMulPack` node per product. Its writer goes a
//! byte at a time, down the `r` rows of a panel for each `k`: about 1.8 ns a
//! byte, 14 ms of int8 MiniLM's 80 at 12 tokens and batch 32, 2 ms at 128
//! tokens. Each four-byte block is contiguous in the activation as well as
//! in the panel, so this op copies four bytes at a time, in the
//! activation's order. The packed buffer holds the same bytes (zero past
//! `k` and past `mn`) and the same layout facts as tract's, so the product
//! is unchanged, bit for bit.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::PackedI8K4;

/// Replaces each `OptMatMulPack` of an 8-bit activation `[.., mn, k]` into
/// tract's `PackedI8K4` layout with [`FastPackK4`]. Returns how many.
pub(crate) fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    crate::fallback::replace_ops(model, |model, node| {
        let Some(pack) = node.op_as::<OptMatMulPack>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(OutletId::new(node.id, 0))?;
        let packers = output
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
            .map(|f| &f.packers[..]);
        let Some([packer]) = packers else {
            return Ok(None);
        };
        let Some(format) = packer.downcast_ref::<PackedI8K4>() else {
            return Ok(None);
        };
        let axes = pack.axes_mapping(&[input], &[output])?;
        let (k, mn) = (axes.axis('K')?, axes.axis('M')?);
        let rank = input.rank();
        let fits = input.datum_type.size_of() == 1
            && !input.is_exotic()
            && format.r > 0
            && k.inputs[0][..] == [rank - 1]
            && mn.inputs[0][..] == [rank - 2];
        Ok(fits.then(|| FastPackK4 {
            format: format.clone(),
            fallback: pack.clone(),
        }))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FastPackK4 {
    format: PackedI8K4,
    /// tract's op, for its output facts and whatever tensor this one does
    /// not take.
    fallback: OptMatMulPack,
}

crate::fallback::with_fallback!(FastPackK4);

impl FastPackK4 {
    fn label(&self) -> StaticName {
        "FastPackK4".into()
    }

    fn try_eval(&self, inputs: &mut TVec<TValue>) -> TractResult<Option<Tensor>> {
        pack(&self.format, &inputs[0])
    }
}

/// `x` packed in `format`, one packed matrix per index of the axes before
/// `[mn, k]`, or `None` for a tensor this op does not take.
fn pack(format: &PackedI8K4, x: &Tensor) -> TractResult<Option<Tensor>> {
    let [batch @ .., mn, k] = x.shape() else {
        return Ok(None);
    };
    let (mn, k) = (*mn, *k);
    if x.datum_type().size_of() != 1 || !x.is_plain() || mn == 0 || k == 0 {
        return Ok(None);
    }
    let ram = x.try_as_plain_ram()?;
    let bytes = ram.as_bytes();
    let r = format.r;
    let panel = format.single_panel_len(k);
    let mut values: TVec<Box<dyn MMMInputValue>> = TVec::new();
    for matrix in bytes.chunks_exact(mn * k) {
        let mut packed = Tensor::zero_aligned::<u8>(&[format.len(k, mn)], format.alignment())?;
        let mut out = packed.try_as_plain_ram_mut()?;
        let out = out.as_slice_mut::<u8>()?;
        for (n, row) in matrix.chunks_exact(k).enumerate() {
            // Row `n`'s blocks of four bytes, `4·r` bytes apart.
            let first = n / r * panel + n % r * 4;
            let whole = row.chunks_exact(4);
            let tail = whole.remainder();
            for (block, from) in whole.enumerate() {
                let at = first + block * 4 * r;
                let to = &mut out[at..at + 4];
                // Four byte moves, which the compiler makes one.
                to[0] = from[0];
                to[1] = from[1];
                to[2] = from[2];
                to[3] = from[3];
            }
            if !tail.is_empty() {
                let at = first + k / 4 * 4 * r;
                out[at..at + tail.len()].copy_from_slice(tail);
            }
        }
        values.push(Box::new(EagerPackedInput {
            fact: PackedExoticFact {
                format: Box::new(format.clone()),
                k,
                mn: mn.to_dim(),
            },
            packed: Arc::new(packed.into_blob()?),
            panel_bytes: panel,
            mn,
        }));
    }
    let storage = PackedMatrixStorage::new_batched(batch, values);
    Ok(Some(storage.into_tensor(x.datum_type())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{graph_model, initializer, onnx, untyped, value_with, values};
    use proptest::prelude::*;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_proto::DataType as D;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as V;

    /// Each packed matrix's bytes, layout and sizes.
    fn matrices(t: &Tensor) -> Vec<(Vec<u8>, usize, usize, usize)> {
        let storage = t.try_storage_as::<PackedMatrixStorage>().unwrap();
        storage
            .values()
            .iter()
            .map(|v| {
                let v = v.downcast_ref::<EagerPackedInput>().unwrap();
                (v.packed.as_bytes().to_vec(), v.panel_bytes, v.k(), v.mn())
            })
            .collect()
    }

    fn bytes(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<i8> = values(n, seed).iter().map(|v| *v as i8).collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn packs_the_bytes_tract_packs(
            batch in 0usize..3,
            mn in 1usize..40,
            k in 1usize..40,
            r in prop::sample::select(vec![4usize, 8, 16]),
            seed in 0u64..1000,
        ) {
            let format = PackedI8K4::new(r);
            let shape: Vec<usize> = [batch, mn, k].into_iter().skip(usize::from(batch == 0)).collect();
            let x = bytes(&shape, seed);
            let ours = matrices(&pack(&format, &x).unwrap().unwrap());
            let tracts: Vec<_> = (0..batch.max(1))
                .map(|b| {
                    let one = match batch {
                        0 => x.clone(),
                        _ => x.slice(0, b, b + 1).unwrap().into_shape(&[mn, k]).unwrap(),
                    };
                    let packed = format.pack_view(&one.view(), 1, 0).unwrap();
                    let packed = packed.downcast_ref::<EagerPackedInput>().unwrap().clone();
                    (packed.packed.as_bytes().to_vec(), packed.panel_bytes, packed.k(), packed.mn())
                })
                .collect();
            prop_assert_eq!(ours, tracts);
        }
    }

    /// `x` u8 `[M, S, k]` (both symbolic) times an int8 `[k, n]` weight by
    /// `MatMulInteger`, optimised as `Model::load` does.
    fn product(k: usize, n: usize) -> TypedModel {
        let w: Vec<u8> = values(k * n, 5).iter().map(|v| *v as i8 as u8).collect();
        let dims = [
            V::DimParam("M".into()),
            V::DimParam("S".into()),
            V::DimValue(k as i64),
        ];
        let proto = graph_model(pb::GraphProto {
            node: vec![crate::rewrite::node(
                "MatMulInteger",
                &["x", "w", "x_zp"],
                "y",
                None,
            )],
            initializer: vec![
                initializer("w", D::Int8, &[k as i64, n as i64], &w),
                initializer("x_zp", D::Uint8, &[], &[131]),
            ],
            input: vec![value_with("x", D::Uint8, &dims)],
            output: untyped(&["y"]),
            ..Default::default()
        });
        let mut model = onnx()
            .model_for_proto_model(&proto)
            .unwrap()
            .into_typed()
            .unwrap();
        model.declutter().unwrap();
        crate::fold::swap_in(&mut model).unwrap();
        model.optimize().unwrap();
        model
    }

    #[test]
    fn a_product_on_the_packed_activation_gives_tracts_outputs() {
        let tracts = product(37, 21);
        let packs_k4 = tracts.nodes().iter().any(|n| {
            n.op_is::<OptMatMulPack>()
                && n.outputs[0]
                    .fact
                    .exotic_fact()
                    .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
                    .is_some_and(|f| {
                        f.packers
                            .iter()
                            .any(|p| p.downcast_ref::<PackedI8K4>().is_some())
                    })
        });
        let mut ours = tracts.clone();
        let swapped = swap_in(&mut ours).unwrap();
        // tract packs in this layout on a CPU with VNNI or dot products only.
        assert_eq!(swapped, usize::from(packs_k4));
        for (m, s) in [(1, 1), (2, 9), (3, 17)] {
            let v: Vec<u8> = values(m * s * 37, 9)
                .iter()
                .map(|v| (*v * 9.0) as i32 as u8)
                .collect();
            let x = Tensor::from_shape(&[m, s, 37], &v).unwrap();
            let run = |model: &TypedModel| crate::rewrite::tests::run_on(model.clone(), &x);
            let (want, got) = (run(&tracts), run(&ours));
            assert_eq!(want.shape(), [m, s, 21]);
            assert_eq!(want.as_bytes(), got.as_bytes(), "{m}x{s}");
        }
    }
}
