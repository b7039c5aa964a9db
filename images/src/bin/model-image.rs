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
    /// Time a model in the appliance's engine node by node and print where
    /// the time goes, by operator. Inputs are synthetic: the first dynamic
    /// dimension is the batch, any other the sequence length; integer inputs
    /// are ones, floats are zeros, text is a sentence of --tokens words.
    Profile {
        /// The ONNX model file.
        model: PathBuf,
        /// A tokenizer.json, for text models.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Batch size.
        #[arg(long, default_value_t = 1)]
        batch: i64,
        /// Sequence length (or words per sentence for text models).
        #[arg(long, default_value_t = 128)]
        tokens: i64,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
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
        Command::Profile {
            model,
            tokenizer,
            batch,
            tokens,
            runs,
        } => profile(&model, tokenizer.as_deref(), batch, tokens, runs),
    }
}

fn load(path: &std::path::Path, tokenizer: Option<&std::path::Path>) -> anyhow::Result<Model> {
    let onnx = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let tokenizer_json = tokenizer
        .map(|t| std::fs::read(t).with_context(|| format!("reading {}", t.display())))
        .transpose()?;
    let source = ModelSource {
        onnx: &onnx,
        tokenizer_json: tokenizer_json.as_deref(),
    };
    Model::load("check", 1, source, Limits::default())
        .with_context(|| format!("{} cannot be served", path.display()))
}

fn check(path: &std::path::Path, tokenizer: Option<&std::path::Path>) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = load(path, tokenizer)?;
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

    let (shapes, buffers) = synthetic(&model, 1, 1, Fill::Zeros);
    let inputs = tensors(&model, &shapes, &buffers);
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

fn profile(
    path: &std::path::Path,
    tokenizer: Option<&std::path::Path>,
    batch: i64,
    tokens: i64,
    runs: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        batch >= 1 && tokens >= 1,
        "--batch and --tokens must be at least 1"
    );
    let model = load(path, tokenizer)?;
    let (shapes, buffers) = synthetic(&model, batch, tokens, Fill::Ones);
    let inputs = tensors(&model, &shapes, &buffers);
    model.profile(&inputs, 1).context("warm-up run")?;
    let times = model.profile(&inputs, runs).context("profiled runs")?;
    let total: f64 = times.iter().map(|t| t.time.as_secs_f64()).sum();
    println!(
        "{}: batch {batch}, {tokens} tokens, {runs} runs, {:.3} ms per run in nodes",
        path.display(),
        total * 1e3 / runs as f64
    );
    println!(
        "{:<36} {:>6} {:>12} {:>7}",
        "operator", "nodes", "ms per run", "share"
    );
    for t in &times {
        let seconds = t.time.as_secs_f64();
        println!(
            "{:<36} {:>6} {:>12.3} {:>6.1}%",
            t.op,
            t.nodes,
            seconds * 1e3 / runs as f64,
            100.0 * seconds / total
        );
    }
    Ok(())
}

/// What synthetic inputs hold.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// Zeros (and empty strings): the cheapest valid input.
    Zeros,
    /// Ones for integers (token id 1, mask 1), zeros for floats, and a
    /// sentence for text: an input that exercises every path.
    Ones,
}

/// Shapes (first dynamic dimension = `batch`, others = `tokens`) and data
/// for every input of `model`.
fn synthetic(model: &Model, batch: i64, tokens: i64, fill: Fill) -> (Vec<Vec<i64>>, Vec<Vec<u8>>) {
    let shapes: Vec<Vec<i64>> = model
        .inputs()
        .iter()
        .map(|s| {
            let mut first = true;
            s.shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as i64,
                    Dim::Dynamic(_) if std::mem::take(&mut first) => batch,
                    Dim::Dynamic(_) => tokens,
                })
                .collect()
        })
        .collect();
    let buffers = model
        .inputs()
        .iter()
        .zip(&shapes)
        .map(|(spec, shape)| match (fill, spec.datatype) {
            (Fill::Ones, DataType::I64) => ones::<8>(shape),
            (Fill::Ones, DataType::I32) => ones::<4>(shape),
            (Fill::Ones, DataType::Bytes) => {
                let sentence = vec!["word"; tokens as usize].join(" ");
                (0..shape.iter().product::<i64>())
                    .flat_map(|_| {
                        let mut e = (sentence.len() as u32).to_le_bytes().to_vec();
                        e.extend_from_slice(sentence.as_bytes());
                        e
                    })
                    .collect()
            }
            _ => zeros(spec.datatype, shape),
        })
        .collect();
    (shapes, buffers)
}

/// Little-endian ones of `N` bytes each.
fn ones<const N: usize>(shape: &[i64]) -> Vec<u8> {
    let mut one = [0u8; N];
    one[0] = 1;
    (0..shape.iter().product::<i64>())
        .flat_map(|_| one)
        .collect()
}

fn tensors<'a>(
    model: &'a Model,
    shapes: &'a [Vec<i64>],
    buffers: &'a [Vec<u8>],
) -> Vec<InputTensor<'a>> {
    model
        .inputs()
        .iter()
        .zip(shapes)
        .zip(buffers)
        .map(|((spec, shape), data)| InputTensor {
            name: &spec.name,
            datatype: spec.datatype.as_str(),
            shape,
            data,
        })
        .collect()
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
