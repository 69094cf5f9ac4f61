//! The run directory: its record files as types, written and read by the same code — one
//! `metrics.jsonl` line (`MetricLine`), `scores.json` (`Scores`), `manifest.json`
//! (`lockstep_core::manifest::RunManifest`, [`read_manifest`]); checkpoints are
//! `checkpoint::Checkpoint` — and its rules: the lock held while a process trains in it
//! ([`lock_run`]), what counts as an unstarted directory a new `train` may take over
//! ([`is_unstarted`]), and how a resumed run drops metrics past its checkpoint
//! ([`truncate_metrics`]).
//!
//! Invariant: what train writes is the canonical JSON of these types (keys sorted, no wall-clock
//! fields), so identical runs give identical bytes, and every reader (verify, runs, compare,
//! diff, plot, export-mlflow) sees fields by name and type, never by string key.

use crate::TrainError;
use lockstep_core::manifest::RunManifest;
use lockstep_core::{canonical_json, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`. Losses, accuracies and learning rates are f64 (the f32 values
/// training computes, widened exactly; evaluation aggregates are computed in f64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricLine {
    /// After optimizer step `step`: the batch's mean loss and the learning rate used.
    Train {
        step: u64,
        epoch: u64,
        loss: f64,
        lr: f64,
    },
    /// An evaluation of split `split` after step `step`.
    Eval {
        step: u64,
        split: String,
        samples: usize,
        loss: f64,
        /// Classification: accuracy; language model: next-token accuracy.
        accuracy: f64,
        /// Language models: `exp(loss)`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        perplexity: Option<f64>,
    },
}

impl MetricLine {
    pub fn step(&self) -> u64 {
        match self {
            MetricLine::Train { step, .. } | MetricLine::Eval { step, .. } => *step,
        }
    }

    pub fn loss(&self) -> f64 {
        match self {
            MetricLine::Train { loss, .. } | MetricLine::Eval { loss, .. } => *loss,
        }
    }

    /// The line as written: canonical JSON, no newline.
    pub fn to_line(&self) -> String {
        lockstep_core::canonical_json(self)
    }
}

/// `RUN/metrics.jsonl` as far as it parses: a line that does not (the torn last line of a
/// killed run) ends the read.
pub fn read_metrics(run: &Path) -> Vec<MetricLine> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map_while(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The recorded score of one split in `scores.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitScore {
    pub samples: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// SHA-256 of the split's logits (f32 little-endian, `[samples, classes]` row-major).
    pub logits_sha256: String,
}

/// `RUN/scores.json`: what `verify` reproduces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub step: u64,
    /// SHA-256 of `final.safetensors`.
    pub checkpoint_sha256: String,
    pub config_hash: String,
    /// Split name (`test`, `validation`) → its score.
    pub splits: BTreeMap<String, SplitScore>,
}

impl Scores {
    /// Pretty, key-sorted JSON with a trailing newline (the bytes written).
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty_json(self).into_bytes()
    }

    /// `RUN/scores.json`, or an error naming it (the run did not finish?).
    pub fn read(run: &Path) -> Result<Self, TrainError> {
        let p = run.join("scores.json");
        let bytes = std::fs::read(&p).map_err(|e| {
            TrainError::run_dir(
                run,
                format!("has no readable scores.json ({e}); the run did not finish?"),
                "use a finished run (final.safetensors and scores.json present)",
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            TrainError::run_dir(
                &p,
                format!("is not a lockstep scores file: {e}"),
                "restore the run's scores.json",
            )
        })
    }
}

/// An empty directory, or one left by a start that died before writing its manifest: `.lock`,
/// an empty `checkpoints/`, and (only beside our `.lock`) `config.toml`, an empty
/// `metrics.jsonl` and interrupted temp files. Safe to (re)start in; anything else is refused.
pub(crate) fn is_unstarted(dir: &Path) -> bool {
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
pub(crate) fn remove_stale_temps(dir: &Path) {
    for d in [dir.to_path_buf(), dir.join("checkpoints"), dir.join("eval")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
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

pub(crate) fn pretty_json<T: Serialize>(v: &T) -> String {
    let value: serde_json::Value =
        serde_json::from_str(&canonical_json(v)).expect("canonical JSON parses");
    serde_json::to_string_pretty(&value).expect("serialising a Value cannot fail") + "\n"
}

/// Hold an exclusive lock on `RUN/.lock` for as long as the returned file lives.
pub(crate) fn lock_run(dir: &Path) -> Result<File, TrainError> {
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
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
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

pub(crate) struct Metrics {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

impl Metrics {
    pub(crate) fn open(path: &Path) -> Result<Self, TrainError> {
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
    pub(crate) fn line<T: Serialize>(&mut self, v: &T) -> Result<(), TrainError> {
        writeln!(self.file, "{}", canonical_json(v)).map_err(|e| {
            TrainError::run_dir(&self.path, format!("cannot write: {e}"), "check free space")
        })
    }
}
