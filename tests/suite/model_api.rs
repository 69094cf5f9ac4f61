//! The model API (`lockstep_train::nn`): a network defined outside lockstep (here and in
//! `examples/custom_model.rs`) trains with every guarantee — same bits on every backend and
//! thread count, exact stop/resume, verify — and a malformed network is refused before anything
//! is written, naming the parameter or the shape at fault. Also the config-defined CNN with any
//! number of conv blocks.

use crate::harness::{lockstep, require_wgpu, short_digits, stderr, write_config};
use burn::tensor::Tensor;
use lockstep_core::config::{KernelSet, parse_config};
use lockstep_train::model::Model;
use lockstep_train::nn::{Ctx, InitRule, Linear, Network, ParamSpec, Params};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `target/release/examples/custom_model`, built by `cargo test` next to this test binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let release = exe.parent().unwrap().parent().unwrap();
    let p = release.join("examples").join("custom_model");
    assert!(
        p.exists(),
        "{} is missing: `cargo test --release` builds the examples",
        p.display()
    );
    p
}

fn run_example(args: &[&str]) -> String {
    let o = std::process::Command::new(example())
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "custom_model {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn bytes(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("final.safetensors")).unwrap()
}

#[test]
fn the_custom_model_example_is_bitwise_across_backends_threads_and_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    run_example(&["--backend", "ndarray", "--out", &p("a")]);
    let other = if require_wgpu("the custom model on wgpu") {
        "wgpu"
    } else {
        "flex"
    };
    run_example(&["--backend", other, "--out", &p("b")]);
    assert!(
        bytes(&dir.path().join("a")) == bytes(&dir.path().join("b")),
        "ndarray vs {other}"
    );
    run_example(&["--backend", "flex", "--threads", "1", "--out", &p("t1")]);
    run_example(&["--backend", "flex", "--threads", "2", "--out", &p("t2")]);
    assert!(bytes(&dir.path().join("t1")) == bytes(&dir.path().join("a")));
    assert!(bytes(&dir.path().join("t2")) == bytes(&dir.path().join("a")));
    let out = run_example(&["--max-steps", "50", "--out", &p("c")]);
    assert!(out.contains("stopped at step 50"), "{out}");
    run_example(&["--resume", &p("c")]);
    assert!(
        bytes(&dir.path().join("c")) == bytes(&dir.path().join("a")),
        "stop + resume"
    );
    for (b, bs) in [("ndarray", "1"), (other, "256")] {
        let out = run_example(&["--verify", &p("a"), "--backend", b, "--batch-size", bs]);
        assert!(out.contains("PASS"), "{out}");
    }
    // The network is in the config, so the binary rebuilds it from the run directory: verify
    // (two backends, batch 1), resume of a stopped run, predict, inspect — and the hand-written
    // configs/digits_residual.toml is the same job, byte for byte.
    for (b, bs) in [("ndarray", "1"), (other, "64")] {
        let o = lockstep(
            &["verify", &p("a"), "--backend", b, "--batch-size", bs],
            true,
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("PASS"));
    }
    run_example(&["--max-steps", "70", "--out", &p("d")]);
    lockstep(&["resume", &p("d")], true);
    assert!(
        bytes(&dir.path().join("d")) == bytes(&dir.path().join("a")),
        "binary resume"
    );
    crate::harness::train(
        &crate::harness::config("digits_residual.toml"),
        &dir.path().join("f"),
        &[],
    );
    assert!(
        bytes(&dir.path().join("f")) == bytes(&dir.path().join("a")),
        "config file vs builder"
    );
    lockstep(&["inspect", &format!("{}/final.safetensors", p("a"))], true);
    let x = dir.path().join("x.npy");
    let pixels: Vec<u8> = (0..3 * 64).map(|i| (i % 17) as u8).collect();
    crate::artifacts::npy(&x, "|u1", &[3, 64], &pixels);
    let o = lockstep(&["predict", &p("a"), x.to_str().unwrap()], true);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
}

/// A network whose declaration or forward is wrong in one way.
struct Faulty {
    kind: &'static str,
}

impl Network for Faulty {
    fn params(&self) -> Vec<ParamSpec> {
        let mut p = Linear::new("out", 64, 10).params(false).to_vec();
        match self.kind {
            "duplicate" => p.push(p[0].clone()),
            "empty" => p.push(ParamSpec {
                name: "extra.scale".into(),
                shape: vec![3, 0],
                init: InitRule::Zeros,
            }),
            _ => {}
        }
        p
    }
    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        match self.kind {
            "wrong_shape" => Linear::new("out", 64, 10)
                .forward(p, x, ctx)
                .slice([0..1, 0..7]),
            "undeclared" => Linear::new("missing", 64, 10).forward(p, x, ctx),
            _ => Linear::new("out", 64, 10).forward(p, x, ctx),
        }
    }
}

#[test]
fn malformed_networks_are_refused_naming_the_parameter_or_shape() {
    for (kind, needle) in [
        ("duplicate", "\"out.weight\""),
        ("empty", "\"extra.scale\""),
    ] {
        let e = Model::from_network(
            Arc::new(Faulty { kind }),
            KernelSet::Lockstep,
            [1, 8, 8],
            10,
        )
        .unwrap_err();
        assert!(e.contains(needle), "{kind}: {e}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let text = short_digits("").replace("kind = \"mlp\"", "kind = \"custom\"");
    let cfg = parse_config(&text, Path::new("custom.toml")).unwrap();
    for (kind, needle) in [
        ("wrong_shape", "[1, 7]"),
        ("undeclared", "\"missing.weight\""),
    ] {
        let model = Model::from_network(
            Arc::new(Faulty { kind }),
            KernelSet::Lockstep,
            [1, 8, 8],
            10,
        )
        .unwrap();
        let out = dir.path().join(kind);
        let opts = options(Some(model));
        let e = lockstep_train::train(&cfg, &text, &out, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{kind}: {e}");
        assert!(!out.exists(), "{kind}: nothing may be written");
    }
    // A network that exists only as Rust code trains through the library; the binary cannot
    // rebuild it and says which program can.
    let model = Model::from_network(
        Arc::new(Faulty { kind: "fine" }),
        KernelSet::Lockstep,
        [1, 8, 8],
        10,
    )
    .unwrap();
    let cfg_short = parse_config(
        &text.replace("epochs = 2", "epochs = 2\nmax_steps = 5"),
        Path::new("custom.toml"),
    )
    .unwrap();
    for (cmd, stop_at) in [("verify", None), ("resume", Some(3))] {
        let out = dir.path().join(cmd);
        let mut opts = options(Some(model.clone()));
        opts.stop_at = stop_at;
        lockstep_train::train(&cfg_short, &text, &out, &opts).unwrap();
        let o = lockstep(&[cmd, out.to_str().unwrap()], false);
        assert!(
            stderr(&o).contains("model.kind = \"custom\""),
            "{cmd}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"));
    }
}

fn options(model: Option<Model>) -> lockstep_train::RunOptions {
    lockstep_train::RunOptions {
        backend: lockstep_core::config::BackendKind::Ndarray,
        device: None,
        threads: 0,
        stop_at: None,
        progress: false,
        build: lockstep_train::BuildInfo {
            git_sha: None,
            git_dirty: None,
            cargo_lock_sha256: String::new(),
            rustc: String::new(),
        },
        reuse: false,
        model,
        workers: Default::default(),
    }
}

/// `[[model.layers]]` mistakes are config errors naming the layer and the fix; nothing is written.
#[test]
fn malformed_graph_layers_are_refused_naming_the_layer() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = std::fs::read_to_string(crate::harness::config("digits_residual.toml")).unwrap();
    let cases: [(&str, String, &str); 9] = [
        (
            "unknown op",
            base.replacen(
                "op = \"relu\"\nid = \"h0\"",
                "op = \"softplus\"\nid = \"h0\"",
                1,
            ),
            "model.layers[1]",
        ),
        (
            "forward reference",
            base.replace(
                "from = [\"h0\", \"blocks.0.fc2\"]",
                "from = [\"h0\", \"h2\"]",
            ),
            "\"h2\", which is not an earlier layer",
        ),
        (
            "add of one input",
            base.replace("from = [\"h0\", \"blocks.0.fc2\"]", "from = [\"h0\"]"),
            "takes 2 input(s)",
        ),
        (
            "width mismatch",
            base.replacen(
                "name = \"blocks.0.fc2\"\nout = 64",
                "name = \"blocks.0.fc2\"\nout = 32",
                1,
            ),
            "adds widths 64 and 32",
        ),
        (
            "wrong logits width",
            base.replace("out = 10", "out = 9"),
            "data.classes = 10",
        ),
        (
            "unused layer",
            base.replace(
                "from = [\"heads.a\", \"heads.b\"]",
                "from = [\"heads.a\", \"heads.a\"]",
            ),
            "never used",
        ),
        (
            "hidden on a graph",
            base.replace("\nkind = \"graph\"", "\nkind = \"graph\"\nhidden = [8]"),
            "model.hidden",
        ),
        (
            "layers on an mlp",
            base.replace("\nkind = \"graph\"", "\nkind = \"mlp\""),
            "model.layers",
        ),
        (
            "shared name, other shape",
            base.replace("name = \"heads.b\"", "name = \"stem\"\nid = \"heads.b\""),
            "shares its parameters",
        ),
    ];
    for (what, text, needle) in cases {
        let cfg = write_config(dir.path(), "bad.toml", &text);
        let out = dir.path().join("out");
        let o = crate::harness::train_fails(&cfg, &out, &[]);
        assert!(stderr(&o).contains(needle), "{what}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{what}");
        assert!(!out.exists(), "{what}: nothing may be written");
    }
}

/// The CNN takes any number of conv-pool blocks from `model.channels` (three here: 8x8 -> 1x1)
/// and keeps its bits across backends; too many blocks for the image is a config error.
#[test]
fn cnn_with_three_conv_blocks_is_bitwise_and_too_many_blocks_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cnn = |channels: &str| {
        short_digits("")
            .replace(
                "kind = \"mlp\"",
                &format!("kind = \"cnn\"\nchannels = {channels}\nkernel_size = 3"),
            )
            .replace("epochs = 2", "epochs = 1\nmax_steps = 20")
    };
    let cfg = write_config(dir.path(), "cnn3.toml", &cnn("[4, 8, 8]"));
    let (a, b) = (dir.path().join("nd"), dir.path().join("fx"));
    crate::harness::train(&cfg, &a, &["--backend", "ndarray"]);
    crate::harness::train(&cfg, &b, &["--backend", "flex"]);
    assert!(bytes(&a) == bytes(&b));
    let f = lockstep_core::TensorFile::read(&a.join("final.safetensors")).unwrap();
    assert_eq!(f.tensors["model.conv3.weight"].shape, [8, 8, 3, 3]);
    assert_eq!(
        f.tensors["model.fc0.weight"].shape[0], 8,
        "8 channels x 1 x 1"
    );
    let bad = write_config(dir.path(), "cnn4.toml", &cnn("[4, 8, 8, 8]"));
    let o = crate::harness::train_fails(&bad, &dir.path().join("x"), &[]);
    assert!(
        stderr(&o).contains("model.channels") && stderr(&o).contains("16x16"),
        "{}",
        stderr(&o)
    );
}

/// Shared weights: two linear layers with one name use one parameter (declared once, its
/// gradient the sum of both uses) and the run keeps its bits across backends.
#[test]
fn a_graph_with_shared_weights_is_bitwise_across_backends() {
    let dir = tempfile::tempdir().expect("tmp");
    let layers = r#"
[[model.layers]]
op = "linear"
name = "in"
out = 32
[[model.layers]]
op = "gelu"
[[model.layers]]
op = "linear"
name = "tied"
out = 32
[[model.layers]]
op = "tanh"
[[model.layers]]
op = "linear"
name = "tied"
id = "tied.again"
out = 32
[[model.layers]]
op = "relu"
[[model.layers]]
op = "linear"
name = "out"
out = 10
"#;
    let text = short_digits("max_steps = 30")
        .replace(
            "kind = \"mlp\"                 #",
            "kind = \"graph\"               #",
        )
        .replace("hidden = [128, 64]", "")
        .replace("activation = \"relu\"", "")
        .replace("dropout = 0.1 ", "");
    let cfg = write_config(dir.path(), "tied.toml", &format!("{text}{layers}"));
    let (a, b) = (dir.path().join("nd"), dir.path().join("fx"));
    crate::harness::train(&cfg, &a, &["--backend", "ndarray"]);
    crate::harness::train(&cfg, &b, &["--backend", "flex"]);
    assert!(bytes(&a) == bytes(&b));
    let f = lockstep_core::TensorFile::read(&a.join("final.safetensors")).unwrap();
    let weights: Vec<&String> = f
        .tensors
        .keys()
        .filter(|k| k.starts_with("model.") && k.ends_with(".weight"))
        .collect();
    assert_eq!(
        weights,
        ["model.in.weight", "model.out.weight", "model.tied.weight"]
    );
}
