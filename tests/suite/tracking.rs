//! Run tracking: the runs table, run comparison, deterministic PNG plots, MLflow export and
//! identical-run reuse.

use crate::harness::{lockstep, repo, short_digits, write_config};

#[test]
fn runs_table_compare_plot_and_mlflow_export() {
    let dir = tempfile::tempdir().expect("tmp");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let cfg = write_config(dir.path(), "a.toml", &short_digits(""));
    let cfg_b = write_config(
        dir.path(),
        "b.toml",
        &short_digits("").replace("seed = 42", "seed = 43"),
    );
    let (a, a2, b) = (runs.join("a"), runs.join("a2"), runs.join("b"));
    lockstep(
        &["train", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()],
        true,
    );
    crate::harness::train(&cfg, &a2, &[]);
    lockstep(
        &[
            "train",
            cfg_b.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--max-steps",
            "30",
        ],
        true,
    );

    let table =
        String::from_utf8(lockstep(&["runs", runs.to_str().unwrap()], true).stdout).unwrap();
    assert!(
        table.contains("finished") && table.contains("stopped at 30") && table.lines().count() == 4,
        "{table}"
    );

    let cmp = String::from_utf8(
        lockstep(
            &[
                "runs",
                "--compare",
                a.to_str().unwrap(),
                a2.to_str().unwrap(),
            ],
            true,
        )
        .stdout,
    )
    .unwrap();
    assert!(
        cmp.contains("config:\n  identical") && cmp.contains("byte-identical"),
        "{cmp}"
    );
    let cmp = String::from_utf8(
        lockstep(
            &[
                "runs",
                "--compare",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
            ],
            true,
        )
        .stdout,
    )
    .unwrap();
    assert!(cmp.contains("seed: 42 -> 43"), "{cmp}");

    // The plot written at the end of training is a PNG, byte-identical between identical runs.
    let (pa, pb) = (
        std::fs::read(a.join("plot.png")).unwrap(),
        std::fs::read(a2.join("plot.png")).unwrap(),
    );
    assert!(pa.starts_with(b"\x89PNG\r\n\x1a\n") && pa == pb);
    let multi = dir.path().join("both.png");
    lockstep(
        &[
            "plot",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--out",
            multi.to_str().unwrap(),
        ],
        true,
    );
    assert!(std::fs::read(&multi).unwrap().starts_with(b"\x89PNG"));

    let mlruns = dir.path().join("mlruns");
    lockstep(
        &[
            "export-mlflow",
            a.to_str().unwrap(),
            "--to",
            mlruns.to_str().unwrap(),
        ],
        true,
    );
    let exp = mlruns.join("0");
    let run_dir = std::fs::read_dir(&exp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("run dir");
    for f in [
        "meta.yaml",
        "params/seed",
        "metrics/train_loss",
        "metrics/test_accuracy",
        "tags/lockstep.config_hash",
        "artifacts/manifest.json",
    ] {
        assert!(run_dir.join(f).exists(), "missing {f}");
    }
    if !crate::harness::require_python("mlflow", "the MLflow client check") {
        return;
    }
    let script = format!(
        "import mlflow\nc = mlflow.tracking.MlflowClient(tracking_uri='file://{}')\nr = c.search_runs(['0'])[0]\narts = sorted(a.path for a in c.list_artifacts(r.info.run_id))\nprint(r.data.params['seed'], len(c.get_metric_history(r.info.run_id, 'train_loss')), len(r.data.tags['lockstep.config_hash']), 'manifest.json' in arts, r.info.status)",
        mlruns.display()
    );
    let o = crate::harness::python()
        .args(["-c", &script])
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.trim() == "42 90 64 True FINISHED",
        "mlflow read: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn identical_finished_runs_are_reused_on_request() {
    let clean = std::process::Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| o.status.success() && o.stdout.is_empty())
        .unwrap_or(false);
    if !crate::harness::require(
        clean,
        "the --reuse check",
        "the source tree has uncommitted changes, so code identity is unknown: commit (CI's clean clone runs it)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "a.toml", &short_digits(""));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    lockstep(
        &["train", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()],
        true,
    );
    lockstep(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--reuse",
        ],
        true,
    );
    assert!(
        std::fs::symlink_metadata(&b)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(b.join("final.safetensors")).unwrap(),
        std::fs::read(a.join("final.safetensors")).unwrap()
    );
}
