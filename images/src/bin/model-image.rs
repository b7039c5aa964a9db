//! `model-image`: the vendor's tool for model images.
//!
//! `build` makes a signed-update payload (a model image) from an ONNX file,
//! its tokenizer and golden inputs; `keys` and `repo` keep the TUF
//! repository that signs images for appliances; `check` and `profile` load
//! a model exactly as the appliance would.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use images::image::{describe_parts, read_manifest, write_image};
use images::manifest::{
    ApplianceVersion, LineName, MANIFEST_FORMAT, Manifest, PartKind, TensorInfo,
};
use images::tuf::repo::{KeyDir, Lifetime, Lifetimes, Repo, RepoVersions};
use images::vectors::VendorInputs;
use indicatif::{ProgressBar, ProgressStyle};
use inference::{DataType, Dim, InputTensor, Int8Kernels, Limits, Model, ModelSource, ProfileBy};

const REPO_HELP: &str = "\
Repository layout (what appliances, python-tuf and tough read):
  REPO/metadata/N.root.json      every root version
  REPO/metadata/root.json        the newest root
  REPO/metadata/timestamp.json
  REPO/metadata/N.snapshot.json  consistent snapshots
  REPO/metadata/N.targets.json
  REPO/targets/SHA256.NAME       images, NAME = <model>-r<release>.img

Push it with `provision model update --repo REPO`, serve it to appliances
as a LAN mirror (any static HTTP server over REPO), or copy it to USB media.";

#[derive(Parser)]
#[command(
    name = "model-image",
    version = env!("APPLIANCE_VERSION"),
    about = "The vendor's tool: build model images and sign them into a TUF repository",
    long_about = "The vendor's tool for the appliance's signed model updates.\n\n\
        1. `keys init DIR` creates the signing keys and the first root.json (install it on \
        appliances with `appliance identity install --update-root`).\n\
        2. `build` turns an ONNX model, its tokenizer and golden inputs into a model image.\n\
        3. `repo init` and `repo add` sign images into a TUF repository; `repo refresh` \
        re-signs its timestamp before it expires; `repo rotate-root` replaces the root keys.\n\n\
        `check` and `profile` load a model exactly as the appliance would.\n\n\
        Exit codes: 0 success, 1 failure, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a model image: load the model as the appliance would, run the
    /// golden inputs through it, and write manifest, model, tokenizer and
    /// recorded outputs as one file.
    #[command(
        long_about = "Build a model image (the payload of a signed update).\n\n\
        Loads --onnx exactly as the appliance would (refusing, by operator name, what its \
        engine cannot run), runs every case of --vectors through it, records the outputs with \
        the file's tolerance, times the cases, and writes one image: a manifest (name, version, \
        release, compatibility, budgets, part digests), then the ONNX file, the tokenizer and \
        the golden vectors. ARCHITECTURE.md documents the format.\n\n\
        The vectors file (JSON):\n  \
        {\"tolerance\": {\"absolute\": 0.001, \"relative\": 0.001},\n   \
        \"cases\": [{\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\",\n                \
        \"shape\": [1, 1, 8, 8], \"data\": [0.0, ...]}]}]}\n\
        Text models take a BYTES input named `text` whose data are strings."
    )]
    Build(BuildArgs),
    /// Print an image's manifest.
    Inspect {
        /// The image file.
        image: PathBuf,
    },
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The TUF repository that signs images for appliances.
    #[command(subcommand, after_long_help = REPO_HELP)]
    Repo(RepoCmd),
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
        /// One row per node (with tract's details of the op, such as the
        /// matrix kernel it picked), not per operator type.
        #[arg(long)]
        nodes: bool,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// The model line: the name clients call (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    name: LineName,
    /// The model version clients see (Open Inference Protocol), from 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    version: u64,
    /// The release counter: every new image of a line needs a higher one;
    /// appliances refuse anything not above what they run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    release: u64,
    /// The lowest release an appliance may roll back to once it has
    /// committed this image (raise it when older releases must never run
    /// again, e.g. after a fix). At most --release.
    #[arg(long, default_value_t = 1)]
    min_release: u64,
    /// The ONNX model.
    #[arg(long, value_name = "FILE")]
    onnx: PathBuf,
    /// The model's tokenizer.json (text models).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// Golden inputs (JSON; see --help).
    #[arg(long, value_name = "INPUTS.json")]
    vectors: PathBuf,
    /// The oldest appliance software that can serve the image.
    #[arg(long, value_name = "VERSION", default_value_t = ApplianceVersion::current())]
    min_appliance: ApplianceVersion,
    /// Slowest acceptable golden case on the appliance (median of its
    /// runs), in milliseconds; the appliance rolls the image back if over.
    #[arg(long, value_name = "MS")]
    latency_budget_ms: Option<u64>,
    /// Most memory loading the model may add to the appliance, in MiB.
    #[arg(long, value_name = "MB")]
    memory_budget_mb: Option<u64>,
    /// Where to write the image.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key directory: root keys, one key each for targets,
    /// snapshot and timestamp (ed25519, PKCS#8 DER, mode 0600, never
    /// printed), and the first root.json.
    Init {
        /// The directory to create (must not exist or be empty).
        dir: PathBuf,
        /// How many root keys.
        #[arg(long, default_value_t = 1)]
        root_keys: usize,
        /// How many root keys must sign a new root.
        #[arg(long, default_value_t = 1)]
        root_threshold: usize,
        /// How long root.json stays valid.
        #[arg(long, default_value = "365d")]
        root_expires: Lifetime,
    },
}

#[derive(Args)]
struct RepoArgs {
    /// The key directory (`keys init`).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// The repository directory.
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    #[command(flatten)]
    lifetimes: LifetimeArgs,
}

#[derive(Args)]
struct LifetimeArgs {
    /// How long a new root.json stays valid.
    #[arg(long, default_value = "365d", value_name = "AGE")]
    root_expires: Lifetime,
    /// How long a new targets.json stays valid.
    #[arg(long, default_value = "90d", value_name = "AGE")]
    targets_expires: Lifetime,
    /// How long a new snapshot.json stays valid.
    #[arg(long, default_value = "30d", value_name = "AGE")]
    snapshot_expires: Lifetime,
    /// How long a new timestamp.json stays valid: how long a pushed
    /// repository stays installable without `repo refresh`.
    #[arg(long, default_value = "7d", value_name = "AGE")]
    timestamp_expires: Lifetime,
}

impl LifetimeArgs {
    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            root: self.root_expires,
            targets: self.targets_expires,
            snapshot: self.snapshot_expires,
            timestamp: self.timestamp_expires,
        }
    }
}

#[derive(Subcommand)]
enum RepoCmd {
    /// Create a repository signed by the key directory: its root chain and
    /// empty targets, snapshot and timestamp.
    Init(RepoArgs),
    /// Sign images into the repository (new targets, snapshot and
    /// timestamp). An image replaces a target of the same line and release.
    Add {
        #[command(flatten)]
        args: RepoArgs,
        /// Image files (`model-image build`).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Re-sign the timestamp with a new expiry (and with --snapshot the
    /// snapshot too), so appliances keep accepting the repository.
    Refresh {
        #[command(flatten)]
        args: RepoArgs,
        /// Re-sign the snapshot as well.
        #[arg(long)]
        snapshot: bool,
    },
    /// Replace the root keys: new keys in the key directory (old ones move
    /// to retired/vN/), and root version N+1 signed by both old and new
    /// keys, so appliances follow the rotation.
    RotateRoot {
        #[command(flatten)]
        args: RepoArgs,
        /// How many new root keys.
        #[arg(long, default_value_t = 1)]
        root_keys: usize,
        /// How many of them must sign a later root.
        #[arg(long, default_value_t = 1)]
        root_threshold: usize,
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
        Command::Build(args) => build(args),
        Command::Inspect { image } => inspect(&image),
        Command::Keys(KeysCmd::Init {
            dir,
            root_keys,
            root_threshold,
            root_expires,
        }) => {
            KeyDir::init(&dir, root_keys, root_threshold, root_expires)?;
            println!(
                "keys created in {} ({root_keys} root key(s), threshold {root_threshold}; \
                 targets, snapshot, timestamp); first root: {}",
                dir.display(),
                dir.join("root.json").display()
            );
            Ok(())
        }
        Command::Repo(cmd) => repo(cmd),
        Command::Check { model, tokenizer } => check(&model, tokenizer.as_deref()),
        Command::Profile {
            model,
            tokenizer,
            batch,
            tokens,
            runs,
            nodes,
        } => {
            let by = if nodes {
                ProfileBy::Node
            } else {
                ProfileBy::Operator
            };
            profile(&model, tokenizer.as_deref(), batch, tokens, runs, by)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.min_release <= args.release,
        "--min-release {} is above --release {}",
        args.min_release,
        args.release
    );
    let onnx = read(&args.onnx)?;
    let tokenizer = args.tokenizer.as_deref().map(read).transpose()?;
    let inputs = VendorInputs::parse(&read(&args.vectors)?)
        .with_context(|| format!("{}", args.vectors.display()))?;

    let bar = spinner("loading the model as the appliance would");
    let before = images::vectors::resident_bytes();
    let started = Instant::now();
    let model = Model::load(
        args.name.as_str(),
        args.version,
        ModelSource {
            onnx: &onnx,
            tokenizer_json: tokenizer.as_deref(),
        },
        Limits::default(),
    )
    .with_context(|| format!("{} cannot be served", args.onnx.display()))?;
    let load_time = started.elapsed();
    bar.set_message(format!("running {} golden case(s)", inputs.cases.len()));
    let golden = inputs
        .record(&model)
        .with_context(|| format!("running {}", args.vectors.display()))?;
    let report = golden
        .check(&model)
        .context("re-checking the recorded outputs")?;
    let grown = images::vectors::resident_bytes()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(b));
    bar.finish_and_clear();

    if let Some(budget) = args.latency_budget_ms {
        let ms = report.worst_latency.as_secs_f64() * 1e3;
        if ms > budget as f64 {
            eprintln!(
                "model-image: warning: the slowest case took {ms:.1} ms here, over the {budget} ms budget"
            );
        }
    }
    let vectors = golden.to_bytes()?;
    let mut parts: Vec<(PartKind, &[u8])> = vec![(PartKind::Onnx, &onnx)];
    if let Some(t) = &tokenizer {
        parts.push((PartKind::Tokenizer, t));
    }
    parts.push((PartKind::Vectors, &vectors));
    let info = |specs: &[inference::TensorSpec]| -> Vec<TensorInfo> {
        specs
            .iter()
            .map(|s| TensorInfo {
                name: s.name.clone(),
                datatype: s.datatype.as_str().to_owned(),
                shape: s.shape_i64(),
            })
            .collect()
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: args.name.clone(),
        version: args.version,
        release: args.release,
        min_release: args.min_release,
        min_appliance: args.min_appliance,
        latency_budget_ms: args.latency_budget_ms,
        memory_budget_mb: args.memory_budget_mb,
        inputs: info(model.inputs()),
        outputs: info(model.outputs()),
        parts: describe_parts(&parts),
    };
    // Round-trip through the parser: never write what an appliance refuses.
    let manifest = Manifest::parse(&manifest.to_bytes()?).context("the manifest")?;
    let dir = args
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let slices: Vec<&[u8]> = parts.iter().map(|(_, b)| *b).collect();
    write_image(
        &mut std::io::BufWriter::new(tmp.as_file_mut()),
        &manifest,
        &slices,
    )?;
    tmp.as_file().sync_all()?;
    tmp.persist(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    durable::sync_parent(&args.out)?;
    println!(
        "{}: {} version {} release {} ({} bytes; {} golden case(s), max |diff| {:.2e} on re-run)",
        args.out.display(),
        manifest.name,
        manifest.version,
        manifest.release,
        std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0),
        report.cases,
        report.max_abs_diff
    );
    println!(
        "  load {:.1?}, slowest case {:.2?} (median of its runs), resident memory +{} MiB",
        load_time,
        report.worst_latency,
        grown.map_or("?".into(), |g| (g >> 20).to_string())
    );
    // The figures above are this machine's: an appliance with other int8
    // instructions runs it at another speed.
    print_int8(&model);
    Ok(())
}

/// Which int8 kernels run the model here, and what the load rewrote
/// because they are slow.
fn print_int8(model: &Model) {
    if model.int8_as_float() > 0 {
        println!(
            "  {} int8 matrix products run as f32 products over the same integers (this \
             CPU's int8 kernels are the slow ones)",
            model.int8_as_float()
        );
    }
    if model.is_int8() {
        println!(
            "  int8 matrix products on this CPU: {}",
            Int8Kernels::native()
        );
    }
}

fn inspect(path: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let manifest = read_manifest(&mut file).with_context(|| format!("{}", path.display()))?;
    println!("{}", String::from_utf8_lossy(&manifest.to_bytes()?));
    Ok(())
}

fn repo(cmd: RepoCmd) -> anyhow::Result<()> {
    let show = |what: &str, v: RepoVersions| {
        println!(
            "{what}: root v{}, targets v{}, snapshot v{}, timestamp v{}",
            v.root, v.targets, v.snapshot, v.timestamp
        );
    };
    match cmd {
        RepoCmd::Init(a) => {
            let v = Repo::new(&a.repo).init(&KeyDir::new(&a.keys), a.lifetimes.lifetimes())?;
            show(&format!("repository created in {}", a.repo.display()), v);
        }
        RepoCmd::Add { args, images } => {
            let total: u64 = images
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .sum();
            let bar = ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message("signing images into the repository");
            let (added, v) = Repo::new(&args.repo).add(
                &KeyDir::new(&args.keys),
                &images,
                args.lifetimes.lifetimes(),
                &mut |n| bar.inc(n),
            )?;
            bar.finish_and_clear();
            for t in &added {
                println!(
                    "added {} ({} version {} release {}, {} bytes, {})",
                    t.name,
                    t.manifest.name,
                    t.manifest.version,
                    t.manifest.release,
                    t.length,
                    t.sha256
                );
            }
            show("signed", v);
        }
        RepoCmd::Refresh { args, snapshot } => {
            let v = Repo::new(&args.repo).refresh(
                &KeyDir::new(&args.keys),
                args.lifetimes.lifetimes(),
                snapshot,
            )?;
            show("refreshed", v);
        }
        RepoCmd::RotateRoot {
            args,
            root_keys,
            root_threshold,
        } => {
            let v = Repo::new(&args.repo).rotate_root(
                &KeyDir::new(&args.keys),
                root_keys,
                root_threshold,
                args.lifetimes.lifetimes(),
            )?;
            show("root rotated (old root keys in retired/)", v);
        }
    }
    Ok(())
}

fn load(path: &Path, tokenizer: Option<&Path>) -> anyhow::Result<Model> {
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

fn check(path: &Path, tokenizer: Option<&Path>) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = load(path, tokenizer)?;
    println!(
        "{}: loaded and optimised in {:.1?}",
        path.display(),
        started.elapsed()
    );
    print_int8(&model);
    println!(
        "  element-wise passes on this CPU: {}",
        inference::vector_level()
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
    path: &Path,
    tokenizer: Option<&Path>,
    batch: i64,
    tokens: i64,
    runs: usize,
    by: ProfileBy,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        batch >= 1 && tokens >= 1,
        "--batch and --tokens must be at least 1"
    );
    let model = load(path, tokenizer)?;
    let (shapes, buffers) = synthetic(&model, batch, tokens, Fill::Ones);
    let inputs = tensors(&model, &shapes, &buffers);
    model.profile(&inputs, 1, by).context("warm-up run")?;
    let times = model.profile(&inputs, runs, by).context("profiled runs")?;
    let total: f64 = times.iter().map(|t| t.time.as_secs_f64()).sum();
    println!(
        "{}: batch {batch}, {tokens} tokens, {runs} runs, {:.3} ms per run in nodes",
        path.display(),
        total * 1e3 / runs as f64
    );
    if by == ProfileBy::Node {
        // Node descriptions are long (tract's details of the op): times first.
        println!("{:>12} {:>7}  node", "µs per run", "share");
        for t in &times {
            let seconds = t.time.as_secs_f64();
            println!(
                "{:>12.1} {:>6.1}%  {}",
                seconds * 1e6 / runs as f64,
                100.0 * seconds / total,
                t.op
            );
        }
        return Ok(());
    }
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
