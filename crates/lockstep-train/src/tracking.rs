//! Run tracking, offline and deterministic: a table of runs, a comparison of two runs, a plot
//! of loss and accuracy (PNG or SVG, drawn by `crate::plot`), and an export into MLflow's
//! file-store layout.

use crate::TrainError;
use crate::run::read_manifest;
use crate::runfiles::{MetricLine, Scores, read_metrics};
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

fn scores(run: &Path) -> Option<Scores> {
    Scores::read(run).ok()
}

pub fn run_row(run: &Path) -> Result<RunRow, TrainError> {
    let m = read_manifest(run)?;
    let step = read_metrics(run)
        .iter()
        .map(MetricLine::step)
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
            .and_then(|s| s.splits.get("test"))
            .map(|t| t.accuracy),
        checkpoint_sha256: sc.as_ref().map(|s| s.checkpoint_sha256.clone()),
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
    let (sa, sb) = (scores(a), scores(b));
    for split in ["test", "validation"] {
        let get = |sc: &Option<Scores>| sc.as_ref().and_then(|s| s.splits.get(split).cloned());
        if let (Some(x), Some(y)) = (get(&sa), get(&sb)) {
            for (key, x, y) in [
                ("accuracy", x.accuracy, y.accuracy),
                ("loss", x.loss, y.loss),
            ] {
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

/// The figure `lockstep plot` draws: title "lockstep: <runs>", a legend naming each run (colour
/// i = run i in argument order), and panels against the optimizer step: training loss (every
/// step), test accuracy (each evaluation, 0..1) and — when a run has a validation split —
/// validation loss. A run is named by its config's `name` when those are distinct, else by its
/// directory name (else its path): never by anything that differs between identical runs of one
/// config, so `RUN/plot.png` is byte-identical between them.
pub fn figure(runs: &[PathBuf]) -> crate::plot::Figure {
    use crate::plot::{Figure, Panel, Series};
    let distinct =
        |v: &[String]| v.iter().collect::<std::collections::BTreeSet<_>>().len() == v.len();
    let config_names: Vec<String> = runs
        .iter()
        .map(|r| read_manifest(r).map_or_else(|_| String::new(), |m| m.identity.config.name))
        .collect();
    let dir_names: Vec<String> = runs
        .iter()
        .map(|r| {
            r.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let names = if distinct(&config_names) && config_names.iter().all(|n| !n.is_empty()) {
        config_names
    } else if distinct(&dir_names) {
        dir_names
    } else {
        runs.iter().map(|r| r.display().to_string()).collect()
    };
    let all: Vec<Vec<MetricLine>> = runs.iter().map(|r| read_metrics(r)).collect();
    // One series per run of the points `pick` takes from its metric lines.
    let series = |pick: &dyn Fn(&MetricLine) -> Option<f64>, markers: bool| -> Vec<Series> {
        all.iter()
            .zip(&names)
            .map(|(m, name)| Series {
                label: name.clone(),
                points: m
                    .iter()
                    .filter_map(|l| Some((l.step() as f64, pick(l)?)))
                    .collect(),
                markers,
            })
            .collect()
    };
    let train_loss = |l: &MetricLine| match l {
        MetricLine::Train { loss, .. } => Some(*loss),
        _ => None,
    };
    let eval = |want: &'static str, acc: bool| {
        move |l: &MetricLine| match l {
            MetricLine::Eval {
                split,
                loss,
                accuracy,
                ..
            } if split == want => Some(if acc { *accuracy } else { *loss }),
            _ => None,
        }
    };
    let panel = |y_label: &str, series: Vec<Series>, y_range: Option<(f64, f64)>| Panel {
        y_label: y_label.into(),
        x_label: "step".into(),
        series,
        y_range,
    };
    let mut panels = vec![
        panel("training loss", series(&train_loss, false), None),
        panel(
            "test accuracy",
            series(&eval("test", true), true),
            Some((0.0, 1.0)),
        ),
    ];
    let validation = series(&eval("validation", false), true);
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
    let ck_sha = scores(run).map(|s| s.checkpoint_sha256);
    // The id's input keeps the form of the first exporter (a JSON string, or `null` for an
    // unfinished run), so runs exported before keep their ids.
    let ck_json = ck_sha
        .as_ref()
        .map_or("null".to_string(), |c| format!("{c:?}"));
    let run_id =
        lockstep_core::sha256_hex(format!("{}{ck_json}", m.identity.config_hash).as_bytes())[..32]
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
    for line in read_metrics(run) {
        let step = line.step();
        let points = match &line {
            MetricLine::Train { loss, lr, .. } => {
                vec![("train_loss".to_string(), *loss), ("train_lr".into(), *lr)]
            }
            MetricLine::Eval {
                split,
                loss,
                accuracy,
                ..
            } => vec![
                (format!("{split}_loss"), *loss),
                (format!("{split}_accuracy"), *accuracy),
            ],
        };
        for (k, x) in points {
            series
                .entry(k)
                .or_default()
                .push_str(&format!("{t0} {x} {step}\n"));
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
            ck_sha.clone().unwrap_or_default(),
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
