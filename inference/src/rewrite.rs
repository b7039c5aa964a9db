//! Rewrites applied to an ONNX graph at load, before tract sees it. Each is
//! exact (outputs stay bit-identical) and applies to any model whose graph
//! matches its pattern, never to a file by name.

use tract_onnx::pb;

/// `MatMulInteger` and `ConvInteger` with a weight zero point that is an
/// all-zero initializer lose that input: ONNX reads a missing zero point
/// as zero, and tract then skips the m×n correction it would otherwise
/// compute (onnxruntime's dynamic quantizer writes per-channel weight zero
/// points as zeros). Returns how many nodes changed.
pub(crate) fn drop_zero_weight_zero_points(graph: &mut pb::GraphProto) -> usize {
    let zero: std::collections::HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| is_all_zero_integer(t))
        .map(|t| t.name.clone())
        .collect();
    let mut changed = 0;
    for node in &mut graph.node {
        if matches!(node.op_type.as_str(), "MatMulInteger" | "ConvInteger")
            && node.input.len() == 4
            && zero.contains(&node.input[3])
        {
            node.input.truncate(3);
            // An absent activation zero point left as the last input.
            if node.input[2].is_empty() {
                node.input.truncate(2);
            }
            changed += 1;
        }
        for attribute in &mut node.attribute {
            for sub in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                changed += drop_zero_weight_zero_points(sub);
            }
        }
    }
    changed
}

/// An int8 or uint8 initializer whose every element is zero.
fn is_all_zero_integer(t: &pb::TensorProto) -> bool {
    use pb::tensor_proto::DataType as D;
    let integer = t.data_type == D::Int8 as i32 || t.data_type == D::Uint8 as i32;
    integer
        && t.data_location != Some(1)
        && t.raw_data.iter().all(|b| *b == 0)
        && t.int32_data.iter().all(|v| *v == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_proto::DataType as D;
    use tract_onnx::prelude::*;

    fn value(name: &str, elem: D, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{Dimension, dimension::Value as V};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(V::DimValue(*d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn initializer(name: &str, elem: D, dims: &[i64], bytes: &[u8]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: elem as i32,
            dims: dims.to_vec(),
            raw_data: bytes.to_vec(),
            ..Default::default()
        }
    }

    /// y = MatMulInteger(a uint8 [2,3], b int8 [3,2], a_zp uint8, b_zp int8 [2]).
    fn model(b_zero_point: [u8; 2]) -> pb::ModelProto {
        let b: [i8; 6] = [1, -2, 3, -4, 5, -6];
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: vec![pb::NodeProto {
                    op_type: "MatMulInteger".into(),
                    input: vec!["a".into(), "b".into(), "a_zp".into(), "b_zp".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                initializer: vec![
                    initializer("b", D::Int8, &[3, 2], &b.map(|v| v as u8)),
                    initializer("a_zp", D::Uint8, &[], &[3]),
                    initializer("b_zp", D::Int8, &[2], &b_zero_point),
                ],
                input: vec![value("a", D::Uint8, &[2, 3])],
                output: vec![value("y", D::Int32, &[2, 2])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(proto: &pb::ModelProto) -> Vec<i32> {
        let plan = onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let a = tract_ndarray::Array2::<u8>::from_shape_vec((2, 3), vec![10, 20, 30, 40, 50, 60])
            .unwrap();
        let out = plan.run(tvec!(Tensor::from(a).into())).unwrap();
        out[0]
            .as_plain_ram()
            .unwrap()
            .as_slice::<i32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn an_all_zero_weight_zero_point_is_dropped_and_nothing_changes() {
        let original = model([0, 0]);
        let mut rewritten = original.clone();
        let graph = rewritten.graph.as_mut().unwrap();
        assert_eq!(drop_zero_weight_zero_points(graph), 1);
        assert_eq!(graph.node[0].input, ["a", "b", "a_zp"]);
        // (a - 3) · b, by hand.
        #[allow(clippy::identity_op)]
        let expected = vec![
            7 * 1 + 17 * 3 + 27 * 5,
            7 * -2 + 17 * -4 + 27 * -6,
            37 * 1 + 47 * 3 + 57 * 5,
            37 * -2 + 47 * -4 + 57 * -6,
        ];
        assert_eq!(run(&original), expected);
        assert_eq!(run(&rewritten), expected);
    }

    #[test]
    fn a_nonzero_weight_zero_point_stays() {
        let mut proto = model([0, 1]);
        let graph = proto.graph.as_mut().unwrap();
        assert_eq!(drop_zero_weight_zero_points(graph), 0);
        assert_eq!(graph.node[0].input.len(), 4);
    }
}
