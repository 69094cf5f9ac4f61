//! Optimizers as element-wise tensor updates (no reductions, so no order to fix).
//!
//! Per element, with `g` the gradient, `w` the weight, `t` the 1-based step, `lr` from the
//! schedule; scalars `1/(1-b1^t)` and `1/(1-b2^t)` are computed on the host in f64 and rounded
//! once to f32:
//! - SGD:   `g += wd*w; buf = mu*buf + g; w -= lr*buf` (PyTorch's SGD, no dampening/nesterov).
//! - Adam:  `g += wd*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;`
//!   `w -= lr * (m*c1) / (sqrt(v*c2) + eps)`.
//! - AdamW: Adam without the `g += wd*w`, and `w -= lr*wd*w` applied first (decoupled decay).

use burn::tensor::Tensor;
use lockstep_core::config::{OptimizerConfig, OptimizerKind};

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
    lr: f32,
    step: u64,
    w: Tensor<1>,
    g: Tensor<1>,
    slots: &mut [Tensor<1>],
) -> Tensor<1> {
    let wd = cfg.weight_decay as f32;
    match cfg.kind {
        OptimizerKind::Sgd => {
            let g = if wd > 0.0 { g + w.clone() * wd } else { g };
            let buf = slots[0].clone() * cfg.momentum as f32 + g;
            slots[0] = buf.clone();
            w - buf * lr
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let (b1, b2) = (cfg.betas[0], cfg.betas[1]);
            let g = if cfg.kind == OptimizerKind::Adam && wd > 0.0 {
                g + w.clone() * wd
            } else {
                g
            };
            let m = slots[0].clone() * b1 as f32 + g.clone() * (1.0 - b1) as f32;
            let v = slots[1].clone() * b2 as f32 + g.clone() * g * (1.0 - b2) as f32;
            let c1 = (1.0 / (1.0 - b1.powi(step as i32))) as f32;
            let c2 = (1.0 / (1.0 - b2.powi(step as i32))) as f32;
            let upd = (m.clone() * c1) / ((v.clone() * c2).sqrt() + cfg.eps as f32);
            slots[0] = m;
            slots[1] = v;
            let w = if cfg.kind == OptimizerKind::Adamw && wd > 0.0 {
                w.clone() - w * (lr * wd)
            } else {
                w
            };
            w - upd * lr
        }
    }
}
