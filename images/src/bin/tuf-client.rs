//! `tuf-client`: the appliance's TUF verifier behind the command-line
//! protocol of the public TUF conformance suite, so the verifier can be
//! tested by the same harness as other TUF clients.
//!
//! ```text
//! tuf-client --metadata-dir D init ROOT
//! tuf-client --metadata-dir D --metadata-url URL refresh
//! tuf-client --metadata-dir D --metadata-url URL --target-name N [--target-name N2 …]
//!            --target-base-url TURL --target-dir T download
//! ```
//!
//! D holds only the trusted, non-versioned metadata, byte-exact as
//! verified: root.json, timestamp.json, snapshot.json, targets.json. Exit
//! status 0 on success, 1 on any failure (with the reason on stderr).
//!
//! It uses the very verifier the appliance uses (`ToughVerifier`), with the
//! same profile: top-level roles only, flat target names. A failed refresh
//! changes nothing in D.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use images::tuf::repo::write_atomic;
use images::tuf::source::{HttpSource, RepositorySource, is_flat_name};
use images::tuf::verify::{
    MAX_ROOT_LEN, Refreshed, ToughVerifier, TrustedMetadata, VerifiedTarget, Verifier,
};

#[derive(Parser)]
#[command(
    name = "tuf-client",
    version = env!("APPLIANCE_VERSION"),
    about = "The appliance's TUF verifier, driven by the TUF conformance client protocol"
)]
struct Cli {
    /// Directory of trusted metadata (root.json, timestamp.json,
    /// snapshot.json, targets.json).
    #[arg(long, value_name = "DIR")]
    metadata_dir: PathBuf,
    /// Base URL of the repository's metadata (http://).
    #[arg(long, value_name = "URL")]
    metadata_url: Option<String>,
    /// Targets to download, in order.
    #[arg(long, value_name = "NAME")]
    target_name: Vec<String>,
    /// Base URL of the repository's targets (http://).
    #[arg(long, value_name = "URL")]
    target_base_url: Option<String>,
    /// Where downloaded targets go.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trust ROOT: copy it into the metadata directory (no network).
    Init {
        /// A root.json, trusted out of band.
        root: PathBuf,
    },
    /// Run the TUF client workflow and store the new trusted metadata.
    Refresh,
    /// Refresh, then download each --target-name into --target-dir.
    Download,
}

const ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tuf-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { root } => {
            let bytes =
                std::fs::read(&root).with_context(|| format!("reading {}", root.display()))?;
            anyhow::ensure!(
                bytes.len() as u64 <= MAX_ROOT_LEN,
                "{} is too large",
                root.display()
            );
            TrustedMetadata::from_root(&bytes)?;
            std::fs::create_dir_all(&cli.metadata_dir)
                .with_context(|| format!("creating {}", cli.metadata_dir.display()))?;
            write_atomic(&cli.metadata_dir.join("root.json"), &bytes)?;
            Ok(())
        }
        Command::Refresh => {
            let url = cli
                .metadata_url
                .as_deref()
                .context("--metadata-url is required")?;
            let source: Arc<dyn RepositorySource> = Arc::new(HttpSource::with_bases(url, url)?);
            refresh(&cli.metadata_dir, source).map(|_| ())
        }
        Command::Download => {
            let url = cli
                .metadata_url
                .as_deref()
                .context("--metadata-url is required")?;
            let targets_url = cli
                .target_base_url
                .as_deref()
                .context("--target-base-url is required")?;
            let dir = cli
                .target_dir
                .as_deref()
                .context("--target-dir is required")?;
            let source: Arc<dyn RepositorySource> =
                Arc::new(HttpSource::with_bases(url, targets_url)?);
            let refreshed = refresh(&cli.metadata_dir, source.clone())?;
            for name in &cli.target_name {
                download(&refreshed, source.as_ref(), name, dir)?;
            }
            Ok(())
        }
    }
}

/// Loads the trusted metadata from `dir`, refreshes it, stores the result.
fn refresh(dir: &Path, source: Arc<dyn RepositorySource>) -> anyhow::Result<Refreshed> {
    let read = |role: &str| -> anyhow::Result<Option<Vec<u8>>> {
        let path = dir.join(format!("{role}.json"));
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let root =
        read("root")?.with_context(|| format!("no root.json in {}: run init", dir.display()))?;
    let mut trusted = TrustedMetadata::from_root(&root)?;
    trusted.timestamp = read("timestamp")?;
    trusted.snapshot = read("snapshot")?;
    trusted.targets = read("targets")?;
    let refreshed = ToughVerifier::with_default_scratch().refresh(&trusted, source)?;
    let t = &refreshed.trusted;
    for (role, bytes) in ROLES.iter().zip([
        Some(&t.root),
        t.timestamp.as_ref(),
        t.snapshot.as_ref(),
        t.targets.as_ref(),
    ]) {
        if let Some(bytes) = bytes {
            write_atomic(&dir.join(format!("{role}.json")), bytes)?;
        }
    }
    Ok(refreshed)
}

/// Downloads one target unless a verified copy is there already.
fn download(
    refreshed: &Refreshed,
    source: &dyn RepositorySource,
    name: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    if !is_flat_name(name) {
        bail!("target {name:?}: only flat target names are supported");
    }
    let target = refreshed
        .targets
        .iter()
        .find(|t| t.name == name)
        .with_context(|| format!("target {name} is not in the repository's targets metadata"))?;
    let dest = dir.join(name);
    if let Ok(file) = std::fs::File::open(&dest) {
        let mut check = VerifiedTarget::new(file, target);
        if std::io::copy(&mut check, &mut std::io::sink()).is_ok() {
            return Ok(());
        }
    }
    let mut reader = refreshed.open_target(source, target)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::copy(&mut reader, tmp.as_file_mut()).with_context(|| format!("target {name}"))?;
    tmp.as_file().sync_all()?;
    tmp.persist(&dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    durable::sync_parent(&dest)?;
    Ok(())
}
