//! Optimizers as element-wise tensor updates (no reductions, so no order to fix).
//!
//! Per element, with `g` the gradient, `w` the weight, `t` the 1-based step, `lr` from the
//! schedule; scalars `1/(1-b1^t)` and `1/(1-b2^t)` are computed on the host in f64 and rounded
//! once to f32:
//! - SGD:   `g += wd*w; buf = mu*buf + g; w -= lr*buf` (PyTorch's SGD, no dampening/nesterov).
//! - Adam:  `g += wd*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;`
//!   `w -= lr * (m*c1) / (sqrt(v*c2) + eps)`.
//! - AdamW: Adam without the `g += wd*w`, and `w -= lr*wd*w` applied first (decoupled decay).
//!
//! `kernels = "burn"` runs these as stock tensor ops (one IEEE operation per op, no fusion
//! feature, so each result is rounded to memory). `kernels = "lockstep"` runs the fused
//! `lockstep_kernels::optim` kernel (one pass; CPU loop and CubeCL kernel side by side), which
//! performs the same operations in the same order but from `+ - *` only: Adam's square root and
//! division are Newton iterations, and every value is flushed (lockstep_kernels::arith). SGD
//! therefore equals the stock update bit for bit, Adam within the declared `adam_update_vs_stock`
//! bound; the fused kernel is bitwise across backends (tests/suite/kernels_bitwise.rs).

use burn::tensor::Tensor;
use lockstep_core::config::{KernelSet, OptimizerConfig, OptimizerKind};
use lockstep_kernels::ops as det;
use lockstep_kernels::optim::Decay;

/// Optimizer slots per parameter (`m`/`v` for Adam/AdamW, `momentum` for SGD).
pub fn slot_names(kind: OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::Sgd => &["momentum"],
        OptimizerKind::Adam | OptimizerKind::Adamw => &["m", "v"],
    }
}

/// Apply one update to `w` with gradient `g`; `slots` follow `slot_names`. `step` is 1-based.
pub fn update(
    cfg: &OptimizerConfig,
    kernels: KernelSet,
    lr: f32,
    step: u64,
    w: Tensor<1>,
    g: Tensor<1>,
    slots: &mut [Tensor<1>],
) -> Tensor<1> {
    let wd = cfg.weight_decay as f32;
    match (cfg.kind, kernels) {
        (OptimizerKind::Sgd, KernelSet::Burn) => {
            let g = if wd > 0.0 { g + w.clone() * wd } else { g };
            let buf = slots[0].clone() * cfg.momentum as f32 + g;
            slots[0] = buf.clone();
            w - buf * lr
        }
        (OptimizerKind::Sgd, KernelSet::Lockstep) => {
            let decay = if wd > 0.0 {
                Decay::Coupled
            } else {
                Decay::None
            };
            let hp = [lr, wd, cfg.momentum as f32];
            let (w, buf) = det::sgd_step(w, g, slots[0].clone(), hp, decay);
            slots[0] = buf;
            w
        }
        (OptimizerKind::Adam | OptimizerKind::Adamw, _) => {
            let (b1, b2) = (cfg.betas[0], cfg.betas[1]);
            let coupled = cfg.kind == OptimizerKind::Adam && wd > 0.0;
            let decoupled = cfg.kind == OptimizerKind::Adamw && wd > 0.0;
            let (omb1, omb2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
            let c1 = (1.0 / (1.0 - b1.powi(step as i32))) as f32;
            let c2 = (1.0 / (1.0 - b2.powi(step as i32))) as f32;
            let eps = cfg.eps as f32;
            if kernels == KernelSet::Lockstep {
                let decay = match (coupled, decoupled) {
                    (true, _) => Decay::Coupled,
                    (_, true) => Decay::Decoupled,
                    _ => Decay::None,
                };
                let hp = [
                    lr,
                    wd,
                    b1 as f32,
                    b2 as f32,
                    omb1,
                    omb2,
                    c1,
                    c2,
                    eps,
                    lr * wd,
                ];
                let (w, m, v) = det::adam_step(w, g, slots[0].clone(), slots[1].clone(), hp, decay);
                slots[0] = m;
                slots[1] = v;
                return w;
            }
            let g = if coupled { g + w.clone() * wd } else { g };
            let m = slots[0].clone() * b1 as f32 + g.clone() * omb1;
            let v = slots[1].clone() * b2 as f32 + g.clone() * g * omb2;
            let upd = (m.clone() * c1) / ((v.clone() * c2).sqrt() + eps);
            slots[0] = m;
            slots[1] = v;
            let w = if decoupled {
                w.clone() - w * (lr * wd)
            } else {
                w
            };
            w - upd * lr
        }
    }
}
