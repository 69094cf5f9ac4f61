//! End to end across backends: with `kernels = "lockstep"` the same job on ndarray, flex and
//! wgpu (lavapipe) writes byte-identical checkpoints and metrics; with stock kernels, wgpu is
//! at least deterministic run to run.

use crate::harness::{
    assert_same_files as same, lockstep, short_digits, stock_digits, write_config,
};
use std::path::Path;

fn wgpu_or_skip(what: &str) -> bool {
    crate::harness::require_wgpu(what)
}

fn train(cfg: &Path, out: &Path, backend: &str) {
    crate::harness::train(cfg, out, &["--backend", backend]);
}

#[test]
fn lockstep_kernels_give_identical_bits_on_cpu_and_gpu() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = short_digits("");
    assert!(text.contains("kernels = \"lockstep\"") && text.contains("dropout = 0.1"));
    let cfg = write_config(dir.path(), "j.toml", &text);
    let nd = dir.path().join("ndarray");
    train(&cfg, &nd, "ndarray");
    let fx = dir.path().join("flex");
    train(&cfg, &fx, "flex");
    let files = [
        "final.safetensors",
        "metrics.jsonl",
        "scores.json",
        "eval/test.safetensors",
        "checkpoints/step-0000050.safetensors",
    ];
    same(&nd, &fx, &files);
    if wgpu_or_skip("the CPU-vs-GPU bitwise run") {
        let gp = dir.path().join("wgpu");
        train(&cfg, &gp, "wgpu");
        same(&nd, &gp, &files);
    }
}

#[test]
fn lockstep_tanh_sigmoid_and_gelu_mlps_give_identical_bits_on_cpu_and_gpu() {
    let dir = tempfile::tempdir().expect("tmp");
    for act in ["tanh", "sigmoid", "gelu"] {
        let text =
            short_digits("").replace("activation = \"relu\"", &format!("activation = \"{act}\""));
        assert!(text.contains(&format!("activation = \"{act}\"")));
        let cfg = write_config(dir.path(), &format!("{act}.toml"), &text);
        let nd = dir.path().join(format!("{act}-ndarray"));
        train(&cfg, &nd, "ndarray");
        let other = if wgpu_or_skip("the tanh/sigmoid/gelu CPU-vs-GPU run") {
            "wgpu"
        } else {
            "flex"
        };
        let o = dir.path().join(format!("{act}-{other}"));
        train(&cfg, &o, other);
        same(
            &nd,
            &o,
            &["final.safetensors", "metrics.jsonl", "scores.json"],
        );
    }
}

#[test]
fn lockstep_cnn_gives_identical_bits_on_cpu_and_gpu() {
    let dir = tempfile::tempdir().expect("tmp");
    // The shipped CNN architecture (conv-pool-conv-pool-fc) on the embedded 8x8 digits, 40 steps,
    // with max pooling (the default) and with average pooling.
    for pool in ["max", "avg"] {
        let text = short_digits("")
            .replace(
                "kind = \"mlp\"",
                &format!("kind = \"cnn\"\nchannels = [4, 8]\nkernel_size = 3\npool = \"{pool}\""),
            )
            .replace("hidden = [128, 64]", "hidden = [32]")
            .replace("epochs = 2", "epochs = 1\nmax_steps = 40");
        let cfg = write_config(dir.path(), &format!("cnn-{pool}.toml"), &text);
        let nd = dir.path().join(format!("ndarray-{pool}"));
        train(&cfg, &nd, "ndarray");
        // Without a GPU (outside CI) the second backend is flex: still a real comparison.
        let other = if wgpu_or_skip("the CNN CPU-vs-GPU bitwise run") {
            "wgpu"
        } else {
            "flex"
        };
        let o = dir.path().join(format!("{other}-{pool}"));
        train(&cfg, &o, other);
        same(
            &nd,
            &o,
            &["final.safetensors", "metrics.jsonl", "scores.json"],
        );
    }
    // The two poolings are different models (the test would pass vacuously otherwise).
    assert_ne!(
        std::fs::read(dir.path().join("ndarray-max/final.safetensors")).unwrap(),
        std::fs::read(dir.path().join("ndarray-avg/final.safetensors")).unwrap()
    );
}

#[test]
fn stock_kernels_on_wgpu_are_deterministic_run_to_run() {
    if !wgpu_or_skip("the wgpu run-to-run check") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "j.toml", &stock_digits());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&cfg, &a, "wgpu");
    train(&cfg, &b, "wgpu");
    same(
        &a,
        &b,
        &[
            "final.safetensors",
            "metrics.jsonl",
            "scores.json",
            "checkpoints/step-0000050.safetensors",
        ],
    );
}

#[test]
fn diff_reports_where_stock_cpu_and_gpu_runs_part_and_checks_the_declared_tolerance() {
    if !wgpu_or_skip("the stock CPU-vs-GPU trajectory diff") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "j.toml", &stock_digits());
    let (a, b) = (dir.path().join("cpu"), dir.path().join("gpu"));
    train(&cfg, &a, "ndarray");
    train(&cfg, &b, "wgpu");
    let o = lockstep(&["diff", a.to_str().unwrap(), b.to_str().unwrap()], false);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("first differing metrics line")
            && out.contains("first differing checkpoint: step")
            && out.contains("model."),
        "{out}"
    );
    let o = lockstep(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--within-tolerance",
        ],
        true,
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("within"));
    let o = lockstep(&["diff", a.to_str().unwrap(), a.to_str().unwrap()], true);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("identical"));
}

#[test]
fn wgpu_stop_and_resume_is_bitwise_identical_to_an_uninterrupted_run() {
    if !wgpu_or_skip("the wgpu resume check") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "j.toml", &short_digits(""));
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    train(&cfg, &full, "wgpu");
    lockstep(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--out",
            cut.to_str().unwrap(),
            "--backend",
            "wgpu",
            "--max-steps",
            "33",
        ],
        true,
    );
    lockstep(&["resume", cut.to_str().unwrap()], true);
    same(
        &full,
        &cut,
        &["final.safetensors", "metrics.jsonl", "scores.json"],
    );
}

/// Issue requirement: the shipped `configs/fashion_cnn.toml` itself (shortened to 6 steps) on
/// ndarray and on wgpu from the same seed gives byte-identical checkpoints, metrics and scores.
#[test]
fn shipped_fashion_cnn_shortened_gives_identical_bits_on_cpu_and_gpu() {
    if !crate::harness::require_fashion("the shipped fashion_cnn CPU-vs-GPU run") {
        return;
    }
    if !wgpu_or_skip("the shipped fashion_cnn CPU-vs-GPU run") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let text = std::fs::read_to_string(crate::harness::config("fashion_cnn.toml"))
        .unwrap()
        .replace("[train]\n", "[train]\nmax_steps = 6\n");
    assert!(text.contains("max_steps = 6"));
    let cfg = write_config(dir.path(), "fashion_cnn.toml", &text);
    let (nd, gp) = (dir.path().join("ndarray"), dir.path().join("wgpu"));
    train(&cfg, &nd, "ndarray");
    train(&cfg, &gp, "wgpu");
    same(
        &nd,
        &gp,
        &["final.safetensors", "metrics.jsonl", "scores.json"],
    );
}
