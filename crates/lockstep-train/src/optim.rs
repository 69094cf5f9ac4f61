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

/// Optimizer slots per parameter (`m`/`v` for Adam/AdamW, `momentum` for SGD).
pub fn slot_names(kind: OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::Sgd => &["momentum"],
        OptimizerKind::Adam | OptimizerKind::Adamw => &["m", "v"],
    }
}

/// Apply one update to `w` with gradient `g`; `slots` follow `slot_names`. `step` is 1-based.
/// The kernel set's `OpSet::optimizer_step` does the arithmetic (module doc).
pub fn update(
    cfg: &OptimizerConfig,
    kernels: KernelSet,
    lr: f32,
    step: u64,
    w: Tensor<1>,
    g: Tensor<1>,
    slots: &mut Vec<Tensor<1>>,
) -> Tensor<1> {
    crate::opset::ops(kernels).optimizer_step(cfg, lr, step, w, g, slots)
}

/// The optimizer settings for one parameter: `decay_matrices_only` (nanoGPT's grouping) turns
/// weight decay off for parameters of fewer than two dimensions (biases, LayerNorm weights).
pub fn config_for(cfg: &OptimizerConfig, spec: &crate::nn::ParamSpec) -> OptimizerConfig {
    let mut c = cfg.clone();
    if cfg.decay_matrices_only && spec.shape.len() < 2 {
        c.weight_decay = 0.0;
    }
    c
}

/// Clip the gradients to global L2 norm `max_norm` (PyTorch's `clip_grad_norm_`, as nanoGPT
/// uses it) in one fixed order on every backend. On the device, with lockstep's kernels: each
/// parameter's sum of squares `sum_all(mul(g, g))` (`reduce`'s chunked order: 256-element chunks
/// in order, then the chunk partials in order; every product and sum flushed). Those per-parameter
/// partials (one f32 each) are read back once and summed in f64 in declaration order;
/// `norm = sqrt(sum)` (f64 `sqrt`, correctly rounded) and `coef = max_norm / (norm + 1e-6)`. When
/// `coef < 1` every gradient becomes `mul(g, f32(coef))` on the device. Returns the norm.
pub fn clip_global_norm(gs: &mut [Tensor<1>], max_norm: f64) -> f64 {
    use lockstep_kernels::ops::{mul, sum_all};
    if gs.is_empty() {
        return 0.0;
    }
    let partials: Vec<Tensor<1>> = gs
        .iter()
        .map(|g| sum_all(mul(g.clone(), g.clone())))
        .collect();
    let host = Tensor::cat(partials, 0)
        .try_into_vec_as::<f32>()
        .expect("sums of squares read back as f32");
    let norm = host.iter().map(|&v| v as f64).sum::<f64>().sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        for g in gs.iter_mut() {
            let scale = Tensor::<1>::full([g.dims()[0]], c, &g.device());
            *g = mul(g.clone(), scale);
        }
    }
    norm
}
