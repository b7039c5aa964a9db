//! `model-image check` from the outside, as a vendor runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use test_support::models_dir;

fn check(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_model-image"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_servable_model_prints_its_signature_and_runs() {
    let model = models_dir().join("digits_cnn_qoperator.onnx");
    let (ok, stdout, stderr) = check(&[model.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("input  input            FP32   [-1, 1, 8, 8]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("output logits           FP32   [-1, 10]"),
        "{stdout}"
    );
    assert!(stdout.contains("logits [1, 10]"), "{stdout}");
    let level = format!(
        "element-wise passes on this CPU: {}\n",
        inference::vector_level()
    );
    assert!(stdout.contains(&level), "{stdout}");
}

#[test]
fn a_text_model_runs_with_its_tokenizer() {
    let dir = models_dir();
    let (ok, stdout, stderr) = check(&[
        dir.join("minilm_dynamic.onnx").to_str().unwrap(),
        "--tokenizer",
        dir.join("minilm_tokenizer.json").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("input  text             BYTES  [-1]"),
        "{stdout}"
    );
    assert!(stdout.contains("embeddings [1, 384]"), "{stdout}");
}

#[test]
fn an_unsupported_operator_fails_naming_it() {
    let model = models_dir().join("digits_mlp_qgemm_unsupported.onnx");
    let (ok, _, stderr) = check(&[model.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("operator QGemm (domain com.microsoft) is not supported"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_says_which() {
    let (ok, _, stderr) = check(&["/nonexistent/model.onnx"]);
    assert!(!ok);
    assert!(
        stderr.contains("reading /nonexistent/model.onnx"),
        "{stderr}"
    );
}

/// `model-image profile` of a reference model: its report, having succeeded.
fn profile(model: &str, batch: &str, runs: &str) -> String {
    profile_with(model, &["--batch", batch, "--runs", runs])
}

fn profile_with(model: &str, args: &[&str]) -> String {
    let model = models_dir().join(model);
    let out = Command::new(env!("CARGO_BIN_EXE_model-image"))
        .args(["profile", model.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn profile_names_where_the_time_goes() {
    let stdout = profile("digits_mlp_qdq.onnx", "4", "3");
    assert!(stdout.contains("batch 4"), "{stdout}");
    // A QDQ model runs each quantize-dequantize pair as one pass.
    assert!(stdout.contains("FastQuantizeDequantize"), "{stdout}");
    let shares: f64 = stdout
        .lines()
        .filter_map(|l| l.trim_end().strip_suffix('%'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        (shares - 100.0).abs() < 1.0,
        "shares add up to {shares}: {stdout}"
    );
}

#[test]
fn profile_by_node_names_each_node_once_with_its_details() {
    let stdout = profile_with("digits_mlp_qdq.onnx", &["--runs", "2", "--nodes"]);
    // `   ms  share%  #id name: Op [details]`: one row per node.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("%  #")).collect();
    assert!(rows.len() > 3, "{stdout}");
    let mut ids = std::collections::HashSet::new();
    let mut shares = 0.0;
    for row in &rows {
        let (times, node) = row.split_once("%  #").unwrap();
        shares += times.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        let id = node.split(' ').next().unwrap();
        assert!(ids.insert(id.to_owned()), "node {id} twice: {stdout}");
    }
    assert!(
        (shares - 100.0).abs() < 1.0,
        "shares add up to {shares}: {stdout}"
    );
    // Matrix products say how they run: tract's name the kernel it chose,
    // ours (small products) their shape.
    assert!(
        rows.iter()
            .any(|r| (r.contains("OptMatMul") && r.contains("mmm"))
                || (r.contains("FastDense") && r.contains("[k:64 n:64]"))),
        "{stdout}"
    );
}

#[test]
fn a_dynamic_int8_cnn_pools_patches_and_casts_in_one_pass() {
    let stdout = profile("digits_cnn_dynamic.onnx", "3", "2");
    // The batch is symbolic, so tract would pool and lay out patches with
    // per-call geometry. Where int8 runs as float (a CPU without fast int8
    // kernels), the convolution's patches are f32 and its product ends in
    // an f32 → int32 → f32 cast pair (its dense layers' products stay f32);
    // elsewhere the whole integer convolution is one op of ours on a CPU
    // with FMA, else int8 patches and tract's int8 product.
    let as_float = !inference::Int8Kernels::native().is_fast();
    let (ours, tracts) = if as_float {
        (
            &["FastMaxPool", "FastIm2col", "CastThroughI32"][..],
            &["MaxPool", "Im2col"][..],
        )
    } else if inference::vector_level() != "baseline" {
        (
            &["FastMaxPool", "FastConvInt"][..],
            &["MaxPool", "Im2col", "FastIm2col", "CastThroughI32"][..],
        )
    } else {
        (
            &["FastMaxPool", "FastIm2col"][..],
            &["MaxPool", "Im2col", "CastThroughI32"][..],
        )
    };
    for op in ours {
        assert!(stdout.contains(op), "no {op}: {stdout}");
    }
    for op in tracts {
        assert!(!stdout.contains(&format!("\n{op} ")), "{stdout}");
    }
}
