//! Our engine against onnxruntime on the same model files, same inputs, one
//! thread each, measured in the same run.
//!
//! For every digits variant (MLP and CNN; float, QDQ, QOperator, dynamic)
//! and MiniLM (float and dynamic int8, 128 tokens and a short sentence's
//! 12), at batch 1 and 32:
//! median latency of one call and the throughput it implies, for our engine
//! (`Model::infer`, validation and copies included, i.e. what the server
//! pays) and for onnxruntime (`session.run` in-process in Python, timed
//! around the call only). Prints a Markdown table.
//!
//! Run: `cargo bench -p benches --bench engine` (after `scripts/models`).
//! `BENCH_SECONDS` sets the time per measurement (default 2);
//! `BENCH_INT8_AS_FLOAT=false` loads models with `int8_as_float` off (on a
//! CPU without fast int8 kernels: the integer path, for comparison);
//! `BENCH_ONLY=digits_cnn` keeps the rows whose label contains the text.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: fail loudly

/// The daemon's allocator (`appliance/src/main.rs`), so that our figures
/// are what it pays. On glibc's malloc, which this harness used before,
/// the small models paid for its churn: the dynamic digits MLP took 9.4
/// against 5.4 µs at batch 1, 16.5 against 12.7 µs at batch 32 (medians
/// of four alternating runs); int8 MiniLM was within the noise.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::Command;
use std::time::{Duration, Instant};

use benches::median_p99;
use inference::{InputTensor, Limits, Model, ModelSource};
use test_support::{model_bytes, models_dir, venv_python, workspace_root};

struct Input {
    name: &'static str,
    datatype: &'static str,
    numpy: &'static str,
    shape: Vec<i64>,
    data: Vec<u8>,
}

/// Inputs of a given batch size for one model.
type MakeInputs = Box<dyn Fn(usize) -> Vec<Input>>;

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let work = tempfile::tempdir().unwrap();
    println!(
        "| model | batch | ours median | onnxruntime median | ours / onnxruntime throughput |"
    );
    println!("|---|---:|---:|---:|---:|");
    let limits = Limits {
        int8_as_float: std::env::var("BENCH_INT8_AS_FLOAT").as_deref() != Ok("false"),
        ..Limits::default()
    };
    // (label, file, inputs)
    let mut cases: Vec<(String, String, MakeInputs)> = Vec::new();
    for family in ["digits_mlp", "digits_cnn"] {
        for variant in ["", "_qdq", "_qoperator", "_dynamic"] {
            let cnn = family == "digits_cnn";
            let file = format!("{family}{variant}.onnx");
            cases.push((
                file.clone(),
                file,
                Box::new(move |batch| digits_input(batch, cnn)),
            ));
        }
    }
    for tokens in [128, 12] {
        for file in ["minilm.onnx", "minilm_dynamic.onnx"] {
            cases.push((
                format!("{file} ({tokens} tokens)"),
                file.to_string(),
                Box::new(move |batch| minilm_input(batch, tokens)),
            ));
        }
    }

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    cases.retain(|(label, _, _)| label.contains(&only));
    for (label, file, make) in &cases {
        let onnx = model_bytes(file);
        let source = ModelSource {
            onnx: &onnx,
            tokenizer_json: None,
        };
        let model = Model::load(file, 1, source, limits).unwrap();
        for batch in [1usize, 32] {
            let inputs = make(batch);
            let ours = time_ours(&model, &inputs, seconds);
            let theirs = time_onnxruntime(file, &inputs, seconds, work.path());
            println!(
                "| {label} | {batch} | {} | {} | {:.2} |",
                show(ours),
                show(theirs),
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
    }
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// Held-out digits, cycled to fill the batch.
fn digits_input(batch: usize, cnn: bool) -> Vec<Input> {
    let x = std::fs::read(models_dir().join("digits_test_x.f32")).unwrap();
    let data: Vec<u8> = x.iter().copied().cycle().take(batch * 256).collect();
    let shape = if cnn {
        vec![batch as i64, 1, 8, 8]
    } else {
        vec![batch as i64, 64]
    };
    vec![Input {
        name: "input",
        datatype: "FP32",
        numpy: "float32",
        shape,
        data,
    }]
}

/// `tokens` per row: [CLS], ordinary word-piece ids, [SEP].
fn minilm_input(batch: usize, tokens: usize) -> Vec<Input> {
    let row: Vec<i64> = std::iter::once(101)
        .chain((0..tokens as i64 - 2).map(|i| 2000 + (i * 37) % 5000))
        .chain(std::iter::once(102))
        .collect();
    let bytes = |v: &[i64]| -> Vec<u8> {
        v.iter()
            .cycle()
            .take(batch * tokens)
            .flat_map(|x| x.to_le_bytes())
            .collect()
    };
    let shape = vec![batch as i64, tokens as i64];
    vec![
        Input {
            name: "input_ids",
            datatype: "INT64",
            numpy: "int64",
            shape: shape.clone(),
            data: bytes(&row),
        },
        Input {
            name: "attention_mask",
            datatype: "INT64",
            numpy: "int64",
            shape,
            data: bytes(&[1]),
        },
    ]
}

fn time_ours(model: &Model, inputs: &[Input], seconds: f64) -> Duration {
    let tensors: Vec<InputTensor<'_>> = inputs
        .iter()
        .map(|i| InputTensor {
            name: i.name,
            datatype: i.datatype,
            shape: &i.shape,
            data: &i.data,
        })
        .collect();
    model.infer(&tensors, &[]).unwrap(); // warm-up
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        let out = model.infer(&tensors, &[]).unwrap();
        samples.push(t.elapsed());
        drop(out);
    }
    median_p99(&mut samples).0
}

fn time_onnxruntime(
    file: &str,
    inputs: &[Input],
    seconds: f64,
    work: &std::path::Path,
) -> Duration {
    let mut cmd = Command::new(venv_python());
    cmd.arg(workspace_root().join("benches/ort_bench.py"))
        .arg(models_dir().join(file))
        .arg(seconds.to_string());
    for (i, input) in inputs.iter().enumerate() {
        let path = work.join(format!("in{i}.raw"));
        std::fs::write(&path, &input.data).unwrap();
        let shape: Vec<String> = input.shape.iter().map(|d| d.to_string()).collect();
        cmd.arg(format!(
            "{}:{}:{}:{}",
            input.name,
            input.numpy,
            shape.join("x"),
            path.display()
        ));
    }
    let out = cmd
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run onnxruntime (scripts/venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Duration::from_nanos(report["median_ns"].as_u64().unwrap())
}
