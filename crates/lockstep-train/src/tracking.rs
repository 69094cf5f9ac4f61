//! Run tracking, offline and deterministic: a table of runs, a comparison of two runs, a plot
//! of loss and accuracy (PNG or SVG, drawn by `crate::plot`), and an export into MLflow's
//! file-store layout.

use crate::TrainError;
use crate::run::read_manifest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunRow {
    pub name: String,
    pub config_hash: String,
    pub seed: u64,
    pub backend: String,
    pub kernels: String,
    pub step: u64,
    pub test_accuracy: Option<f64>,
    pub checkpoint_sha256: Option<String>,
    pub status: String,
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn scores(run: &Path) -> Option<Value> {
    std::fs::read(run.join("scores.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn run_row(run: &Path) -> Result<RunRow, TrainError> {
    let m = read_manifest(run)?;
    let step = metrics(run)
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0);
    let sc = scores(run);
    let finished = run.join("final.safetensors").exists();
    Ok(RunRow {
        name: run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        config_hash: m.identity.config_hash.clone(),
        seed: m.identity.seed,
        backend: m.placement.backend.clone(),
        kernels: format!("{:?}", m.identity.config.train.kernels).to_lowercase(),
        step,
        test_accuracy: sc
            .as_ref()
            .and_then(|s| s["splits"]["test"]["accuracy"].as_f64()),
        checkpoint_sha256: sc
            .as_ref()
            .and_then(|s| s["checkpoint_sha256"].as_str().map(String::from)),
        status: if finished {
            "finished".into()
        } else {
            format!("stopped at {step}")
        },
    })
}

/// Every run directory directly under `root`, sorted by name.
pub fn list_runs(root: &Path) -> Vec<RunRow> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter().filter_map(|d| run_row(d).ok()).collect()
}

pub fn format_runs(rows: &[RunRow]) -> String {
    let mut s = format!(
        "{:<24} {:<14} {:>6} {:<8} {:<9} {:>7} {:>9} {:<14} {}\n",
        "run", "config", "seed", "backend", "kernels", "steps", "test acc", "checkpoint", "status"
    );
    for r in rows {
        let acc = r
            .test_accuracy
            .map(|a| format!("{a:.4}"))
            .unwrap_or_else(|| "-".into());
        let ck = r
            .checkpoint_sha256
            .as_deref()
            .map(|c| &c[..12])
            .unwrap_or("-");
        s += &format!(
            "{:<24} {:<14} {:>6} {:<8} {:<9} {:>7} {:>9} {:<14} {}\n",
            r.name,
            &r.config_hash[..12],
            r.seed,
            r.backend,
            r.kernels,
            r.step,
            acc,
            ck,
            r.status
        );
    }
    s
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            flatten(
                &if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                },
                v,
                out,
            )
        }),
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Config diff, final-metric diff, and whether the final checkpoints are identical.
pub fn compare(a: &Path, b: &Path) -> Result<String, TrainError> {
    let (ma, mb) = (read_manifest(a)?, read_manifest(b)?);
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(
        "",
        &serde_json::to_value(&ma.identity.config).unwrap_or_default(),
        &mut fa,
    );
    flatten(
        "",
        &serde_json::to_value(&mb.identity.config).unwrap_or_default(),
        &mut fb,
    );
    fa.insert("backend".into(), ma.placement.backend.clone());
    fb.insert("backend".into(), mb.placement.backend.clone());
    let mut s = format!("A = {}\nB = {}\nconfig:\n", a.display(), b.display());
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut same = true;
    for k in keys {
        let (x, y) = (
            fa.get(k).map(String::as_str).unwrap_or("-"),
            fb.get(k).map(String::as_str).unwrap_or("-"),
        );
        if x != y {
            s += &format!("  {k}: {x} -> {y}\n");
            same = false;
        }
    }
    if same {
        s += "  identical\n";
    }
    s += "metrics (final evaluation):\n";
    let (sa, sb) = (scores(a).unwrap_or_default(), scores(b).unwrap_or_default());
    for split in ["test", "validation"] {
        for key in ["accuracy", "loss"] {
            if let (Some(x), Some(y)) = (
                sa["splits"][split][key].as_f64(),
                sb["splits"][split][key].as_f64(),
            ) {
                s += &format!("  {split}.{key}: {x:.6} -> {y:.6} ({:+.6})\n", y - x);
            }
        }
    }
    let (ca, cb) = (
        std::fs::read(a.join("final.safetensors")).ok(),
        std::fs::read(b.join("final.safetensors")).ok(),
    );
    s += &format!(
        "checkpoints: {}\n",
        match (ca, cb) {
            (Some(x), Some(y)) if x == y => "final.safetensors byte-identical".to_string(),
            (Some(_), Some(_)) => "final.safetensors differ (see `lockstep diff A B`)".to_string(),
            _ => "not both finished".to_string(),
        }
    );
    Ok(s)
}

// ---- plot ---------------------------------------------------------------------------------

/// The figure `lockstep plot` draws: title "lockstep: <runs>", a legend naming each run (its
/// directory name; colour i = run i in argument order), and panels against the optimizer step:
/// training loss (every step), test accuracy (each evaluation, 0..1) and — when a run has a
/// validation split — validation loss.
pub fn figure(runs: &[PathBuf]) -> crate::plot::Figure {
    use crate::plot::{Figure, Panel, Series};
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            r.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.display().to_string())
        })
        .collect();
    let all: Vec<Vec<Value>> = runs.iter().map(|r| metrics(r)).collect();
    let series = |kind: &str, split: Option<&str>, key: &str, markers: bool| -> Vec<Series> {
        all.iter()
            .zip(&names)
            .map(|(m, name)| Series {
                label: name.clone(),
                points: m
                    .iter()
                    .filter(|v| v["kind"] == kind && split.is_none_or(|s| v["split"] == s))
                    .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
                    .collect(),
                markers,
            })
            .collect()
    };
    let panel = |y_label: &str, series: Vec<Series>, y_range: Option<(f64, f64)>| Panel {
        y_label: y_label.into(),
        x_label: "step".into(),
        series,
        y_range,
    };
    let mut panels = vec![
        panel(
            "training loss",
            series("train", None, "loss", false),
            None,
        ),
        panel(
            "test accuracy",
            series("eval", Some("test"), "accuracy", true),
            Some((0.0, 1.0)),
        ),
    ];
    let validation = series("eval", Some("validation"), "loss", true);
    if validation.iter().any(|s| !s.points.is_empty()) {
        panels.push(panel("validation loss", validation, None));
    }
    Figure {
        title: format!("lockstep: {}", names.join(", ")),
        legend: names,
        panels,
    }
}

/// Draw `figure(runs)` into `out`: SVG when `out` ends in `.svg`, else PNG. The bytes are a
/// function of the runs' metrics only (`crate::plot`'s determinism rule).
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<(), TrainError> {
    let fig = figure(runs);
    let svg = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let bytes = if svg {
        crate::plot::render_svg(&fig).into_bytes()
    } else {
        crate::plot::render_png(&fig)
    };
    lockstep_core::write_atomic(out, &bytes).map_err(TrainError::from)
}

// ---- MLflow file store ------------------------------------------------------------------

/// Write `run` as an MLflow run in the file-store layout under `mlruns` (experiment 0,
/// "Default"): params (flattened config), metrics (train loss/lr per step, eval metrics per
/// split), tags (git sha, config hash, backend, kernel set), artifacts (manifest, scores, plot).
/// The run id is derived from the run's identity and final checkpoint, so re-exporting is
/// idempotent. Current MLflow needs `MLFLOW_ALLOW_FILE_STORE=true` to read a file store.
pub fn export_mlflow(run: &Path, mlruns: &Path) -> Result<PathBuf, TrainError> {
    let m = read_manifest(run)?;
    let sc = scores(run).unwrap_or_default();
    let run_id = lockstep_core::sha256_hex(
        format!("{}{}", m.identity.config_hash, sc["checkpoint_sha256"]).as_bytes(),
    )[..32]
        .to_string();
    let exp = mlruns.join("0");
    let dir = exp.join(&run_id);
    let io = |p: &Path, e: std::io::Error| {
        TrainError::run_dir(p, format!("cannot write: {e}"), "check the --to directory")
    };
    for d in [
        dir.join("params"),
        dir.join("metrics"),
        dir.join("tags"),
        dir.join("artifacts"),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
    }
    let t0 = std::fs::metadata(run.join("manifest.json"))
        .and_then(|md| md.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let uri = |p: &Path| {
        format!(
            "file://{}",
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
        )
    };
    let exp_meta = exp.join("meta.yaml");
    if !exp_meta.exists() {
        let text = format!(
            "artifact_location: {}\ncreation_time: {t0}\nexperiment_id: '0'\nlast_update_time: {t0}\nlifecycle_stage: active\nname: Default\n",
            uri(&exp)
        );
        std::fs::write(&exp_meta, text).map_err(|e| io(&exp_meta, e))?;
    }
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let status = if run.join("final.safetensors").exists() {
        3
    } else {
        1
    };
    let meta = format!(
        "artifact_uri: {}\nend_time: {t0}\nentry_point_name: ''\nexperiment_id: '0'\nlifecycle_stage: active\nrun_id: {run_id}\nrun_name: {name}\nrun_uuid: {run_id}\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: {t0}\nstatus: {status}\ntags: []\nuser_id: lockstep\n",
        uri(&dir.join("artifacts"))
    );
    std::fs::write(dir.join("meta.yaml"), meta).map_err(|e| io(&dir, e))?;
    let mut params = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(&m.identity.config).unwrap_or_default(),
        &mut params,
    );
    for (k, v) in params {
        std::fs::write(dir.join("params").join(&k), v.trim_matches('"'))
            .map_err(|e| io(&dir, e))?;
    }
    let mut series: BTreeMap<String, String> = BTreeMap::new();
    for v in metrics(run) {
        let step = v["step"].as_u64().unwrap_or(0);
        if v["kind"] == "train" {
            for k in ["loss", "lr"] {
                if let Some(x) = v[k].as_f64() {
                    series
                        .entry(format!("train_{k}"))
                        .or_default()
                        .push_str(&format!("{t0} {x} {step}\n"));
                }
            }
        } else if let Some(split) = v["split"].as_str() {
            for k in ["loss", "accuracy"] {
                if let Some(x) = v[k].as_f64() {
                    series
                        .entry(format!("{split}_{k}"))
                        .or_default()
                        .push_str(&format!("{t0} {x} {step}\n"));
                }
            }
        }
    }
    for (k, text) in series {
        std::fs::write(dir.join("metrics").join(k), text).map_err(|e| io(&dir, e))?;
    }
    let tags = [
        ("mlflow.runName", name.clone()),
        (
            "mlflow.source.git.commit",
            m.placement.git_sha.clone().unwrap_or_default(),
        ),
        ("lockstep.config_hash", m.identity.config_hash.clone()),
        ("lockstep.backend", m.placement.backend.clone()),
        (
            "lockstep.kernels",
            format!("{:?}", m.identity.config.train.kernels).to_lowercase(),
        ),
        (
            "lockstep.checkpoint_sha256",
            sc["checkpoint_sha256"].as_str().unwrap_or("").to_string(),
        ),
    ];
    for (k, v) in tags {
        std::fs::write(dir.join("tags").join(k), v).map_err(|e| io(&dir, e))?;
    }
    for f in ["manifest.json", "scores.json", "plot.png", "config.toml"] {
        if run.join(f).exists() {
            std::fs::copy(run.join(f), dir.join("artifacts").join(f)).map_err(|e| io(&dir, e))?;
        }
    }
    Ok(dir)
}
