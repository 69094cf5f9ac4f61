//! `lockstep diff A B`: where two runs part ways — the first metrics line that differs, the
//! first checkpoint step whose tensors differ and the first differing tensor, and whether the
//! whole trajectory stays inside the declared `training_trajectory` tolerance.

use crate::TrainError;
use crate::checkpoint::Checkpoint;
use crate::run::read_manifest;
use crate::runfiles::MetricLine;
use lockstep_core::config::KernelSet;
use lockstep_core::tolerance::{Tolerance, compare, tolerance_for};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct TensorDiff {
    pub name: String,
    pub identical: bool,
    pub max_abs: f64,
    pub max_ulp: u64,
    pub first_index: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunDiff {
    pub identical: bool,
    pub tolerance: Tolerance,
    pub within_tolerance: bool,
    /// (line number, A's line, B's line) of the first differing metrics line.
    pub first_metrics_diff: Option<(usize, String, String)>,
    pub max_train_loss_delta: f64,
    /// (step, tensor) of the first checkpoint (common to both runs) whose tensors differ.
    pub first_checkpoint_diff: Option<(u64, String)>,
    /// Per-tensor comparison of the final checkpoints.
    pub final_tensors: Vec<TensorDiff>,
}

fn checkpoints(run: &Path) -> BTreeMap<u64, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    if let Ok(d) = std::fs::read_dir(run.join("checkpoints")) {
        for e in d.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(s) = n
                .strip_prefix("step-")
                .and_then(|s| s.strip_suffix(".safetensors"))
                .and_then(|s| s.parse().ok())
            {
                out.insert(s, e.path());
            }
        }
    }
    out
}

fn tensor_diffs(a: &Checkpoint, b: &Checkpoint, tol: Tolerance) -> (Vec<TensorDiff>, bool) {
    let mut out = Vec::new();
    let mut within = true;
    for (name, ta) in &a.tensors {
        let Some(tb) = b.tensors.get(name) else {
            out.push(TensorDiff {
                name: name.clone(),
                identical: false,
                max_abs: f64::INFINITY,
                max_ulp: u64::MAX,
                first_index: None,
            });
            within = false;
            continue;
        };
        let (va, vb) = (
            ta.to_f32().unwrap_or_default(),
            tb.to_f32().unwrap_or_default(),
        );
        let c = compare(&va, &vb, Tolerance::Bitwise);
        within &= compare(&va, &vb, tol).passed() && ta.shape == tb.shape;
        out.push(TensorDiff {
            name: name.clone(),
            identical: c.passed() && ta.shape == tb.shape,
            max_abs: c.max_abs,
            max_ulp: c.max_ulp,
            first_index: c.first.first().map(|f| f.0),
        });
    }
    (out, within)
}

pub fn diff_runs(a: &Path, b: &Path) -> Result<RunDiff, TrainError> {
    let ma = read_manifest(a)?;
    let kernels = match ma.identity.config.train.kernels {
        KernelSet::Burn => "burn",
        KernelSet::Lockstep => "lockstep",
    };
    let tol = tolerance_for("training_trajectory", kernels).unwrap_or(Tolerance::Bitwise);
    let read = |p: &Path| {
        std::fs::read_to_string(p.join("metrics.jsonl")).map_err(|e| {
            TrainError::run_dir(
                p,
                format!("cannot read metrics.jsonl: {e}"),
                "pass two run directories",
            )
        })
    };
    let (la, lb) = (read(a)?, read(b)?);
    let (la, lb): (Vec<&str>, Vec<&str>) = (la.lines().collect(), lb.lines().collect());
    let mut first_metrics_diff = None;
    let mut max_loss = 0f64;
    let mut within = la.len() == lb.len();
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        if x != y && first_metrics_diff.is_none() {
            first_metrics_diff = Some((i + 1, x.to_string(), y.to_string()));
        }
        let parse = |l: &str| serde_json::from_str::<MetricLine>(l).ok().map(|m| m.loss());
        if let (Some(p), Some(q)) = (parse(x), parse(y)) {
            let d = (p - q).abs();
            max_loss = max_loss.max(d);
            if let Tolerance::AbsRel { abs, rel } = tol {
                within &= d <= abs + rel * p.abs();
            } else {
                within &= p.to_bits() == q.to_bits();
            }
        }
    }
    if la.len() != lb.len() && first_metrics_diff.is_none() {
        first_metrics_diff = Some((
            la.len().min(lb.len()) + 1,
            la.get(lb.len()).unwrap_or(&"").to_string(),
            lb.get(la.len()).unwrap_or(&"").to_string(),
        ));
    }
    let (ca, cb) = (checkpoints(a), checkpoints(b));
    let mut first_checkpoint_diff = None;
    for (step, pa) in &ca {
        if let Some(pb) = cb.get(step) {
            let (x, y) = (Checkpoint::read(pa)?, Checkpoint::read(pb)?);
            if let Some(t) = tensor_diffs(&x, &y, tol)
                .0
                .into_iter()
                .find(|t| !t.identical)
            {
                first_checkpoint_diff = Some((*step, t.name));
                break;
            }
        }
    }
    let (fa, fb) = (a.join("final.safetensors"), b.join("final.safetensors"));
    let (final_tensors, final_within) = if fa.exists() && fb.exists() {
        tensor_diffs(&Checkpoint::read(&fa)?, &Checkpoint::read(&fb)?, tol)
    } else {
        (vec![], fa.exists() == fb.exists())
    };
    let identical = first_metrics_diff.is_none()
        && first_checkpoint_diff.is_none()
        && final_tensors.iter().all(|t| t.identical);
    Ok(RunDiff {
        identical,
        tolerance: tol,
        within_tolerance: identical || (within && final_within),
        first_metrics_diff,
        max_train_loss_delta: max_loss,
        first_checkpoint_diff,
        final_tensors,
    })
}

pub fn format_diff(d: &RunDiff) -> String {
    let mut s = String::new();
    if d.identical {
        return "identical: every metrics line, checkpoint and final tensor is the same bit for bit\n".into();
    }
    if let Some((line, x, y)) = &d.first_metrics_diff {
        s += &format!("first differing metrics line: {line}\n  A: {x}\n  B: {y}\n");
    }
    s += &format!("max |Δ| of logged losses: {:e}\n", d.max_train_loss_delta);
    if let Some((step, t)) = &d.first_checkpoint_diff {
        s += &format!("first differing checkpoint: step {step}, first differing tensor {t}\n");
    }
    for t in d.final_tensors.iter().filter(|t| !t.identical) {
        s += &format!(
            "final {:<24} max |Δ| {:.3e}  max ULP {}  first index {:?}\n",
            t.name, t.max_abs, t.max_ulp, t.first_index
        );
    }
    s += &format!(
        "declared trajectory tolerance ({}): {}\n",
        d.tolerance,
        if d.within_tolerance {
            "within"
        } else {
            "EXCEEDED"
        }
    );
    s
}
