//! Every digits variant through our engine: held-out accuracy against the
//! float model, and agreement with onnxruntime on the same files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use inference::{InputTensor, Limits, Model, ModelSource};
use test_support::{model_bytes, models_dir, venv_python};

const FAMILIES: [&str; 2] = ["digits_mlp", "digits_cnn"];
const VARIANTS: [&str; 4] = ["", "_qdq", "_qoperator", "_dynamic"];

struct TestSet {
    x: Vec<u8>,
    y: Vec<u8>,
}

fn test_set() -> TestSet {
    let dir = models_dir();
    TestSet {
        x: std::fs::read(dir.join("digits_test_x.f32")).unwrap(),
        y: std::fs::read(dir.join("digits_test_y.u8")).unwrap(),
    }
}

fn load(file: &str) -> Model {
    load_with(file, Limits::default())
}

fn load_with(file: &str, limits: Limits) -> Model {
    let source = ModelSource {
        onnx: &model_bytes(file),
        tokenizer_json: None,
    };
    Model::load(file, 1, source, limits).unwrap()
}

fn input_shape(family: &str, n: usize) -> Vec<i64> {
    if family == "digits_cnn" {
        vec![n as i64, 1, 8, 8]
    } else {
        vec![n as i64, 64]
    }
}

/// Logits for `n` samples starting at sample `start`.
fn logits(model: &Model, family: &str, x: &[u8], start: usize, n: usize) -> Vec<f32> {
    let shape = input_shape(family, n);
    let data = &x[start * 256..(start + n) * 256];
    let input = InputTensor {
        name: "input",
        datatype: "FP32",
        shape: &shape,
        data,
    };
    let out = model.infer(&[input], &[]).unwrap();
    assert_eq!(out[0].name(), "logits");
    assert_eq!(out[0].shape(), vec![n as i64, 10]);
    out[0].as_f32().unwrap().to_vec()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn accuracy(logits: &[f32], labels: &[u8]) -> f64 {
    let hits = logits
        .chunks(10)
        .zip(labels)
        .filter(|(row, y)| argmax(row) == usize::from(**y))
        .count();
    100.0 * hits as f64 / labels.len() as f64
}

#[test]
fn every_int8_variant_stays_within_one_point_of_its_float_model() {
    let set = test_set();
    let n = set.y.len();
    assert_eq!(n, 450);
    for family in FAMILIES {
        let float = accuracy(
            &logits(&load(&format!("{family}.onnx")), family, &set.x, 0, n),
            &set.y,
        );
        assert!(float > 95.0, "{family}: float accuracy {float:.2}");
        for variant in &VARIANTS[1..] {
            let file = format!("{family}{variant}.onnx");
            let acc = accuracy(&logits(&load(&file), family, &set.x, 0, n), &set.y);
            println!("{file:32} {acc:6.2}% (float {float:.2}%)");
            assert!(acc >= float - 1.0, "{file}: {acc:.2}% vs float {float:.2}%");
        }
    }
}

/// `file` loaded as the server does, and with `int8_as_float` off. On a
/// CPU with slow int8 kernels the first must have rewritten products.
fn both_paths(file: &str) -> (Model, Model) {
    let rewritten = load(file);
    let integer = load_with(
        file,
        Limits {
            int8_as_float: false,
            ..Limits::default()
        },
    );
    if !inference::Int8Kernels::native().is_fast() {
        assert!(rewritten.int8_as_float() > 0, "{file}");
    }
    (rewritten, integer)
}

/// Where the CPU's int8 kernels are slow, the load runs `MatMulInteger`
/// and `ConvInteger` as float products over the same integers; the logits
/// of the whole test set must not change by a bit.
#[test]
fn int8_products_as_float_give_bit_identical_logits() {
    let set = test_set();
    let n = set.y.len();
    for family in ["digits_mlp", "digits_cnn"] {
        let file = format!("{family}_dynamic.onnx");
        let (rewritten, integer) = both_paths(&file);
        let bits = |m: &Model| -> Vec<u32> {
            logits(m, family, &set.x, 0, n)
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&rewritten), bits(&integer), "{file}");
    }
}

/// `QLinearMatMul`/`QLinearConv` run as float products too; their
/// accumulators are exact but the rescale is f32 where tract uses a Q0.31
/// multiplier, so an element can land one quantization step away at a
/// rounding tie. Over the whole test set: predictions agree, and at most
/// 1 % of the logits differ.
#[test]
fn qlinear_products_as_float_stay_within_a_step_of_the_integer_path() {
    let set = test_set();
    let n = set.y.len();
    for family in ["digits_mlp", "digits_cnn"] {
        let file = format!("{family}_qoperator.onnx");
        let (rewritten, integer) = both_paths(&file);
        let a = logits(&rewritten, family, &set.x, 0, n);
        let b = logits(&integer, family, &set.x, 0, n);
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        let widest = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let agree = a
            .chunks(10)
            .zip(b.chunks(10))
            .filter(|(x, y)| argmax(x) == argmax(y))
            .count();
        println!(
            "{file}: {differing} of {} logits differ, widest {widest}, {agree} of {n} predictions agree",
            a.len()
        );
        assert_eq!(agree, n, "{file}");
        assert!(
            differing * 100 <= a.len(),
            "{file}: {differing} logits differ"
        );
    }
}

#[test]
fn one_plan_serves_batch_1_and_batch_32_identically() {
    let set = test_set();
    for family in FAMILIES {
        for variant in VARIANTS {
            let file = format!("{family}{variant}.onnx");
            let model = load(&file);
            let batch = logits(&model, family, &set.x, 0, 32);
            for i in [0, 7, 31] {
                let single = logits(&model, family, &set.x, i, 1);
                // Dynamic quantization takes one scale per tensor, so a
                // sample's logits may move slightly with its batch.
                let tolerance = if variant == "_dynamic" { 0.1 } else { 1e-4 };
                for (a, b) in single.iter().zip(&batch[i * 10..(i + 1) * 10]) {
                    assert!((a - b).abs() <= tolerance, "{file} sample {i}: {a} vs {b}");
                }
                assert_eq!(argmax(&single), argmax(&batch[i * 10..(i + 1) * 10]));
            }
        }
    }
}

#[test]
fn our_outputs_agree_with_onnxruntime_on_the_same_files() {
    let set = test_set();
    let n = set.y.len();
    let work = tempfile::tempdir().unwrap();
    let x_file = work.path().join("x.f32");
    std::fs::write(&x_file, &set.x).unwrap();
    for family in FAMILIES {
        for variant in VARIANTS {
            let file = format!("{family}{variant}.onnx");
            let ours = logits(&load(&file), family, &set.x, 0, n);
            let shape = input_shape(family, n)
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            let out = Command::new(venv_python())
                .arg(test_support::workspace_root().join("models/ort_run.py"))
                .arg(models_dir().join(&file))
                .arg(work.path())
                .arg(format!("input:float32:{shape}:{}", x_file.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let theirs: Vec<f32> = std::fs::read(report["outputs"][0]["file"].as_str().unwrap())
                .unwrap()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(theirs.len(), ours.len());
            assert!(
                ours.iter().chain(&theirs).all(|v| v.is_finite()),
                "{file}: non-finite logits"
            );

            // A quantized output may differ by one quantization step (the
            // two engines may round one activation differently); float and
            // dynamic outputs only by float rounding.
            let step = report["step"].as_f64().map_or(0.0, |s| s as f32);
            let tolerance = step * 1.001 + 1e-3;
            let worst = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let disagreements = ours
                .chunks(10)
                .zip(theirs.chunks(10))
                .filter(|(a, b)| argmax(a) != argmax(b))
                .count();
            println!(
                "{file:32} max |ours - onnxruntime| {worst:.2e} (step {step:.6}), argmax disagreements {disagreements}"
            );
            assert_eq!(disagreements, 0, "{file}: argmax differs from onnxruntime");
            assert!(
                worst <= tolerance,
                "{file}: logits differ by {worst} > {tolerance}"
            );
        }
    }
}
