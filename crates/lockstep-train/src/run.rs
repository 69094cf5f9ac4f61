//! The run directory and the training loop.
//!
//! ```text
//! RUN/manifest.json        canonical RunManifest (identity + placement)
//! RUN/config.toml          the config file as given
//! RUN/metrics.jsonl        one canonical JSON object per line: train steps and evals (no times)
//! RUN/timing.jsonl         wall-clock facts (kept apart: never hashed, never compared)
//! RUN/checkpoints/step-NNNNNNN.safetensors
//! RUN/scores.json          recorded evaluation scores of the final model (+ checkpoint hash)
//! RUN/eval/<split>.safetensors  per-sample logits of the final model, with labels
//! RUN/final.safetensors    written last: its presence means the run finished
//! RUN/.lock                held (flock) while a process trains in RUN
//! ```
//!
//! Step `s` (1-based) trains on batch `batch_in_epoch` of epoch `e`, whose order is the
//! permutation of stream `shuffle/epoch-<e>`; dropout uses `dropout/l<l>/step-<s-1>`. The state
//! after each step is (step, epoch, batch_in_epoch, weights, moments); a checkpoint holds all of
//! it, so resuming from any checkpoint replays the same steps bit for bit.

use crate::backend::{self, Backend};
use crate::checkpoint::{Checkpoint, TrainState, checkpoint_path, latest_checkpoint};
use crate::data::{Dataset, Split, load_dataset};
use crate::model::{Model, cross_entropy, one_hot, upload};
use crate::runfiles::{MetricLine, Scores, SplitScore};
use crate::{TrainError, optim};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lockstep_core::config::{BackendKind, Config, KernelSet, ModelKind, learning_rate};
use lockstep_core::manifest::{Placement, RunIdentity, RunManifest};
use lockstep_core::tensorfile::{TensorEntry, TensorFile};
use lockstep_core::{SeedStream, canonical_json, sha256_hex, write_atomic};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Facts about the build, supplied by the binary (the library cannot know its own build).
#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    pub git_sha: Option<String>,
    pub git_dirty: Option<bool>,
    pub cargo_lock_sha256: String,
    pub rustc: String,
}

/// How to run (not what to compute: that is the config).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// wgpu adapter selector (`default`, `cpu`, `discrete:N`, ...).
    pub device: Option<String>,
    pub threads: usize,
    /// Stop after this many optimizer steps (checkpointing there); `None` runs to the end.
    pub stop_at: Option<u64>,
    pub progress: bool,
    pub build: BuildInfo,
    /// When a finished run with the same config, code and data identity exists beside `out`,
    /// link `out` to it instead of training again.
    pub reuse: bool,
    /// The network of a `model.kind = "custom"` job (a program's own `nn::Network`); `None` for
    /// the shipped models, which the config describes.
    pub model: Option<Model>,
}

/// The model a job runs: the shipped one its config describes, or the program's own network
/// (`RunOptions::model`) for `model.kind = "custom"` — checked against the data's input shape and
/// class count, and by one forward pass on a zero input that must give `[1, classes]` logits.
pub fn job_model(
    cfg: &Config,
    custom: Option<&Model>,
    image_shape: [usize; 3],
    classes: usize,
    device: &Device,
    place: &Path,
) -> Result<Model, TrainError> {
    let bad = |what: String, fix: &str| TrainError::run_dir(place, what, fix);
    let model = match (cfg.model.kind, custom) {
        (ModelKind::Custom, None) => {
            return Err(bad(
                "model.kind = \"custom\": the network is defined in Rust by the program that trained it, not in the config".into(),
                "run that program (e.g. `cargo run --release --example custom_model`), which passes its network to lockstep_train",
            ));
        }
        (ModelKind::Custom, Some(m)) => m.clone(),
        (kind, Some(_)) => {
            return Err(bad(
                format!("a network was passed but the config says model.kind = {kind:?}"),
                "set model.kind = \"custom\" in the config",
            ));
        }
        (_, None) => Model::new(&cfg.model, cfg.train.kernels, image_shape, classes),
    };
    if model.image_shape != image_shape || model.classes != classes {
        return Err(bad(
            format!(
                "the network takes inputs {:?} and gives {} classes, the data has {image_shape:?} and {classes}",
                model.image_shape, model.classes
            ),
            "build the network for the data's image_shape and classes",
        ));
    }
    if model.kernels != cfg.train.kernels {
        return Err(bad(
            format!(
                "the network uses kernels {:?}, the config train.kernels = {:?}",
                model.kernels, cfg.train.kernels
            ),
            "build the network with the config's kernel set",
        ));
    }
    let params: Vec<Tensor<1>> = model
        .specs
        .iter()
        .map(|s| upload(vec![0.0; s.numel()], device))
        .collect();
    let x = Tensor::<2>::zeros([1, model.input_dim()], device);
    // A network's forward panics naming the parameter it misuses (`nn::Params::get`): caught
    // here, quietly, and reported as an error before anything is written.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let dims = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.forward(&params, x, None).dims()
    }));
    std::panic::set_hook(hook);
    let dims = dims.map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        bad(
            format!("the network's forward pass failed: {msg}"),
            "fix the network's forward (it must use only the parameters params() declares)",
        )
    })?;
    if dims != [1, classes] {
        return Err(bad(
            format!(
                "the network's forward returns logits of shape {dims:?} for one input, the classification task needs [1, {classes}]"
            ),
            "make the last layer output one logit per class",
        ));
    }
    Ok(model)
}

/// Aggregate scores on one split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    pub split: String,
    pub samples: usize,
    pub loss: f64,
    pub accuracy: f64,
    #[serde(skip)]
    pub logits: Vec<f32>,
    #[serde(skip)]
    pub labels: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub step: u64,
    pub total_steps: u64,
    pub finished: bool,
    pub evals: Vec<EvalResult>,
    pub final_sha256: Option<String>,
}

/// Steps per epoch and total steps of a job on a training split of `n` samples.
pub fn step_counts(cfg: &Config, n: usize) -> (u64, u64) {
    let b = cfg.train.batch_size;
    let spe = if cfg.train.drop_last {
        n / b
    } else {
        n.div_ceil(b)
    }
    .max(1) as u64;
    let total = cfg.train.epochs.saturating_mul(spe);
    let total = match cfg.train.max_steps {
        Some(m) if cfg.train.epochs == 0 || m < total => m,
        _ => total,
    };
    (spe, total)
}

/// The identity of a job on loaded data.
pub fn identity(cfg: &Config, data: &Dataset) -> RunIdentity {
    RunIdentity {
        lockstep_version: env!("CARGO_PKG_VERSION").to_string(),
        config: cfg.identity(),
        config_hash: cfg.hash(),
        seed: cfg.seed,
        datasets: data.hashes.clone(),
    }
}

/// Start a new run in `out` (which must not exist or be an empty directory).
pub fn train(
    cfg: &Config,
    config_text: &str,
    out: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    if out.exists() && !is_unstarted(out) {
        return Err(TrainError::run_dir(
            out,
            "already exists (an earlier run or another file); nothing was changed",
            "continue it with `lockstep resume DIR`, or pass a new --out",
        ));
    }
    let data = load_dataset(&cfg.data, cfg.seed)?;
    if let Some(found) = find_identical(cfg, &data, opts, out) {
        if opts.reuse {
            link_run(&found, out)?;
            tracing::warn!(run = %found.display(), "reused an identical finished run");
            let rows = crate::tracking::run_row(&found)?;
            return Ok(RunSummary {
                dir: out.to_path_buf(),
                step: rows.step,
                total_steps: rows.step,
                finished: true,
                evals: vec![],
                final_sha256: rows.checkpoint_sha256,
            });
        }
        eprintln!(
            "note: {} is a finished run with the same config, code and data identity (pass --reuse to link to it instead of training)",
            found.display()
        );
    }
    let backend = backend::open(opts.backend, opts.threads, opts.device.as_deref())?;
    backend.warn_if_not_bitwise(cfg.train.kernels);
    let model = job_model(
        cfg,
        opts.model.as_ref(),
        data.image_shape,
        data.classes,
        &backend.device,
        out,
    )?;
    std::fs::create_dir_all(out.join("checkpoints")).map_err(|e| {
        TrainError::run_dir(
            out,
            format!("cannot create: {e}"),
            "check permissions or choose another --out",
        )
    })?;
    let lock = lock_run(out)?;
    if out.join("manifest.json").exists() {
        return Err(TrainError::run_dir(
            out,
            "another process started a run here at the same time",
            "pass a new --out",
        ));
    }
    let manifest = RunManifest {
        identity: identity(cfg, &data),
        placement: Placement {
            backend: opts.backend.as_str().into(),
            device: backend.facts.clone(),
            threads: opts.threads,
            git_sha: opts.build.git_sha.clone(),
            git_dirty: opts.build.git_dirty,
            cargo_lock_sha256: opts.build.cargo_lock_sha256.clone(),
            rustc: opts.build.rustc.clone(),
        },
    };
    // manifest.json is written last: it marks the run as started. A start killed before it
    // leaves only files `is_unstarted` recognises, and the next `train` starts over.
    remove_stale_temps(out);
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    write_atomic(&out.join("metrics.jsonl"), b"")?;
    write_atomic(
        &out.join("manifest.json"),
        pretty_json(&manifest).as_bytes(),
    )?;
    let start = Start::fresh(&model, cfg, &data, &backend.device);
    let r = run_loop(
        cfg,
        &manifest.identity,
        &data,
        &model,
        &backend,
        start,
        out,
        opts,
    );
    drop(lock);
    r
}

/// A finished run beside `out` (same parent directory) with the same identity (config, data,
/// lockstep version), backend and code (git sha, clean tree): ZenML-style caching.
fn find_identical(cfg: &Config, data: &Dataset, opts: &RunOptions, out: &Path) -> Option<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let want = identity(cfg, data);
    if opts.build.git_dirty != Some(false) {
        return None; // uncommitted code has no identity to match
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().find(|d| {
        d.join("final.safetensors").is_file()
            && read_manifest(d).is_ok_and(|m| {
                m.identity == want
                    && m.placement.backend == opts.backend.as_str()
                    && m.placement.git_sha == opts.build.git_sha
                    && m.placement.git_dirty == Some(false)
            })
    })
}

#[cfg(unix)]
fn link_run(found: &Path, out: &Path) -> Result<(), TrainError> {
    let target = std::fs::canonicalize(found).unwrap_or_else(|_| found.to_path_buf());
    std::os::unix::fs::symlink(&target, out).map_err(|e| {
        TrainError::run_dir(
            out,
            format!("cannot link to {}: {e}", target.display()),
            "pass a --out that does not exist",
        )
    })
}

#[cfg(not(unix))]
fn link_run(found: &Path, out: &Path) -> Result<(), TrainError> {
    Err(TrainError::run_dir(
        out,
        format!(
            "--reuse needs symlinks; the identical run is {}",
            found.display()
        ),
        "use that run directly",
    ))
}

/// An empty directory, or one left by a start that died before writing its manifest: `.lock`,
/// an empty `checkpoints/`, and (only beside our `.lock`) `config.toml`, an empty
/// `metrics.jsonl` and interrupted temp files. Safe to (re)start in; anything else is refused.
fn is_unstarted(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let ours = dir.join(".lock").is_file();
    entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        match name.as_str() {
            ".lock" => true,
            "checkpoints" => std::fs::read_dir(&path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false),
            "config.toml" => ours,
            "metrics.jsonl" => ours && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0),
            n => ours && n.starts_with('.') && n.contains(".tmp-"),
        }
    })
}

/// Remove temp files of writes that a crash interrupted (`.NAME.tmp-PID`); they never replaced
/// anything (`write_atomic` renames only complete files).
fn remove_stale_temps(dir: &Path) {
    for d in [dir.to_path_buf(), dir.join("checkpoints"), dir.join("eval")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Continue the run in `dir` from its newest checkpoint (or from the start if it has none).
pub fn resume(dir: &Path, opts_in: &RunOptions) -> Result<RunSummary, TrainError> {
    let manifest = read_manifest(dir)?;
    if dir.join("final.safetensors").exists() {
        return Err(TrainError::run_dir(
            dir,
            "this run already finished (final.safetensors exists); nothing was changed",
            "start a new run with `lockstep train CONFIG --out NEW_DIR`",
        ));
    }
    let mut cfg = manifest.identity.config.clone();
    let backend_kind =
        BackendKind::parse(&manifest.placement.backend).unwrap_or(BackendKind::Ndarray);
    cfg.train.backend = backend_kind;
    let opts = RunOptions {
        backend: backend_kind,
        ..opts_in.clone()
    };
    let lock = lock_run(dir)?;
    remove_stale_temps(dir);
    let data = load_dataset(&cfg.data, cfg.seed)?;
    let id = identity(&cfg, &data);
    if id.datasets != manifest.identity.datasets {
        return Err(TrainError::run_dir(
            dir,
            format!(
                "the data changed since the run started (recorded {:?}, now {:?})",
                manifest.identity.datasets, id.datasets
            ),
            "restore the original data files (resuming on other data would not reproduce the run)",
        ));
    }
    if id != manifest.identity {
        return Err(TrainError::run_dir(
            dir,
            "the run was made by another lockstep version or config schema",
            "resume with the lockstep version that started the run",
        ));
    }
    let backend = backend::open(backend_kind, opts.threads, opts.device.as_deref())?;
    // Only the facts that decide this kernel set's bits: a lockstep-kernel run may continue on a
    // device that fuses plain code, flushes subnormals or rounds sqrt its own way.
    let lockstep = cfg.train.kernels == KernelSet::Lockstep;
    let deciding = |k: &String| lockstep_kernels::profile::deciding_fact(k, lockstep);
    let recorded: BTreeMap<&String, &String> = manifest
        .placement
        .device
        .iter()
        .filter(|(k, _)| deciding(k))
        .collect();
    let now: BTreeMap<&String, &String> =
        backend.facts.iter().filter(|(k, _)| deciding(k)).collect();
    if recorded != now {
        return Err(TrainError::run_dir(
            dir,
            format!(
                "this device's arithmetic profile {now:?} differs from the one the run was made with {recorded:?}: continuing would silently diverge from an uninterrupted run"
            ),
            "resume on a device with the recorded profile (see manifest.json placement.device)",
        ));
    }
    let model = job_model(
        &cfg,
        opts.model.as_ref(),
        data.image_shape,
        data.classes,
        &backend.device,
        dir,
    )?;
    let start = match latest_checkpoint(dir) {
        None => Start::fresh(&model, &cfg, &data, &backend.device),
        Some((_, path)) => {
            let ck = Checkpoint::read(&path)?;
            if ck.identity != manifest.identity {
                return Err(TrainError::checkpoint(
                    &path,
                    "belongs to another run (its identity differs from manifest.json)",
                    "resume the run directory the checkpoint came from",
                ));
            }
            Start::from_checkpoint(&model, &cfg, &ck, &path, &backend.device)?
        }
    };
    truncate_metrics(&dir.join("metrics.jsonl"), start.state.step)?;
    let r = run_loop(
        &cfg,
        &manifest.identity,
        &data,
        &model,
        &backend,
        start,
        dir,
        &opts,
    );
    drop(lock);
    r
}

pub fn read_manifest(dir: &Path) -> Result<RunManifest, TrainError> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        TrainError::run_dir(
            dir,
            format!("is not a lockstep run directory ({}: {e})", p.display()),
            "pass the --out directory of a `lockstep train` run",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        TrainError::run_dir(
            &p,
            format!("unreadable manifest: {e}"),
            "restore manifest.json from the run as lockstep wrote it",
        )
    })
}

fn pretty_json<T: Serialize>(v: &T) -> String {
    let value: serde_json::Value =
        serde_json::from_str(&canonical_json(v)).expect("canonical JSON parses");
    serde_json::to_string_pretty(&value).expect("serialising a Value cannot fail") + "\n"
}

/// Hold an exclusive lock on `RUN/.lock` for as long as the returned file lives.
fn lock_run(dir: &Path) -> Result<File, TrainError> {
    let p = dir.join(".lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| {
            TrainError::run_dir(
                dir,
                format!("cannot create the lock file: {e}"),
                "check permissions",
            )
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::run_dir(
            dir,
            "another lockstep process is training in this directory (RUN/.lock is held); nothing was changed",
            "wait for it to finish, or pass another --out",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(TrainError::run_dir(
            dir,
            format!("cannot lock: {e}"),
            "check the filesystem supports file locks",
        )),
    }
}

/// Keep the lines of `metrics.jsonl` up to and including `step` (atomically).
fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes()).map_err(TrainError::from)
}

/// Where the loop starts: weights, optimizer slots and state on the backend.
struct Start {
    params: Vec<Tensor<1>>,
    slots: Vec<Vec<Tensor<1>>>,
    state: TrainState,
}

impl Start {
    fn fresh(model: &Model, cfg: &Config, data: &Dataset, device: &Device) -> Self {
        let (_, total) = step_counts(cfg, data.train.len());
        let params = model
            .init_params(cfg.seed)
            .into_iter()
            .map(|v| upload(v, device))
            .collect();
        let nslots = optim::slot_names(cfg.optimizer.kind).len();
        let slots = model
            .specs
            .iter()
            .map(|s| {
                (0..nslots)
                    .map(|_| upload(vec![0.0; s.numel()], device))
                    .collect()
            })
            .collect();
        let state = TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            total_steps: total,
            last_lr: 0.0,
            streams: BTreeMap::new(),
        };
        Start {
            params,
            slots,
            state,
        }
    }

    fn from_checkpoint(
        model: &Model,
        cfg: &Config,
        ck: &Checkpoint,
        path: &Path,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let mut params = Vec::new();
        let mut slots = Vec::new();
        for s in &model.specs {
            params.push(upload(
                ck.tensor(&format!("model.{}", s.name), &s.shape, path)?,
                device,
            ));
            let mut ps = Vec::new();
            for slot in optim::slot_names(cfg.optimizer.kind) {
                ps.push(upload(
                    ck.tensor(&format!("optim.{slot}.{}", s.name), &s.shape, path)?,
                    device,
                ));
            }
            slots.push(ps);
        }
        let expected = model.specs.len() * (1 + optim::slot_names(cfg.optimizer.kind).len());
        if ck.tensors.len() != expected {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "holds {} tensors, the model and optimizer need {expected}",
                    ck.tensors.len()
                ),
                "resume with the config the checkpoint was trained with",
            ));
        }
        Ok(Start {
            params,
            slots,
            state: ck.state.clone(),
        })
    }
}

fn to_host(t: &Tensor<1>) -> Vec<f32> {
    t.clone()
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32")
}

fn make_checkpoint(
    model: &Model,
    cfg: &Config,
    identity: &RunIdentity,
    data: &Dataset,
    params: &[Tensor<1>],
    slots: &[Vec<Tensor<1>>],
    state: &TrainState,
) -> Result<Checkpoint, TrainError> {
    let mut tensors = BTreeMap::new();
    for (i, s) in model.specs.iter().enumerate() {
        let w = to_host(&params[i]);
        if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                step: state.step,
                tensor: format!("model.{}", s.name),
                value: *bad,
            });
        }
        tensors.insert(
            format!("model.{}", s.name),
            TensorEntry::from_f32(s.shape.clone(), &w),
        );
        for (slot, t) in optim::slot_names(cfg.optimizer.kind).iter().zip(&slots[i]) {
            tensors.insert(
                format!("optim.{slot}.{}", s.name),
                TensorEntry::from_f32(s.shape.clone(), &to_host(t)),
            );
        }
    }
    Ok(Checkpoint {
        identity: identity.clone(),
        state: state.clone(),
        tensors,
        inference: Some(data.normalizer.inference(&cfg.data)),
    })
}

/// Logits and aggregate scores of `params` on `split`, computed in `batch`-sized chunks in
/// index order. Loss and accuracy are computed on the host in f64 (fixed order, first-max argmax).
pub fn evaluate(
    model: &Model,
    params: &[Tensor<1>],
    split: &Split,
    name: &str,
    batch: usize,
    device: &Device,
) -> EvalResult {
    let mut logits = Vec::with_capacity(split.len() * model.classes);
    let n = split.len();
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let x = Tensor::<2>::from_data(
            TensorData::new(
                split.features[start * split.dim..end * split.dim].to_vec(),
                [end - start, split.dim],
            ),
            device,
        );
        let out = model.forward(params, x, None);
        logits.extend(
            out.try_into_vec_as::<f32>()
                .expect("logits read back as f32"),
        );
        start = end;
    }
    let (loss, accuracy) = score(&logits, &split.labels, model.classes);
    EvalResult {
        split: name.into(),
        samples: n,
        loss,
        accuracy,
        logits,
        labels: split.labels.clone(),
    }
}

/// Mean cross-entropy and accuracy from logits, on the host in f64, samples in index order.
pub fn score(logits: &[f32], labels: &[u32], classes: usize) -> (f64, f64) {
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        correct += usize::from(best == label as usize);
        let max = row[best] as f64;
        let lse = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        loss += lse - row[label as usize] as f64;
    }
    let n = labels.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    fn open(path: &Path) -> Result<Self, TrainError> {
        let file = File::options()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| {
                TrainError::run_dir(
                    path,
                    format!("cannot open for appending: {e}"),
                    "check permissions and free space",
                )
            })?;
        Ok(Metrics {
            file,
            path: path.to_path_buf(),
        })
    }
    fn line<T: Serialize>(&mut self, v: &T) -> Result<(), TrainError> {
        writeln!(self.file, "{}", canonical_json(v)).map_err(|e| {
            TrainError::run_dir(&self.path, format!("cannot write: {e}"), "check free space")
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    cfg: &Config,
    identity: &RunIdentity,
    data: &Dataset,
    model: &Model,
    backend: &Backend,
    start: Start,
    dir: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    let device = &backend.device;
    let ad = device.clone().autodiff();
    let Start {
        mut params,
        mut slots,
        mut state,
    } = start;
    let n = data.train.len();
    let (spe, total) = step_counts(cfg, n);
    let b = cfg.train.batch_size;
    let mut metrics = Metrics::open(&dir.join("metrics.jsonl"))?;
    let mut timing = Metrics::open(&dir.join("timing.jsonl"))?;
    let shuffle_name = |e: u64| format!("shuffle/epoch-{e}");
    let mut order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
    let stop = opts.stop_at.unwrap_or(u64::MAX).min(total);
    let bar = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let t0 = Instant::now();
    let start_step = state.step;
    tracing::info!(
        step = state.step,
        total,
        backend = backend.kind.as_str(),
        "training"
    );

    while state.step < stop {
        let lo = state.batch_in_epoch as usize * b;
        let hi = (lo + b).min(n);
        let (x, y) = data.train.gather(&order[lo..hi]);
        let bs = y.len();
        let xt = Tensor::<2>::from_data(TensorData::new(x, [bs, data.train.dim]), &ad);
        let tt = Tensor::<2>::from_data(
            TensorData::new(one_hot(&y, model.classes), [bs, model.classes]),
            &ad,
        );
        let leaves: Vec<Tensor<1>> = params
            .iter()
            .map(|p| Tensor::from_inner(p.clone()).require_grad())
            .collect();
        let logits = model.forward(&leaves, xt, Some((cfg.seed, state.step)));
        let loss = cross_entropy(model.kernels, logits, tt);
        let loss_v = loss
            .clone()
            .try_into_vec_as::<f32>()
            .expect("loss reads back as f32")[0];
        if !loss_v.is_finite() {
            return Err(TrainError::NonFinite {
                step: state.step + 1,
                tensor: "loss".into(),
                value: loss_v,
            });
        }
        let grads = loss.backward();
        let lr = learning_rate(&cfg.optimizer, &cfg.schedule, state.step, total);
        for i in 0..params.len() {
            let g = leaves[i]
                .grad(&grads)
                .expect("every parameter takes part in the loss");
            params[i] = optim::update(
                &cfg.optimizer,
                cfg.train.kernels,
                lr,
                state.step + 1,
                params[i].clone(),
                g,
                &mut slots[i],
            );
        }
        state.step += 1;
        state.last_lr = lr;
        state.batch_in_epoch += 1;
        if state.batch_in_epoch == spe {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
        }
        state.streams = BTreeMap::from([(
            shuffle_name(state.epoch),
            "regenerated from the epoch number".to_string(),
        )]);
        metrics.line(&MetricLine::Train {
            step: state.step,
            epoch: state.epoch,
            loss: loss_v as f64,
            lr: lr as f64,
        })?;
        bar.set_position(state.step);
        bar.set_message(format!("loss {loss_v:.4}"));
        let at_end = state.step == total;
        if cfg.train.eval_every > 0 && state.step % cfg.train.eval_every == 0 && !at_end {
            for e in eval_splits(model, &params, data, cfg, device) {
                metrics.line(&eval_line(state.step, &e))?;
            }
        }
        let ckpt_due =
            cfg.train.checkpoint_every > 0 && state.step % cfg.train.checkpoint_every == 0;
        if (ckpt_due || state.step == stop) && !at_end {
            let ck = make_checkpoint(model, cfg, identity, data, &params, &slots, &state)?;
            ck.write(&checkpoint_path(dir, state.step))?;
            let secs = t0.elapsed().as_secs_f64();
            timing.line(&serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9)}))?;
        }
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    timing.line(&serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9), "samples_per_s": ((state.step - start_step) as usize * b) as f64 / secs.max(1e-9)}))?;
    if state.step < total {
        return Ok(RunSummary {
            dir: dir.into(),
            step: state.step,
            total_steps: total,
            finished: false,
            evals: vec![],
            final_sha256: None,
        });
    }
    // The end: final evaluation, recorded scores, then final.safetensors last.
    let evals = eval_splits(model, &params, data, cfg, device);
    for e in &evals {
        metrics.line(&eval_line(state.step, e))?;
    }
    let ck = make_checkpoint(model, cfg, identity, data, &params, &slots, &state)?;
    let bytes = ck.to_bytes();
    let final_sha = sha256_hex(&bytes);
    std::fs::create_dir_all(dir.join("eval")).map_err(|e| {
        TrainError::run_dir(
            dir,
            format!("cannot create eval/: {e}"),
            "check permissions",
        )
    })?;
    let mut splits = BTreeMap::new();
    for e in &evals {
        let mut f = TensorFile::default();
        f.tensors.insert(
            "logits".into(),
            TensorEntry::from_f32(vec![e.samples, model.classes], &e.logits),
        );
        f.tensors.insert(
            "labels".into(),
            TensorEntry {
                dtype: lockstep_core::DType::U32,
                shape: vec![e.samples],
                data: e.labels.iter().flat_map(|l| l.to_le_bytes()).collect(),
            },
        );
        f.metadata
            .insert("lockstep.checkpoint_sha256".into(), final_sha.clone());
        f.metadata.insert("lockstep.split".into(), e.split.clone());
        f.write_atomic(&dir.join("eval").join(format!("{}.safetensors", e.split)))?;
        let logits: Vec<u8> = e.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        splits.insert(
            e.split.clone(),
            SplitScore {
                samples: e.samples,
                loss: e.loss,
                accuracy: e.accuracy,
                logits_sha256: sha256_hex(&logits),
            },
        );
    }
    let scores = Scores {
        step: state.step,
        checkpoint_sha256: final_sha.clone(),
        config_hash: identity.config_hash.clone(),
        splits,
    };
    write_atomic(&dir.join("scores.json"), &scores.to_bytes())?;
    write_atomic(&dir.join("final.safetensors"), &bytes)?;
    tracing::info!(step = state.step, sha256 = %final_sha, "finished");
    // After the run is safely finished: a plot that cannot be drawn is a warning, never a
    // failed run (`lockstep plot RUN` draws it again).
    if let Err(e) = crate::tracking::plot(&[dir.to_path_buf()], &dir.join("plot.png")) {
        eprintln!("warning: the run finished but plot.png was not written: {e}");
    }
    Ok(RunSummary {
        dir: dir.into(),
        step: state.step,
        total_steps: total,
        finished: true,
        evals,
        final_sha256: Some(final_sha),
    })
}

fn eval_splits(
    model: &Model,
    params: &[Tensor<1>],
    data: &Dataset,
    cfg: &Config,
    device: &Device,
) -> Vec<EvalResult> {
    let mut out = Vec::new();
    if let Some(v) = &data.validation {
        out.push(evaluate(
            model,
            params,
            v,
            "validation",
            cfg.train.eval_batch_size,
            device,
        ));
    }
    out.push(evaluate(
        model,
        params,
        &data.test,
        "test",
        cfg.train.eval_batch_size,
        device,
    ));
    out
}

fn eval_line(step: u64, e: &EvalResult) -> MetricLine {
    MetricLine::Eval {
        step,
        split: e.split.clone(),
        samples: e.samples,
        loss: e.loss,
        accuracy: e.accuracy,
    }
}
