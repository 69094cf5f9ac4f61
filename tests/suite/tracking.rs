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

    // The plot written at the end of training is the one `lockstep plot RUN` draws, rendered
    // again byte for byte; two plots of the same runs are identical; the pixels in every text
    // area (title, legend, tick values, axis labels) are drawn.
    let png = |runs: &[&std::path::Path], out: &str| -> Vec<u8> {
        let out = dir.path().join(out);
        let mut args = vec!["plot"];
        args.extend(runs.iter().map(|r| r.to_str().unwrap()));
        args.extend(["--out", out.to_str().unwrap()]);
        lockstep(&args, true);
        std::fs::read(out).unwrap()
    };
    let pa = std::fs::read(a.join("plot.png")).unwrap();
    assert!(pa.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(
        pa == png(&[&a], "a.png"),
        "plot.png differs from a re-render"
    );
    let both = png(&[&a, &b], "both.png");
    assert!(
        both == png(&[&a, &b], "both-again.png"),
        "same runs, different bytes"
    );
    assert!(both != pa);
    let fig = lockstep_train::tracking::figure(&[a.clone(), b.clone()]);
    // Both configs are named "digits_mlp": the legend tells them apart by directory.
    assert_eq!(fig.legend, ["a", "b"]);
    assert_eq!(
        lockstep_train::tracking::figure(std::slice::from_ref(&a)).legend,
        ["digits_mlp"]
    );
    let (w, h, rgb) = decode_png(&both);
    assert_eq!(
        (w, h),
        (
            lockstep_train::plot::WIDTH,
            lockstep_train::plot::height(&fig)
        )
    );
    let areas = lockstep_train::plot::text_areas(&fig);
    assert!(
        areas.len() >= 10,
        "title, legend, labels and ticks: {areas:?}"
    );
    for (x, y, aw, ah) in areas {
        let inked = (y..y + ah)
            .any(|yy| (x..x + aw).any(|xx| rgb[(yy * w + xx) * 3..][..3] != [255, 255, 255]));
        assert!(inked, "nothing drawn in the text area {:?}", (x, y, aw, ah));
    }
    assert_eq!(rgb[..3], [255, 255, 255], "the corner is background");
    let svg = dir.path().join("both.svg");
    lockstep(
        &[
            "plot",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--out",
            svg.to_str().unwrap(),
        ],
        true,
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    for needle in [
        "<svg",
        "lockstep: a, b",
        ">a<",
        ">b<",
        "training loss",
        "test accuracy",
        ">step<",
    ] {
        assert!(svg.contains(needle), "SVG lacks {needle:?}");
    }

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

/// An 8-bit RGB, non-interlaced PNG with filter 0 on every row (what lockstep writes), decoded
/// here independently of the renderer: (width, height, pixels).
fn decode_png(b: &[u8]) -> (usize, usize, Vec<u8>) {
    use std::io::Read;
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n"));
    let (mut at, mut size, mut idat) = (8, (0, 0), Vec::new());
    while at + 8 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let (kind, body) = (&b[at + 4..at + 8], &b[at + 8..at + 8 + len]);
        match kind {
            b"IHDR" => {
                size = (
                    u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize,
                    u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize,
                );
                assert_eq!(&body[8..13], &[8, 2, 0, 0, 0], "8-bit RGB");
            }
            b"IDAT" => idat.extend_from_slice(body),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let (w, h) = size;
    assert_eq!(raw.len(), h * (w * 3 + 1));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in raw.chunks(w * 3 + 1) {
        assert_eq!(row[0], 0, "filter 0");
        rgb.extend_from_slice(&row[1..]);
    }
    (w, h, rgb)
}
