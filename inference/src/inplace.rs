//! Writing an op's result over its input.

use tract_onnx::prelude::*;

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

/// `f` of every element of an f32 input, written over it.
pub(crate) fn map_in_place(value: TValue, f: impl Fn(f32) -> f32) -> TractResult<TValue> {
    let mut tensor = take_for_writing(value)?;
    for x in tensor.try_as_plain_ram_mut()?.as_slice_mut::<f32>()? {
        *x = f(*x);
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
}
