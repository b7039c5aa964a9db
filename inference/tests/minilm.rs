//! MiniLM through our engine: the known similarities, int8 against float,
//! and server-side tokenization of text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use inference::{Error, InputTensor, Limits, Model, ModelSource, TEXT_INPUT};
use serde_json::Value;
use test_support::{model_bytes, models_dir};

const EXPECTED: [f32; 3] = [0.6660, 0.1046, 0.1411];

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(models_dir().join("minilm_reference.json")).unwrap())
        .unwrap()
}

fn load(file: &str, with_tokenizer: bool) -> Model {
    load_with(file, with_tokenizer, Limits::default())
}

fn load_with(file: &str, with_tokenizer: bool, limits: Limits) -> Model {
    let tokenizer = std::fs::read(models_dir().join("minilm_tokenizer.json")).unwrap();
    let onnx = model_bytes(file);
    let source = ModelSource {
        onnx: &onnx,
        tokenizer_json: with_tokenizer.then_some(tokenizer.as_slice()),
    };
    Model::load(file, 1, source, limits).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn rows(flat: &[f32], width: usize) -> Vec<Vec<f32>> {
    flat.chunks(width).map(<[f32]>::to_vec).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn similarities(e: &[Vec<f32>]) -> [f32; 3] {
    [
        cosine(&e[0], &e[1]),
        cosine(&e[0], &e[2]),
        cosine(&e[1], &e[2]),
    ]
}

/// Embeddings from the reference token ids and masks (padded to the
/// longest sentence), exactly as the reference was computed.
fn embed_ids(model: &Model) -> Vec<Vec<f32>> {
    let r = reference();
    let ids = matrix(&r["input_ids"]);
    let (n, width) = (ids.len(), ids[0].len());
    let to_bytes = |m: Vec<Vec<f32>>| -> Vec<u8> {
        m.into_iter()
            .flatten()
            .flat_map(|v| (v as i64).to_le_bytes())
            .collect()
    };
    let ids = to_bytes(ids);
    let mask = to_bytes(matrix(&r["attention_mask"]));
    let shape = [n as i64, width as i64];
    let out = model
        .infer(
            &[
                InputTensor {
                    name: "input_ids",
                    datatype: "INT64",
                    shape: &shape,
                    data: &ids,
                },
                InputTensor {
                    name: "attention_mask",
                    datatype: "INT64",
                    shape: &shape,
                    data: &mask,
                },
            ],
            &[],
        )
        .unwrap();
    assert_eq!(out[0].shape(), vec![n as i64, 384]);
    rows(out[0].as_f32().unwrap(), 384)
}

fn text_bytes(sentences: &[&str]) -> Vec<u8> {
    let mut data = Vec::new();
    for s in sentences {
        data.extend_from_slice(&(s.len() as u32).to_le_bytes());
        data.extend_from_slice(s.as_bytes());
    }
    data
}

#[test]
fn float_model_gives_the_known_similarities() {
    let ours = embed_ids(&load("minilm.onnx", false));
    let stored = matrix(&reference()["float"]["embeddings"]);
    for (a, b) in ours.iter().flatten().zip(stored.iter().flatten()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let sims = similarities(&ours);
    println!("float similarities {sims:?}");
    for (got, want) in sims.iter().zip(EXPECTED) {
        assert!((got - want).abs() <= 0.001, "{sims:?} vs {EXPECTED:?}");
    }
}

#[test]
fn int8_model_stays_close_to_float() {
    let int8 = embed_ids(&load("minilm_dynamic.onnx", false));
    let float = matrix(&reference()["float"]["embeddings"]);
    let sims = similarities(&int8);
    println!("int8 similarities {sims:?}");
    for (got, want) in sims.iter().zip(EXPECTED) {
        assert!((got - want).abs() <= 0.03, "{sims:?} vs {EXPECTED:?}");
    }
    for (a, b) in int8.iter().zip(&float) {
        let c = cosine(a, b);
        assert!(c >= 0.99, "int8 vs float cosine {c}");
    }
}

/// The load rewrites int8 MiniLM's products to float ones only where the
/// CPU's int8 kernels are slow; on such a CPU this compares the two paths,
/// elsewhere both are the integer path.
#[test]
fn int8_products_as_float_give_bit_identical_embeddings() {
    let rewritten = load("minilm_dynamic.onnx", false);
    let integer = load_with(
        "minilm_dynamic.onnx",
        false,
        Limits {
            int8_as_float: false,
            ..Limits::default()
        },
    );
    assert_eq!(integer.int8_as_float(), 0);
    assert!(integer.is_int8());
    if !inference::Int8Kernels::native().is_fast() {
        // Every MatMulInteger of MiniLM is within the exact bound.
        assert_eq!(rewritten.int8_as_float(), 36);
        assert!(!rewritten.is_int8());
    }
    let bits = |e: Vec<Vec<f32>>| -> Vec<u32> { e.iter().flatten().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(embed_ids(&rewritten)), bits(embed_ids(&integer)));
}

#[test]
fn text_is_tokenized_server_side() {
    let model = load("minilm.onnx", true);
    assert_eq!(model.inputs().len(), 1);
    assert_eq!(model.inputs()[0].name, TEXT_INPUT);
    assert_eq!(model.inputs()[0].shape_i64(), vec![-1]);

    let r = reference();
    let sentences: Vec<&str> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let data = text_bytes(&sentences);
    let out = model
        .infer(
            &[InputTensor {
                name: TEXT_INPUT,
                datatype: "BYTES",
                shape: &[3],
                data: &data,
            }],
            &[],
        )
        .unwrap();
    let ours = rows(out[0].as_f32().unwrap(), 384);
    // Same tokens, same padding as the Python reference: same embeddings.
    let stored = matrix(&r["float"]["embeddings"]);
    for (a, b) in ours.iter().flatten().zip(stored.iter().flatten()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn text_errors_name_the_element_and_never_echo_it() {
    let model = load("minilm_dynamic.onnx", true);
    let secret = "confidential-7f3a";
    let mut data = text_bytes(&["fine", secret]);
    data.extend_from_slice(&[2, 0, 0, 0, 0xc3, 0x28]); // invalid UTF-8
    let err = model
        .infer(
            &[InputTensor {
                name: TEXT_INPUT,
                datatype: "BYTES",
                shape: &[3],
                data: &data,
            }],
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidText { index: 2, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(secret));

    let data = text_bytes(&["a"; 300]);
    let err = model
        .infer(
            &[InputTensor {
                name: TEXT_INPUT,
                datatype: "BYTES",
                shape: &[300],
                data: &data,
            }],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, Error::TooManyElements { .. }), "{err:?}");

    let err = model
        .infer(
            &[InputTensor {
                name: TEXT_INPUT,
                datatype: "FP32",
                shape: &[1],
                data: &[0; 4],
            }],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, Error::WrongDatatype { .. }), "{err:?}");
}

/// A batch of more tokens than one run takes (512) runs in chunks of whole
/// sequences: each sequence comes out exactly as in a request of its chunk
/// alone, in its place. For the int8 model, whose quantizer takes the range
/// of everything it is given, that also shows the chunks ran apart.
#[test]
fn a_large_batch_runs_in_chunks_each_sequence_in_its_place() {
    let words = ["cat", "dog", "house", "tree", "river", "music"];
    // 102 tokens each with [CLS] and [SEP]: six are 612 tokens, run as five
    // (510) and one.
    let sentences: Vec<String> = words.iter().map(|w| vec![*w; 100].join(" ")).collect();
    for file in ["minilm_dynamic.onnx", "minilm.onnx"] {
        let model = load(file, true);
        let embed = |batch: &[String]| -> Vec<Vec<u32>> {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let data = text_bytes(&refs);
            let shape = [batch.len() as i64];
            let input = InputTensor {
                name: TEXT_INPUT,
                datatype: "BYTES",
                shape: &shape,
                data: &data,
            };
            let out = model.infer(&[input], &[]).unwrap();
            assert_eq!(out[0].shape(), vec![batch.len() as i64, 384]);
            rows(out[0].as_f32().unwrap(), 384)
                .into_iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        let all = embed(&sentences);
        assert_eq!(all[..5], embed(&sentences[..5]), "{file}: first chunk");
        assert_eq!(all[5..], embed(&sentences[5..]), "{file}: last chunk");
        assert_ne!(all[0], all[5], "{file}");
    }
}
