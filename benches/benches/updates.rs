//! Signed updates, end to end through the appliance binary (TPM keystore on
//! swtpm, audit log on), against what an install must do at the least,
//! measured in the same run.
//!
//! 1. A ~100 MB image (a float MatMul whose weight is 100 MB): the time of
//!    `provision model update --repo` (verify, stream over the admin
//!    connection, re-encrypt, load, golden vectors, switch, commit), median
//!    of three releases, against the in-process floor: hash the image, load
//!    the same model, run its golden vectors. And the appliance's peak
//!    resident memory during an install (VmHWM, reset before each), against
//!    the model's size.
//! 2. A swap under load: 8 stock-tritonclient clients calling digits in a
//!    loop across an update and a rollback: requests, errors (target 0), and
//!    how soon after the operator's command returned the new release was
//!    answering (target: within 1 s of commit plus its plan build).
//!
//! Run: `cargo build --release -p appliance -p provisioning -p images &&
//! cargo bench -p benches --bench updates` (after `scripts/models`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: fail loudly

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::median_p99;
use images::vectors::VendorInputs;
use inference::{Limits, Model, ModelSource};
use test_support::venv_python;
use tests::{Appliance, vendor};

const INPUTS: usize = 4096;
const OUTPUTS: usize = 6144;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    big_model(dir.path());
    swap_under_load();
}

/// Writes `big.onnx` (y = x · W, W of 4096 × 6144 f32 = 100.7 MB) and its
/// golden inputs.
fn make_big(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let onnx = dir.join("big.onnx");
    let script = format!(
        "import numpy as np, onnx\n\
         from onnx import helper, numpy_helper, TensorProto\n\
         w = np.random.default_rng(7).standard_normal(({INPUTS}, {OUTPUTS}), dtype=np.float32) * 0.01\n\
         g = helper.make_graph([helper.make_node('MatMul', ['x', 'w'], ['y'])], 'big',\n\
             [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['batch', {INPUTS}])],\n\
             [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['batch', {OUTPUTS}])],\n\
             [numpy_helper.from_array(w, 'w')])\n\
         m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n\
         m.ir_version = 8\n\
         onnx.save(m, '{}')\n",
        onnx.display()
    );
    let out = Command::new(venv_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inputs = dir.join("big.inputs.json");
    let data: Vec<String> = (0..2 * INPUTS)
        .map(|i| format!("{}", (i % 17) as f32 / 17.0))
        .collect();
    std::fs::write(
        &inputs,
        format!(
            r#"{{"cases": [{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [2, {INPUTS}], "data": [{}]}}]}}]}}"#,
            data.join(",")
        ),
    )
    .unwrap();
    (onnx, inputs)
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn big_model(dir: &Path) {
    let (onnx, inputs) = make_big(dir);
    let mut app = Appliance::start("");
    // The appliance trusts the shared test vendor: sign with a copy of it.
    let v = vendor().copy_to(&dir.join("vendor"));
    let mut install = Vec::new();
    let mut peaks = Vec::new();
    let mut image_len = 0;
    for release in 1..=3u64 {
        let image = dir.join(format!("big-r{release}.img"));
        let r = release.to_string();
        v.run_ok(&[
            "build",
            "--name",
            "big",
            "--version",
            &r,
            "--release",
            &r,
            "--onnx",
            onnx.to_str().unwrap(),
            "--vectors",
            inputs.to_str().unwrap(),
            "--out",
            image.to_str().unwrap(),
        ]);
        image_len = std::fs::metadata(&image).unwrap().len();
        v.add(&[&image], &[]);
        let pid = app.pid();
        // Reset the peak-resident-size mark (Linux: 5 > clear_refs).
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
        let before = status_kb(pid, "VmRSS:");
        let started = Instant::now();
        let text = app.update_from(&v.repo(), &["--model", "big"]);
        install.push(started.elapsed());
        assert!(
            text.contains(&format!("installed big release {release}")),
            "{text}"
        );
        let peak = status_kb(pid, "VmHWM:");
        peaks.push(peak.saturating_sub(before));
        // A restart between releases so each starts from the same state.
        app.stop();
        app.launch();
    }

    // The floor, in process: read and hash the image, load the model,
    // run its golden vectors.
    let image = dir.join("big-r3.img");
    let mut floor = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut bytes = Vec::new();
        std::fs::File::open(&image)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let _ = images::manifest::Digest::of(&bytes);
        let onnx_bytes = std::fs::read(&onnx).unwrap();
        let model = Model::load(
            "big",
            1,
            ModelSource {
                onnx: &onnx_bytes,
                tokenizer_json: None,
            },
            Limits::default(),
        )
        .unwrap();
        let golden = VendorInputs::parse(&std::fs::read(&inputs).unwrap())
            .unwrap()
            .record(&model)
            .unwrap();
        golden.check(&model).unwrap();
        floor.push(started.elapsed());
    }
    let (install_p50, _) = median_p99(&mut install);
    let (floor_p50, _) = median_p99(&mut floor);
    peaks.sort();
    let peak = peaks[peaks.len() / 2] * 1024;
    println!(
        "\n## Install of a {:.1} MB image (3 releases, medians)\n",
        image_len as f64 / 1e6
    );
    println!("| what | figure |\n|---|---:|");
    println!(
        "| `provision model update --repo` (verify, push, re-encrypt, trial, switch, commit) | {install_p50:.2?} |"
    );
    println!("| in-process floor (read + sha256 + load + golden vectors) | {floor_p50:.2?} |");
    println!(
        "| install / floor | {:.2} |",
        install_p50.as_secs_f64() / floor_p50.as_secs_f64()
    );
    println!(
        "| appliance peak resident growth during an install | {:.0} MB ({:.2} × the image) |",
        peak as f64 / 1e6,
        peak as f64 / image_len as f64
    );
}

fn swap_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start("max_concurrent_streams = 256\n");
    let v = vendor().copy_to(&dir.path().join("vendor"));
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = app.client("load");
    app.provision_ok(&[
        "grant",
        "--client",
        "load",
        "--models",
        "*",
        "--rate",
        "100000/s",
        "--quota",
        "unlimited",
    ]);
    let r2 = v.build("digits", "digits_cnn_qoperator.onnx", 2, 2, &[]);
    v.add(&[&r2], &[]);
    let mut load = app.triton_process(&certs, &["load", "8"]);
    let mut out = BufReader::new(load.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let asked = now();
    app.update_from(&v.repo(), &["--model", "digits"]);
    let committed = now();
    std::thread::sleep(Duration::from_secs(2));
    let rollback_asked = now();
    app.provision_ok(&["model", "rollback", "digits"]);
    let rolled_back = now();
    std::thread::sleep(Duration::from_secs(2));
    load.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    let mut json = String::new();
    out.read_line(&mut json).unwrap();
    load.wait().unwrap();
    let t: serde_json::Value = serde_json::from_str(&json).unwrap();
    let errors: u64 = t["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let first2 = t["versions"]["2"]["first"].as_f64().unwrap();
    let last2 = t["versions"]["2"]["last"].as_f64().unwrap();
    println!(
        "\n## Swap under load (8 tritonclient clients on digits, an update then a rollback)\n"
    );
    println!("| what | figure |\n|---|---:|");
    println!("| requests / failed | {} / {errors} |", t["requests"]);
    println!(
        "| update command (verify, stage, trial, switch, commit) | {:.0} ms |",
        (committed - asked) * 1e3
    );
    println!(
        "| first answer from release 2, after the command returned | {:+.0} ms |",
        (first2 - committed) * 1e3
    );
    println!(
        "| rollback command | {:.0} ms |",
        (rolled_back - rollback_asked) * 1e3
    );
    println!(
        "| last answer from release 2, after the rollback returned | {:+.0} ms |",
        (last2 - rolled_back) * 1e3
    );
}
