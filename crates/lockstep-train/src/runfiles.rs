//! The run directory's record files as types, written and read by the same code: one
//! `metrics.jsonl` line (`MetricLine`) and `scores.json` (`Scores`). `manifest.json` is
//! `lockstep_core::manifest::RunManifest` (read by `run::read_manifest`), checkpoints are
//! `checkpoint::Checkpoint`.
//!
//! Invariant: what train writes is the canonical JSON of these types (keys sorted, no wall-clock
//! fields), so identical runs give identical bytes, and every reader (verify, runs, compare,
//! diff, plot, export-mlflow) sees fields by name and type, never by string key.

use crate::TrainError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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
        accuracy: f64,
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
        let v = serde_json::to_value(self).expect("scores serialise");
        let mut s = serde_json::to_string_pretty(&v).expect("a Value serialises");
        s.push('\n');
        s.into_bytes()
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
