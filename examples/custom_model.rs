//! A model that is neither the MLP nor the CNN, built here through lockstep's public API
//! (`lockstep_train::nn::GraphBuilder`) and trained with lockstep's guarantees on the embedded
//! digits: a residual MLP — a stem, two residual blocks (`h = relu(h + fc2(dropout(relu(fc1(h)))))`)
//! — with two heads whose logits are summed.
//!
//! The builder writes the network into the config as `[[model.layers]]` (`model.kind = "graph"`),
//! so the run directory is a normal one: `lockstep verify`, `resume`, `predict`, `inspect`,
//! `runs`, `plot` and `diff` all rebuild the network from it. (A network that cannot be written
//! as layers implements `lockstep_train::nn::Network` in Rust and trains with
//! `model.kind = "custom"`; only its own program can then resume or verify it.)
//!
//! ```sh
//! cargo run --release --example custom_model -- --backend ndarray --out runs/custom-a
//! cargo run --release --example custom_model -- --backend wgpu --out runs/custom-b
//! cmp runs/custom-a/final.safetensors runs/custom-b/final.safetensors   # identical
//! cargo run --release --example custom_model -- --max-steps 50 --out runs/custom-c
//! cargo run --release --example custom_model -- --resume runs/custom-c  # = an uninterrupted run
//! lockstep verify runs/custom-a --backend wgpu                          # or --verify runs/custom-a
//! cargo run --release --example custom_model -- --print-config          # the config it trains
//! ```
//! `configs/digits_residual.toml` writes the same network by hand: `lockstep train` on it gives
//! the same bytes as this program.
//! Flags: `--backend ndarray|flex|wgpu`, `--threads N`, `--max-steps N`, `--out DIR`,
//! `--resume DIR`, `--verify DIR [--batch-size N]`, `--print-config`.

use lockstep_core::config::{BackendKind, parse_config};
use lockstep_train::nn::GraphBuilder;
use lockstep_train::verify::{VerifyOptions, format_report, verify};
use lockstep_train::{BuildInfo, RunOptions, resume, train};
use std::path::PathBuf;

const CONFIG: &str = r#"
name = "digits_residual"
seed = 7
[data]
dataset = "digits"
normalize = "standardize"
[model]
kind = "graph"        # the layers are appended by `network()` below
[optimizer]
kind = "adamw"
lr = 2e-3
weight_decay = 0.01
[schedule]
kind = "cosine"
warmup_steps = 20
[train]
batch_size = 32
epochs = 4
eval_every = 50
checkpoint_every = 50
"#;

/// Stem `64 -> width`, residual blocks `blocks.<i>.fc1/fc2` (`width -> width`) with dropout
/// `blocks.<i>`, heads `heads.a`/`heads.b` (Xavier init) summed into the logits.
fn network(width: usize, blocks: usize, dropout: f64, classes: usize) -> GraphBuilder {
    let mut g = GraphBuilder::default();
    let stem = g.linear("stem", GraphBuilder::INPUT, width);
    let mut h = g.act_as("relu", &stem, "h0");
    for i in 0..blocks {
        let r = g.linear(&format!("blocks.{i}.fc1"), &h, width);
        let r = g.act("relu", &r);
        let r = g.dropout(&format!("blocks.{i}"), &r, dropout);
        let r = g.linear(&format!("blocks.{i}.fc2"), &r, width);
        let sum = g.add(&h, &r);
        h = g.act_as("relu", &sum, &format!("h{}", i + 1));
    }
    let a = g.linear_init("heads.a", &h, classes, Some("xavier_uniform"));
    let b = g.linear_init("heads.b", &h, classes, Some("xavier_uniform"));
    g.add(&a, &b);
    g
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut backend, mut threads, mut max_steps) = (BackendKind::Ndarray, 0usize, None);
    let (mut out, mut resume_dir, mut verify_dir, mut batch) = (None, None, None, None);
    let mut print_config = false;
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--backend" => {
                let v = value()?;
                backend = BackendKind::parse(&v)
                    .ok_or_else(|| anyhow::anyhow!("--backend {v:?}: use ndarray, flex or wgpu"))?;
            }
            "--threads" => threads = value()?.parse()?,
            "--max-steps" => max_steps = Some(value()?.parse()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--resume" => resume_dir = Some(PathBuf::from(value()?)),
            "--verify" => verify_dir = Some(PathBuf::from(value()?)),
            "--batch-size" => batch = Some(value()?.parse()?),
            "--print-config" => print_config = true,
            other => anyhow::bail!("unknown flag {other:?} (see the example's doc comment)"),
        }
    }
    lockstep_train::backend::configure_threads(threads)?;
    let text = format!("{CONFIG}{}", network(64, 2, 0.1, 10).toml());
    if print_config {
        print!("{text}");
        return Ok(());
    }
    let cfg = parse_config(&text, std::path::Path::new("<custom_model.rs CONFIG>"))?;
    if let Some(run) = verify_dir {
        let opts = VerifyOptions {
            backend: Some(backend),
            batch_size: batch,
            data: None,
            allow_data_change: false,
            checkpoint: None,
            model: None,
        };
        let report = verify(&run, &opts)?;
        print!("{}", format_report(&report));
        anyhow::ensure!(report.passed, "verify failed");
        return Ok(());
    }
    let opts = RunOptions {
        backend,
        device: None,
        threads,
        stop_at: max_steps,
        progress: false,
        build: BuildInfo {
            git_sha: Some(env!("LOCKSTEP_GIT_SHA").to_string()).filter(|s| !s.is_empty()),
            git_dirty: match env!("LOCKSTEP_GIT_DIRTY") {
                "" => None,
                d => Some(d == "true"),
            },
            cargo_lock_sha256: lockstep_core::sha256_hex(include_bytes!("../Cargo.lock")),
            rustc: env!("LOCKSTEP_RUSTC_VERSION").to_string(),
        },
        reuse: false,
        model: None,
        workers: Default::default(),
    };
    let summary = match resume_dir {
        Some(run) => resume(&run, &opts)?,
        None => {
            let out = out.unwrap_or_else(|| PathBuf::from("runs/custom_residual_mlp"));
            train(&cfg, &text, &out, &opts)?
        }
    };
    println!(
        "{} at step {}/{} -> {} (final sha256 {})",
        if summary.finished {
            "finished"
        } else {
            "stopped"
        },
        summary.step,
        summary.total_steps,
        summary.dir.display(),
        summary.final_sha256.as_deref().unwrap_or("-")
    );
    Ok(())
}
