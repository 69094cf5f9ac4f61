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
use crate::model::{Model, upload};
pub use crate::runfiles::read_manifest;
use crate::runfiles::{
    MetricLine, Metrics, Scores, SplitScore, is_unstarted, lock_run, pretty_json,
    remove_stale_temps, truncate_metrics,
};

mod eval;
mod state;
mod train_loop;
use crate::workers::Workers;
use crate::{TrainError, optim};
use burn::tensor::{Device, Tensor, TensorData};
pub use eval::{EvalResult, evaluate};
use eval::{eval_line, eval_splits};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lockstep_core::config::{BackendKind, Config, KernelSet, ModelKind, learning_rate};
use lockstep_core::manifest::{Placement, RunIdentity, RunManifest};
use lockstep_core::tensorfile::{TensorEntry, TensorFile};
use lockstep_core::{SeedStream, sha256_hex, write_atomic};
use serde::Serialize;
use state::Start;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use train_loop::run_loop;

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
    /// The job's worker processes (`crate::workers`); one by default. Rank 0 writes the run
    /// directory, every worker computes its shards.
    pub workers: Workers,
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
    let mut model = match (cfg.model.kind, custom) {
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
    // The profile is the config's (a Rust-built network takes it from the job it runs in).
    model.arith = cfg.train.arith;
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
    let rows = model.rows_per_sample;
    if dims != [rows, classes] {
        return Err(bad(
            format!(
                "the network's forward returns logits of shape {dims:?} for one input, the task needs [{rows}, {classes}]"
            ),
            "make the last layer output one logit per class",
        ));
    }
    Ok(model)
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
    lockstep_kernels::heap::keep_freed_memory();
    let workers = &opts.workers;
    // Every worker checks before rank 0 creates anything (`together` is collective), so no
    // worker mistakes rank 0's new directory for an earlier run.
    let ready = (|| {
        crate::workers::check_placement(cfg.train.shards, workers.size())?;
        if out.exists() && !is_unstarted(out) {
            return Err(TrainError::run_dir(
                out,
                "already exists (an earlier run or another file); nothing was changed",
                "continue it with `lockstep resume DIR`, or pass a new --out",
            ));
        }
        let data = load_dataset(&cfg.data, cfg.seed)?;
        Ok(data)
    })();
    let data = workers.together(ready)?;
    if workers.size() == 1
        && let Some(found) = find_identical(cfg, &data, opts, out)
    {
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
    let ready = (|| {
        let backend = backend::open(opts.backend, opts.threads, opts.device.as_deref())?;
        backend.require_arith(cfg.train.arith)?;
        let model = job_model(
            cfg,
            opts.model.as_ref(),
            data.image_shape,
            data.classes,
            &backend.device,
            out,
        )?;
        Ok((backend, model))
    })();
    let (backend, model) = workers.together(ready)?;
    if workers.writes() {
        backend.warn_if_not_bitwise(cfg.train.kernels);
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
            workers: workers.size(),
        },
    };
    let lock = if workers.writes() {
        Some(start_run_dir(out, config_text, &manifest))
    } else {
        None
    };
    let lock = workers.together(lock.transpose())?;
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

/// Create the run directory `out` for `manifest` and hold its lock (rank 0 only).
fn start_run_dir(
    out: &Path,
    config_text: &str,
    manifest: &RunManifest,
) -> Result<std::fs::File, TrainError> {
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
    // manifest.json is written last: it marks the run as started. A start killed before it
    // leaves only files `is_unstarted` recognises, and the next `train` starts over.
    remove_stale_temps(out);
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    write_atomic(&out.join("metrics.jsonl"), b"")?;
    write_atomic(&out.join("manifest.json"), pretty_json(manifest).as_bytes())?;
    Ok(lock)
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

/// Continue the run in `dir` from its newest checkpoint (or from the start if it has none).
pub fn resume(dir: &Path, opts_in: &RunOptions) -> Result<RunSummary, TrainError> {
    lockstep_kernels::heap::keep_freed_memory();
    let workers = &opts_in.workers;
    let ready = (|| {
        let manifest = read_manifest(dir)?;
        if dir.join("final.safetensors").exists() {
            return Err(TrainError::run_dir(
                dir,
                "this run already finished (final.safetensors exists); nothing was changed",
                "start a new run with `lockstep train CONFIG --out NEW_DIR`",
            ));
        }
        crate::workers::check_placement(manifest.identity.config.train.shards, workers.size())?;
        Ok(manifest)
    })();
    let manifest = workers.together(ready)?;
    let mut cfg = manifest.identity.config.clone();
    let backend_kind =
        BackendKind::parse(&manifest.placement.backend).unwrap_or(BackendKind::Ndarray);
    cfg.train.backend = backend_kind;
    let opts = RunOptions {
        backend: backend_kind,
        ..opts_in.clone()
    };
    // Rank 0 holds the lock and tidies; the other workers only read.
    let lock = if workers.writes() {
        Some(lock_run(dir).inspect(|_| remove_stale_temps(dir)))
    } else {
        None
    };
    let lock = workers.together(lock.transpose())?;
    let ready = (|| {
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
        backend.require_arith(cfg.train.arith)?;
        // Only the facts that decide this kernel set's bits: a lockstep-kernel run may continue
        // on a device that fuses plain code, flushes subnormals or rounds sqrt its own way.
        let lockstep = cfg.train.kernels == KernelSet::Lockstep;
        let fused = cfg.train.arith.fused();
        let deciding = |k: &String| lockstep_kernels::profile::deciding_fact(k, lockstep, fused);
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
                ck.restore(&model, &cfg, &path, &backend.device)?
            }
        };
        if workers.writes() {
            truncate_metrics(&dir.join("metrics.jsonl"), start.state.step)?;
        }
        Ok((data, backend, model, start))
    })();
    let (data, backend, model, start) = workers.together(ready)?;
    // Every worker starts from the same step (a worker that read an older checkpoint than rank
    // 0 — a file system that had not yet shown it the newest — would diverge).
    workers.agree(
        "the step to resume from",
        &start.state.step.to_string(),
        "make the run directory's newest checkpoint visible to every worker (a shared file system), then resume again",
    )?;
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
