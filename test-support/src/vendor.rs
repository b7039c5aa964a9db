//! The vendor's side of signed updates, as tests drive it: a key directory
//! and a TUF repository made with the real `model-image` binary, and golden
//! inputs for the reference models.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::models_dir;

/// A vendor: keys in `dir/keys`, a repository in `dir/repo`, images in
/// `dir/images`, all made by the `model-image` binary at `tool`.
pub struct Vendor {
    /// The vendor's directory.
    pub dir: PathBuf,
    tool: PathBuf,
}

impl Vendor {
    /// Creates keys and an empty repository. `keys_args` go to `keys init`.
    pub fn new(tool: &Path, dir: &Path, keys_args: &[&str]) -> Vendor {
        std::fs::create_dir_all(dir).unwrap();
        let vendor = Vendor {
            dir: dir.to_path_buf(),
            tool: tool.to_path_buf(),
        };
        let keys = vendor.keys();
        let mut args = vec!["keys", "init", keys.to_str().unwrap()];
        args.extend_from_slice(keys_args);
        vendor.run_ok(&args);
        vendor.repo_cmd("init", &[]);
        std::fs::create_dir_all(vendor.dir.join("images")).unwrap();
        vendor
    }

    /// A copy of this vendor (keys, repository, images) in `dir`, to change
    /// without disturbing others: same keys, so the same root is trusted.
    pub fn copy_to(&self, dir: &Path) -> Vendor {
        copy_dir(&self.dir, dir);
        Vendor {
            dir: dir.to_path_buf(),
            tool: self.tool.clone(),
        }
    }

    /// The key directory.
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// The repository directory.
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// The first root.json, for `appliance identity install --update-root`.
    pub fn root_json(&self) -> PathBuf {
        self.keys().join("root.json")
    }

    /// Runs `model-image` with `args`; returns (success, stdout + stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.tool).args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `model-image` that must succeed; its output.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "model-image {args:?} failed: {out}");
        out
    }

    /// `model-image repo <sub> --keys … --repo … <extra>`, which must succeed.
    pub fn repo_cmd(&self, sub: &str, extra: &[&str]) -> String {
        let keys = self.keys();
        let repo = self.repo();
        let mut args = vec![
            "repo",
            sub,
            "--keys",
            keys.to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run_ok(&args)
    }

    /// Builds an image of a reference model file (`digits_*` or `minilm*`)
    /// as line `name`, with golden inputs made for it; `extra` goes to
    /// `model-image build`. Returns the image's path.
    pub fn build(
        &self,
        name: &str,
        model: &str,
        release: u64,
        version: u64,
        extra: &[&str],
    ) -> PathBuf {
        let models = models_dir();
        let out = self
            .dir
            .join("images")
            .join(format!("{name}-{model}-r{release}.img"));
        let inputs = self.dir.join("images").join(format!("{model}.inputs.json"));
        std::fs::write(&inputs, golden_inputs(model)).unwrap();
        let onnx = models.join(model);
        let release = release.to_string();
        let version = version.to_string();
        let mut args = vec![
            "build",
            "--name",
            name,
            "--version",
            &version,
            "--release",
            &release,
            "--onnx",
            onnx.to_str().unwrap(),
            "--vectors",
            inputs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let tokenizer = models.join("minilm_tokenizer.json");
        if model.starts_with("minilm") {
            args.extend_from_slice(&["--tokenizer", tokenizer.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        self.run_ok(&args);
        out
    }

    /// Signs images into the repository (`repo add`), with `extra` options.
    pub fn add(&self, images: &[&Path], extra: &[&str]) -> String {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(images.iter().map(|p| p.to_str().unwrap()));
        self.repo_cmd("add", &args)
    }
}

/// Golden inputs for a reference model file, as `model-image build
/// --vectors` takes them: held-out digits for the digits models, three
/// sentences for MiniLM.
pub fn golden_inputs(model: &str) -> String {
    if model.starts_with("minilm") {
        return r#"{"tolerance": {"absolute": 0.002, "relative": 0.002},
            "cases": [{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
            "data": ["The weather is lovely today.", "He drove to the stadium."]}]}]}"#
            .to_owned();
    }
    let x = std::fs::read(models_dir().join("digits_test_x.f32")).unwrap();
    let floats: Vec<f32> = x
        .chunks_exact(4)
        .take(4 * 64)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = if model.contains("cnn") {
        "[4, 1, 8, 8]"
    } else {
        "[4, 64]"
    };
    let data: Vec<String> = floats.iter().map(|f| format!("{f}")).collect();
    format!(
        r#"{{"cases": [{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": {shape}, "data": [{}]}}]}}]}}"#,
        data.join(",")
    )
}

/// Copies a directory tree (permissions kept: keys stay 0600).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
