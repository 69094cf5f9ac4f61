//! `lockstep verify`: recompute the scores recorded at the end of training from the final
//! checkpoint — on the same or another backend, with any batch size — and compare.
//!
//! Bitwise is required when the kernel set is `lockstep` (any backend, any batch size: every
//! kernel's order is fixed per output, independent of the batch) or when the backend and batch
//! size are the ones of the recorded run. Otherwise the declared `inference_logits` tolerance
//! applies (printed in the report). Refuses when the checkpoint's hash, the data's content or the
//! model shape differ from what the run recorded, and (stock kernels) when the device's
//! arithmetic profile differs from the recorded one.

use crate::TrainError;
use crate::backend;
use crate::checkpoint::Checkpoint;
use crate::data::{Normalizer, load_dataset, load_eval};
use crate::model::{Model, upload};
use crate::run::{evaluate, read_manifest};
use crate::runfiles::Scores;
use lockstep_core::config::{BackendKind, KernelSet};
use lockstep_core::sha256_hex;
use lockstep_core::tensorfile::TensorFile;
use lockstep_core::tolerance::{Tolerance, compare, tolerance_for, ulp_distance};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub backend: Option<BackendKind>,
    pub batch_size: Option<usize>,
    /// Replacement data directory (IDX) or CSV file for the recorded dataset.
    pub data: Option<PathBuf>,
    pub allow_data_change: bool,
    /// Verify this checkpoint instead of RUN/final.safetensors (e.g. an exported f16 one).
    pub checkpoint: Option<PathBuf>,
    /// The network of a `model.kind = "custom"` run (the program's own `nn::Network`).
    pub model: Option<Model>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub samples: usize,
    pub max_abs: f64,
    pub max_ulp: u64,
    pub mismatched_samples: usize,
    /// (sample, class, expected, got, ULP) of the first mismatches.
    pub first: Vec<(usize, usize, f32, f32, u64)>,
    pub recorded_accuracy: f64,
    pub accuracy: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub run: PathBuf,
    pub backend: String,
    pub batch_size: usize,
    pub requirement: String,
    pub passed: bool,
    pub splits: Vec<SplitReport>,
}

fn refuse(path: &Path, what: String, fix: &str) -> TrainError {
    TrainError::run_dir(path, what, fix)
}

/// Point a missing-data error at `--data`.
fn data_hint(e: TrainError) -> TrainError {
    match e {
        TrainError::Data { path, what, fix } => TrainError::Data {
            path,
            what,
            fix: format!("{fix}; or pass --data DIR (a CSV job: --data FILE) with a copy of it"),
        },
        e => e,
    }
}

pub fn verify(run: &Path, opts: &VerifyOptions) -> Result<VerifyReport, TrainError> {
    let manifest = read_manifest(run)?;
    let mut cfg = manifest.identity.config.clone();
    let scores = Scores::read(run)?;
    let ck_path = opts
        .checkpoint
        .clone()
        .unwrap_or_else(|| run.join("final.safetensors"));
    let ck_bytes = std::fs::read(&ck_path).map_err(|e| {
        TrainError::checkpoint(
            &ck_path,
            format!("cannot read: {e}"),
            "verify a finished run",
        )
    })?;
    let reduced = opts.checkpoint.is_some();
    if !reduced && sha256_hex(&ck_bytes) != scores.checkpoint_sha256 {
        return Err(TrainError::checkpoint(
            &ck_path,
            format!(
                "SHA-256 {} differs from the recorded {} — this is not the checkpoint the scores were recorded with",
                sha256_hex(&ck_bytes),
                scores.checkpoint_sha256
            ),
            "restore the run's final.safetensors",
        ));
    }
    let ck = if reduced {
        crate::export::read_inference(&ck_path, &ck_bytes)?
    } else {
        Checkpoint::from_bytes(&ck_bytes, &ck_path)?
    };
    if let Some(d) = &opts.data {
        match cfg.data.dataset {
            lockstep_core::config::DatasetKind::Csv => {
                cfg.data.train_path = Some(d.to_string_lossy().into_owned())
            }
            lockstep_core::config::DatasetKind::Text => {
                if let Some(t) = cfg.data.text.as_mut() {
                    t.path = d.to_string_lossy().into_owned();
                }
            }
            _ => cfg.data.dir = Some(d.to_string_lossy().into_owned()),
        }
    }
    let names: Vec<String> = scores.splits.keys().cloned().collect();
    // Only the data being re-scored is read, normalised with the checkpoint's statistics; a
    // format-v1 checkpoint has none, so its normalisation is refitted on the training data.
    let (test, validation, hashes) = match &ck.inference {
        Some(inf) => {
            let norm = Normalizer::from_inference(inf);
            let want_validation = names.iter().any(|n| n == "validation");
            let e = load_eval(&cfg.data, cfg.seed, &norm, want_validation).map_err(data_hint)?;
            (e.test, e.validation, e.hashes)
        }
        None => {
            let d = load_dataset(&cfg.data, cfg.seed).map_err(data_hint)?;
            (d.test, d.validation, d.hashes)
        }
    };
    let data_changed = hashes
        .iter()
        .any(|(name, h)| manifest.identity.datasets.get(name) != Some(h));
    if data_changed && !opts.allow_data_change {
        return Err(refuse(
            run,
            format!(
                "the data differs from the recorded run (recorded {:?}, now {:?})",
                manifest.identity.datasets, hashes
            ),
            "verify against the recorded data, or pass --allow-data-change to score new data against the tolerance only",
        ));
    }
    let backend_kind = opts
        .backend
        .unwrap_or(BackendKind::parse(&manifest.placement.backend).unwrap_or(BackendKind::Ndarray));
    let be = backend::open(backend_kind, 0, None)?;
    be.require_arith(cfg.train.arith)?;
    let kernels = cfg.train.kernels;
    let profile_now: Vec<_> = be
        .facts
        .iter()
        .filter(|(k, _)| k.starts_with("arith."))
        .collect();
    let profile_then: Vec<_> = manifest
        .placement
        .device
        .iter()
        .filter(|(k, _)| k.starts_with("arith."))
        .collect();
    if kernels == KernelSet::Burn
        && profile_now != profile_then
        && backend_kind.as_str() == manifest.placement.backend
    {
        return Err(refuse(
            run,
            format!(
                "this device's arithmetic profile {profile_now:?} differs from the recorded {profile_then:?} and the kernel set is stock: scores cannot be reproduced"
            ),
            "verify on a device with the recorded profile, or train with kernels = \"lockstep\"",
        ));
    }
    let batch = opts.batch_size.unwrap_or(cfg.train.eval_batch_size);
    let model = crate::run::job_model(
        &cfg,
        opts.model.as_ref(),
        cfg.data.image_shape,
        // A language model's vocabulary size comes from its text (recorded in the checkpoint).
        ck.inference
            .as_ref()
            .filter(|_| cfg.data.text.is_some())
            .map_or(cfg.data.classes, |i| i.spec.classes),
        &be.device,
        run,
    )?;
    let mut params = Vec::new();
    for s in &model.specs {
        params.push(upload(
            ck.tensor(&format!("model.{}", s.name), &s.shape, &ck_path)?,
            &be.device,
        ));
    }
    let same_place =
        backend_kind.as_str() == manifest.placement.backend && batch == cfg.train.eval_batch_size;
    let (tol, requirement) = if reduced {
        let t = tolerance_for("inference_logits_reduced_precision", "any")
            .unwrap_or(Tolerance::Bitwise);
        (t, format!("reduced-precision checkpoint: {t}"))
    } else if kernels == KernelSet::Lockstep || same_place {
        (
            Tolerance::Bitwise,
            format!(
                "bitwise ({})",
                if kernels == KernelSet::Lockstep {
                    "lockstep kernels: any backend, any batch size"
                } else {
                    "same backend and batch size"
                }
            ),
        )
    } else {
        let t = tolerance_for("inference_logits", "burn").unwrap_or(Tolerance::Bitwise);
        (t, format!("declared cross-backend/batch tolerance: {t}"))
    };
    let tol = if data_changed {
        tolerance_for("inference_logits", "burn").unwrap_or(tol)
    } else {
        tol
    };
    let mut splits = Vec::new();
    for name in names {
        let split = match name.as_str() {
            "test" => &test,
            "validation" => match &validation {
                Some(v) => v,
                None => continue,
            },
            _ => continue,
        };
        let rec_path = run.join("eval").join(format!("{name}.safetensors"));
        let rec = TensorFile::read(&rec_path)?;
        rec.verify_checksum(&rec_path)?;
        let want = rec
            .tensors
            .get("logits")
            .and_then(|t| t.to_f32())
            .ok_or_else(|| {
                TrainError::checkpoint(
                    &rec_path,
                    "has no F32 logits tensor",
                    "restore the run's eval/ directory",
                )
            })?;
        let got = evaluate(&model, &params, split, &name, batch, &be.device);
        let c = if want.len() == got.logits.len() {
            compare(&want, &got.logits, tol)
        } else {
            compare(&want, &[], tol)
        };
        let classes = model.classes;
        let mut bad_samples = std::collections::BTreeSet::new();
        let mut first = Vec::new();
        if want.len() == got.logits.len() {
            for (i, (&w, &g)) in want.iter().zip(&got.logits).enumerate() {
                if !compare(&[w], &[g], tol).passed() {
                    bad_samples.insert(i / classes);
                    if first.len() < 5 {
                        first.push((i / classes, i % classes, w, g, ulp_distance(w, g)));
                    }
                }
            }
        }
        splits.push(SplitReport {
            split: name.clone(),
            samples: split.len(),
            max_abs: c.max_abs,
            max_ulp: c.max_ulp,
            mismatched_samples: if want.len() == got.logits.len() {
                bad_samples.len()
            } else {
                split.len()
            },
            first,
            recorded_accuracy: scores.splits[&name].accuracy,
            accuracy: got.accuracy,
        });
    }
    let passed = !splits.is_empty() && splits.iter().all(|s| s.mismatched_samples == 0);
    Ok(VerifyReport {
        run: run.to_path_buf(),
        backend: backend_kind.as_str().into(),
        batch_size: batch,
        requirement,
        passed,
        splits,
    })
}

pub fn format_report(r: &VerifyReport) -> String {
    let mut s = format!(
        "verify {} on {} (batch {}): requirement {}\n",
        r.run.display(),
        r.backend,
        r.batch_size,
        r.requirement
    );
    for sp in &r.splits {
        s += &format!(
            "  {:<10} {} samples: {} mismatched, max |Δ| {:.3e}, max ULP {}; accuracy {:.4} (recorded {:.4})\n",
            sp.split,
            sp.samples,
            sp.mismatched_samples,
            sp.max_abs,
            sp.max_ulp,
            sp.accuracy,
            sp.recorded_accuracy
        );
        for (i, c, w, g, u) in &sp.first {
            s += &format!("    sample {i} class {c}: expected {w:e} got {g:e} ({u} ULP)\n");
        }
    }
    s += if r.passed { "PASS\n" } else { "FAIL\n" };
    s
}
