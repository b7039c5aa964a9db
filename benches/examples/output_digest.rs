//! One digest per reference model of our engine's outputs (batches 1, 7 and
//! 32 of fixed inputs), to show an engine change keeps outputs bit for bit:
//! run it before and after, and compare.
//!
//! Run: `cargo run --release -p benches --example output_digest` (after
//! `scripts/models`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a tool: fail loudly

use inference::{InputTensor, Limits, Model, ModelSource};
use test_support::{model_bytes, models_dir};

const MODELS: [&str; 10] = [
    "digits_mlp",
    "digits_mlp_qdq",
    "digits_mlp_qoperator",
    "digits_mlp_dynamic",
    "digits_cnn",
    "digits_cnn_qdq",
    "digits_cnn_qoperator",
    "digits_cnn_dynamic",
    "minilm",
    "minilm_dynamic",
];

fn main() {
    let digits = std::fs::read(models_dir().join("digits_test_x.f32")).unwrap();
    for name in MODELS {
        let file = format!("{name}.onnx");
        let onnx = model_bytes(&file);
        let source = ModelSource {
            onnx: &onnx,
            tokenizer_json: None,
        };
        let model = Model::load(&file, 1, source, Limits::default()).unwrap();
        // FNV-1a over every output's bytes, batch after batch.
        let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
        for batch in [1usize, 7, 32] {
            let outputs = if name.starts_with("minilm") {
                let tokens = 20;
                let ids: Vec<i64> = (0..batch * tokens)
                    .map(|i| match i % tokens {
                        0 => 101,
                        t if t == tokens - 1 => 102,
                        _ => 2000 + (i as i64 * 37) % 5000,
                    })
                    .collect();
                let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
                let (ids, ones, zeros) = (
                    bytes(&ids),
                    bytes(&vec![1; batch * tokens]),
                    bytes(&vec![0; batch * tokens]),
                );
                let shape = [batch as i64, tokens as i64];
                let inputs: Vec<InputTensor> = model
                    .inputs()
                    .iter()
                    .map(|spec| InputTensor {
                        name: &spec.name,
                        datatype: "INT64",
                        shape: &shape,
                        data: match spec.name.as_str() {
                            n if n.contains("mask") => &ones,
                            n if n.contains("type") => &zeros,
                            _ => &ids,
                        },
                    })
                    .collect();
                model.infer(&inputs, &[]).unwrap()
            } else {
                let data: Vec<u8> = digits.iter().copied().cycle().take(batch * 256).collect();
                let shape = if name.contains("cnn") {
                    vec![batch as i64, 1, 8, 8]
                } else {
                    vec![batch as i64, 64]
                };
                let input = InputTensor {
                    name: "input",
                    datatype: "FP32",
                    shape: &shape,
                    data: &data,
                };
                model.infer(&[input], &[]).unwrap()
            };
            for byte in outputs.iter().flat_map(|o| o.data()) {
                digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        println!("{name} {digest:016x}");
    }
}
