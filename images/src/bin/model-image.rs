//! `model-image`: the vendor's tool for model images.
//!
//! Today it has one subcommand, `check`, which loads a model exactly as the
//! appliance would and runs it once, so a vendor learns before shipping
//! whether the appliance can serve it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use inference::{DataType, Dim, InputTensor, Limits, Model, ModelSource};

#[derive(Parser)]
#[command(
    name = "model-image",
    version,
    about = "Build and check model images for the appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load an ONNX model as the appliance would, print its inputs and
    /// outputs, and run it once on zeros of the right shape (dynamic
    /// dimensions set to 1). Exits with status 1, naming the operator, when
    /// the appliance's engine cannot run the model.
    Check {
        /// The ONNX model file.
        model: PathBuf,
        /// A Hugging Face tokenizer.json, for text models (the model then
        /// takes a BYTES input named `text`).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("model-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { model, tokenizer } => check(&model, tokenizer.as_deref()),
    }
}

fn check(path: &std::path::Path, tokenizer: Option<&std::path::Path>) -> anyhow::Result<()> {
    let onnx = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let tokenizer_json = tokenizer
        .map(|t| std::fs::read(t).with_context(|| format!("reading {}", t.display())))
        .transpose()?;
    let started = Instant::now();
    let source = ModelSource {
        onnx: &onnx,
        tokenizer_json: tokenizer_json.as_deref(),
    };
    let model = Model::load("check", 1, source, Limits::default())
        .with_context(|| format!("{} cannot be served", path.display()))?;
    println!(
        "{}: loaded and optimised in {:.1?}",
        path.display(),
        started.elapsed()
    );
    for spec in model.inputs() {
        println!(
            "  input  {:<16} {:<6} {:?}",
            spec.name,
            spec.datatype,
            spec.shape_i64()
        );
    }
    for spec in model.outputs() {
        println!(
            "  output {:<16} {:<6} {:?}",
            spec.name,
            spec.datatype,
            spec.shape_i64()
        );
    }

    let shapes: Vec<Vec<i64>> = model
        .inputs()
        .iter()
        .map(|s| {
            s.shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as i64,
                    Dim::Dynamic(_) => 1,
                })
                .collect()
        })
        .collect();
    let buffers: Vec<Vec<u8>> = model
        .inputs()
        .iter()
        .zip(&shapes)
        .map(|(spec, shape)| zeros(spec.datatype, shape))
        .collect();
    let inputs: Vec<InputTensor<'_>> = model
        .inputs()
        .iter()
        .zip(&shapes)
        .zip(&buffers)
        .map(|((spec, shape), data)| InputTensor {
            name: &spec.name,
            datatype: spec.datatype.as_str(),
            shape,
            data,
        })
        .collect();
    let started = Instant::now();
    let outputs = model
        .infer(&inputs, &[])
        .context("the model loaded but failed to run")?;
    println!("  ran once on zeros in {:.1?}:", started.elapsed());
    for out in &outputs {
        println!("    {} {:?}", out.name(), out.shape());
    }
    println!("ok: the appliance can serve this model");
    Ok(())
}

/// A zero-filled input; for a text model, one empty string.
fn zeros(datatype: DataType, shape: &[i64]) -> Vec<u8> {
    let elements: i64 = shape.iter().product();
    match datatype.size() {
        Some(size) => vec![0; elements as usize * size],
        // BYTES (the `text` input of a text model): empty strings.
        None => (0..elements).flat_map(|_| 0u32.to_le_bytes()).collect(),
    }
}
