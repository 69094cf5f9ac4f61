//! A model that is neither the MLP nor the CNN, defined entirely here through lockstep's public
//! API (`lockstep_train::nn`) and trained with lockstep's guarantees on the embedded digits:
//! a residual MLP — a stem, two residual blocks (`h = relu(h + fc2(dropout(relu(fc1(h)))))`) —
//! with two heads whose logits are summed.
//!
//! ```sh
//! cargo run --release --example custom_model -- --backend ndarray --out runs/custom-a
//! cargo run --release --example custom_model -- --backend wgpu --out runs/custom-b
//! cmp runs/custom-a/final.safetensors runs/custom-b/final.safetensors   # identical
//! cargo run --release --example custom_model -- --max-steps 50 --out runs/custom-c
//! cargo run --release --example custom_model -- --resume runs/custom-c  # = an uninterrupted run
//! cargo run --release --example custom_model -- --verify runs/custom-a --backend wgpu
//! ```
//! Flags: `--backend ndarray|flex|wgpu`, `--threads N`, `--max-steps N`, `--out DIR`,
//! `--resume DIR`, `--verify DIR [--batch-size N]`. The run directory is a normal one:
//! `lockstep inspect`, `runs`, `plot`, `diff` read it; `lockstep verify`/`resume`/`predict` need
//! the network, which lives in this program, so they refuse it with a message pointing here
//! (`--verify`/`--resume` below are those commands with the network passed in).

use lockstep_core::config::{Activation, BackendKind, KernelSet, parse_config};
use lockstep_train::model::Model;
use lockstep_train::nn::{Ctx, Linear, Network, ParamSpec, Params, activate, add, dropout};
use lockstep_train::verify::{VerifyOptions, format_report, verify};
use lockstep_train::{BuildInfo, RunOptions, resume, train};
use std::path::PathBuf;
use std::sync::Arc;

const CONFIG: &str = r#"
name = "custom_residual_mlp"
seed = 7
[data]
dataset = "digits"
normalize = "standardize"
[model]
kind = "custom"       # the network below; hidden[0] is its width
hidden = [64]
dropout = 0.1
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

/// Stem `d_in -> w`, blocks `blocks.<i>.fc1/fc2` (`w -> w`), heads `heads.a`/`heads.b`.
struct ResidualTwoHeads {
    stem: Linear,
    blocks: Vec<(Linear, Linear)>,
    heads: [Linear; 2],
    dropout: f64,
}

impl ResidualTwoHeads {
    fn new(d_in: usize, width: usize, classes: usize, dropout: f64) -> Self {
        ResidualTwoHeads {
            stem: Linear::new("stem", d_in, width),
            blocks: (0..2)
                .map(|i| {
                    (
                        Linear::new(format!("blocks.{i}.fc1"), width, width),
                        Linear::new(format!("blocks.{i}.fc2"), width, width),
                    )
                })
                .collect(),
            heads: [
                Linear::new("heads.a", width, classes),
                Linear::new("heads.b", width, classes),
            ],
            dropout,
        }
    }
}

impl Network for ResidualTwoHeads {
    fn params(&self) -> Vec<ParamSpec> {
        let mut p = self.stem.params(false).to_vec();
        for (a, b) in &self.blocks {
            p.extend(a.params(false));
            p.extend(b.params(false));
        }
        p.extend(self.heads[0].params(true));
        p.extend(self.heads[1].params(true));
        p
    }

    fn forward(
        &self,
        p: &Params,
        x: burn::tensor::Tensor<2>,
        ctx: &Ctx,
    ) -> burn::tensor::Tensor<2> {
        let relu = |t| activate(Activation::Relu, t, ctx);
        let mut h = relu(self.stem.forward(p, x, ctx));
        for (i, (fc1, fc2)) in self.blocks.iter().enumerate() {
            let r = relu(fc1.forward(p, h.clone(), ctx));
            let r = dropout(&format!("blocks.{i}"), self.dropout, r, ctx);
            h = relu(add(h, fc2.forward(p, r, ctx), ctx));
        }
        let a = self.heads[0].forward(p, h.clone(), ctx);
        add(a, self.heads[1].forward(p, h, ctx), ctx)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut backend, mut threads, mut max_steps) = (BackendKind::Ndarray, 0usize, None);
    let (mut out, mut resume_dir, mut verify_dir, mut batch) = (None, None, None, None);
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
            other => anyhow::bail!("unknown flag {other:?} (see the example's doc comment)"),
        }
    }
    lockstep_train::backend::configure_threads(threads)?;
    let cfg = parse_config(CONFIG, std::path::Path::new("<custom_model.rs CONFIG>"))?;
    let net = ResidualTwoHeads::new(64, cfg.model.hidden[0], 10, cfg.model.dropout);
    let model = Model::from_network(Arc::new(net), KernelSet::Lockstep, [1, 8, 8], 10)
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(run) = verify_dir {
        let opts = VerifyOptions {
            backend: Some(backend),
            batch_size: batch,
            data: None,
            allow_data_change: false,
            checkpoint: None,
            model: Some(model),
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
        model: Some(model),
    };
    let summary = match resume_dir {
        Some(run) => resume(&run, &opts)?,
        None => {
            let out = out.unwrap_or_else(|| PathBuf::from("runs/custom_residual_mlp"));
            train(&cfg, CONFIG, &out, &opts)?
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
