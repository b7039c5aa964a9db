//! Every request check, the unsupported-operator refusal, and the registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use inference::{Error, InputTensor, Limits, Model, ModelSource, Readiness, Registry};
use test_support::model_bytes;

fn model(file: &str) -> Model {
    let onnx = model_bytes(file);
    Model::load(
        file,
        1,
        ModelSource {
            onnx: &onnx,
            tokenizer_json: None,
        },
        Limits::default(),
    )
    .unwrap()
}

fn input<'a>(
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    data: &'a [u8],
) -> InputTensor<'a> {
    InputTensor {
        name,
        datatype,
        shape,
        data,
    }
}

#[test]
fn metadata_uses_protocol_names_and_dynamic_dimensions() {
    let m = model("digits_cnn_qoperator.onnx");
    assert_eq!(m.inputs()[0].name, "input");
    assert_eq!(m.inputs()[0].datatype.as_str(), "FP32");
    assert_eq!(m.inputs()[0].shape_i64(), vec![-1, 1, 8, 8]);
    assert_eq!(m.outputs()[0].name, "logits");
    assert_eq!(m.outputs()[0].shape_i64(), vec![-1, 10]);

    let m = model("minilm_dynamic.onnx");
    let names: Vec<_> = m.inputs().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask"]);
    assert_eq!(m.inputs()[0].datatype.as_str(), "INT64");
    assert_eq!(m.outputs()[0].shape_i64(), vec![-1, 384]);
}

/// What a request is, the request, and which error it must get.
type Case<'a> = (&'static str, Vec<InputTensor<'a>>, fn(&Error) -> bool);

#[test]
fn every_bad_request_gets_a_typed_error_naming_the_input() {
    let m = model("digits_mlp.onnx");
    let ok = vec![0u8; 64 * 4];
    let secret: Vec<u8> = b"PAYLOAD-MARKER-91c2".repeat(20);
    let cases: Vec<Case<'_>> = vec![
        (
            "unknown input",
            vec![input("nope", "FP32", &[1, 64], &ok)],
            |e| matches!(e, Error::UnknownInput { .. }),
        ),
        ("missing input", vec![], |e| {
            matches!(e, Error::MissingInput { .. })
        }),
        (
            "duplicate input",
            vec![
                input("input", "FP32", &[1, 64], &ok),
                input("input", "FP32", &[1, 64], &ok),
            ],
            |e| matches!(e, Error::DuplicateInput { .. }),
        ),
        (
            "unknown datatype",
            vec![input("input", "FLOAT", &[1, 64], &ok)],
            |e| matches!(e, Error::UnknownDatatype { .. }),
        ),
        (
            "wrong datatype",
            vec![input("input", "INT32", &[1, 64], &ok)],
            |e| {
                matches!(
                    e,
                    Error::WrongDatatype {
                        expected: "FP32",
                        got: "INT32",
                        ..
                    }
                )
            },
        ),
        (
            "wrong rank",
            vec![input("input", "FP32", &[64], &ok)],
            |e| {
                matches!(
                    e,
                    Error::WrongRank {
                        expected: 2,
                        got: 1,
                        ..
                    }
                )
            },
        ),
        (
            "wrong dimension",
            vec![input("input", "FP32", &[4, 16], &ok)],
            |e| {
                matches!(
                    e,
                    Error::WrongDimension {
                        axis: 1,
                        expected: 64,
                        got: 16,
                        ..
                    }
                )
            },
        ),
        (
            "zero dimension",
            vec![input("input", "FP32", &[0, 64], &[])],
            |e| matches!(e, Error::InvalidDimension { .. }),
        ),
        (
            "negative dimension",
            vec![input("input", "FP32", &[-1, 64], &ok)],
            |e| matches!(e, Error::InvalidDimension { .. }),
        ),
        (
            "byte count",
            vec![input("input", "FP32", &[1, 64], &ok[..255])],
            |e| {
                matches!(
                    e,
                    Error::ByteLength {
                        expected: 256,
                        got: 255,
                        ..
                    }
                )
            },
        ),
        (
            "payload of the wrong size",
            vec![input("input", "FP32", &[1, 64], &secret)],
            |e| matches!(e, Error::ByteLength { .. }),
        ),
        (
            "2^40 elements, no data",
            vec![input("input", "FP32", &[1 << 34, 64], &[])],
            |e| matches!(e, Error::TooManyElements { .. }),
        ),
        (
            "overflowing shape",
            vec![input("input", "FP32", &[i64::MAX, i64::MAX], &[])],
            |e| {
                matches!(
                    e,
                    Error::WrongDimension { .. } | Error::TooManyElements { .. }
                )
            },
        ),
    ];
    for (what, inputs, expected) in cases {
        let err = m.infer(&inputs, &[]).expect_err(what);
        assert!(expected(&err), "{what}: {err:?}");
        let message = err.to_string();
        assert!(!message.contains("PAYLOAD-MARKER"), "{what}: {message}");
        println!("{what:28} -> {message}");
    }

    let err = m
        .infer(&[input("input", "FP32", &[1, 64], &ok)], &["probabilities"])
        .unwrap_err();
    assert!(matches!(err, Error::UnknownOutput { .. }), "{err:?}");
}

#[test]
fn inputs_sharing_a_dynamic_dimension_must_agree() {
    let m = model("minilm_dynamic.onnx");
    let ids = vec![0u8; 2 * 8 * 8];
    let mask = vec![0u8; 3 * 8 * 8];
    let err = m
        .infer(
            &[
                input("input_ids", "INT64", &[2, 8], &ids),
                input("attention_mask", "INT64", &[3, 8], &mask),
            ],
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InconsistentDimension { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("attention_mask"), "{err}");
}

#[test]
fn an_unsupported_operator_is_refused_at_load_by_name_and_domain() {
    let onnx = model_bytes("digits_mlp_qgemm_unsupported.onnx");
    let err = Model::load(
        "x",
        1,
        ModelSource {
            onnx: &onnx,
            tokenizer_json: None,
        },
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsupportedOperator { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "operator QGemm (domain com.microsoft) is not supported by the engine"
    );
}

#[test]
fn garbage_bytes_are_an_invalid_model() {
    for bytes in [&b""[..], b"not an onnx file at all", &[0xff; 1000]] {
        let err = Model::load(
            "x",
            1,
            ModelSource {
                onnx: bytes,
                tokenizer_json: None,
            },
            Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidModel(_)), "{err:?}");
    }
}

#[test]
fn registry_tracks_readiness_and_serves_in_flight_requests_through_unload() {
    let registry = Registry::new();
    let onnx = model_bytes("digits_mlp_qoperator.onnx");
    let source = ModelSource {
        onnx: &onnx,
        tokenizer_json: None,
    };
    registry
        .load("digits", 1, source, Limits::default())
        .unwrap();
    registry
        .load("digits", 2, source, Limits::default())
        .unwrap();
    assert_eq!(
        registry.readiness("digits", Some(1)),
        Some(Readiness::Ready)
    );
    assert_eq!(registry.get("digits", None).unwrap().version(), 2);

    let bad = model_bytes("digits_mlp_qgemm_unsupported.onnx");
    let failed = registry.load(
        "digits",
        3,
        ModelSource {
            onnx: &bad,
            tokenizer_json: None,
        },
        Limits::default(),
    );
    // A load that fails leaves no trace: it never served, so it cannot
    // make the registry (and the server) not ready.
    assert!(failed.is_err_and(|e| e.to_string().contains("QGemm")));
    assert_eq!(registry.readiness("digits", Some(3)), None);
    assert!(registry.all_ready());
    assert!(matches!(
        registry.get("digits", Some(3)),
        Err(Error::VersionNotFound { .. })
    ));
    // A model installed earlier that no longer loads is recorded as failed.
    registry.set_failed("digits", 3, "operator QGemm is not supported");
    assert!(
        matches!(registry.readiness("digits", Some(3)), Some(Readiness::Failed(why)) if why.contains("QGemm"))
    );
    assert!(!registry.all_ready());
    assert!(matches!(
        registry.get("digits", Some(3)),
        Err(Error::NotReady { .. })
    ));
    assert!(registry.unload("digits", 3));
    // The newest *ready* version still serves.
    assert_eq!(registry.get("digits", None).unwrap().version(), 2);
    assert!(matches!(
        registry.get("digits", Some(9)),
        Err(Error::VersionNotFound { .. })
    ));
    assert!(matches!(
        registry.get("other", None),
        Err(Error::ModelNotFound { .. })
    ));

    // A request holding version 2 finishes after the version is unloaded.
    let held: Arc<Model> = registry.get("digits", Some(2)).unwrap();
    assert!(registry.unload("digits", 2));
    let x = vec![0u8; 256];
    let out = held
        .infer(&[input("input", "FP32", &[1, 64], &x)], &[])
        .unwrap();
    assert_eq!(out[0].shape(), vec![1, 10]);
    assert_eq!(registry.get("digits", None).unwrap().version(), 1);
}
