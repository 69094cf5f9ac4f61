//! The two kernel sets behind one trait: every operation whose implementation depends on
//! `train.kernels` goes through an [`OpSet`] — [`Lockstep`] (lockstep's kernels: fixed orders,
//! the arithmetic contract, bitwise across backends) or [`Stock`] (burn's own ops, as burn runs
//! them; only the reductions are pinned to `sum_dim`, since burn's full `sum()` uses float atomics
//! on wgpu). Layers (`crate::nn`), the loss (`crate::task`) and the optimizer (`crate::optim`)
//! pick the set once with [`ops`] instead of matching on `KernelSet` each time.

use burn::tensor::activation::{gelu, log_softmax, relu, sigmoid};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Tensor, TensorData};
use lockstep_core::config::{Activation, Arith, KernelSet, OptimizerConfig, OptimizerKind};
use lockstep_kernels as det;
use lockstep_kernels::optim::Decay;

pub trait OpSet: Send + Sync {
    fn name(&self) -> &'static str;
    /// `x @ w + b` for `x [m, k]`, `w [k, n]`, `b [1, n]`.
    fn linear(&self, x: Tensor<2>, w: Tensor<2>, b: Tensor<2>) -> Tensor<2>;
    /// Same-padding (`pad = k / 2`), stride-1 convolution with bias.
    fn conv2d(&self, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4>;
    /// An element-wise activation.
    fn activate(&self, act: Activation, x: Tensor<2>) -> Tensor<2>;
    /// Non-overlapping 2x2 pooling.
    fn pool2(&self, max: bool, x: Tensor<4>) -> Tensor<4>;
    /// Element-wise `a + b`, same shapes.
    fn add(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2>;
    /// Inverted dropout of `x` with the mask of stream `stream` from word `first` on
    /// (`crate::nn::dropout`).
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, first: u64, p: f64) -> Tensor<2>;
    /// Cross-entropy `[1, 1]` of `logits` against one-hot `targets`, summed over the rows and
    /// multiplied by `f32(1 / rows)`: the mean when `rows` is the batch's row count, a shard's
    /// share of the whole batch's mean when it is the whole batch's.
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>, rows: usize) -> Tensor<2>;
    /// One optimizer update of `w` with gradient `g` (`crate::optim` states the arithmetic);
    /// `slots` follow `optim::slot_names` and are replaced by their updated values, `step` is
    /// 1-based. Handing over the only references to `w` and the slots lets a CPU backend update
    /// them in place.
    fn optimizer_step(
        &self,
        cfg: &OptimizerConfig,
        lr: f32,
        step: u64,
        w: Tensor<1>,
        g: Tensor<1>,
        slots: &mut Vec<Tensor<1>>,
    ) -> Tensor<1>;
}

/// Adam's host scalars for step `step` (1-based): `(1 - b1, 1 - b2, 1/(1 - b1^t), 1/(1 - b2^t))`,
/// computed in f64 and rounded once to f32.
fn adam_scalars(cfg: &OptimizerConfig, step: u64) -> [f32; 4] {
    let (b1, b2) = (cfg.betas[0], cfg.betas[1]);
    [
        (1.0 - b1) as f32,
        (1.0 - b2) as f32,
        (1.0 / (1.0 - b1.powi(step as i32))) as f32,
        (1.0 / (1.0 - b2.powi(step as i32))) as f32,
    ]
}

/// Both sets, stock first (the conformance report's order).
pub const SETS: [&dyn OpSet; 2] = [&Stock, &LOCKSTEP];

/// lockstep's kernels in the default (unfused) profile.
pub const LOCKSTEP: Lockstep = Lockstep { fused: false };

/// The set `kernels` names, in the unfused profile.
pub fn ops(kernels: KernelSet) -> &'static dyn OpSet {
    ops_in(kernels, Arith::Unfused)
}

/// The set `kernels` names; lockstep's kernels in the arithmetic profile `arith` (burn's stock
/// ops have no profile of ours: the config refuses `fma` with them).
pub fn ops_in(kernels: KernelSet, arith: Arith) -> &'static dyn OpSet {
    match (kernels, arith) {
        (KernelSet::Lockstep, Arith::Unfused) => &LOCKSTEP,
        (KernelSet::Lockstep, Arith::Fma) => &Lockstep { fused: true },
        (KernelSet::Burn, _) => &Stock,
    }
}

/// lockstep's kernels (`lockstep_kernels::ops`); `fused`: the dot products (linear, conv) in
/// the `fma` profile.
pub struct Lockstep {
    pub fused: bool,
}

/// burn's stock ops.
pub struct Stock;

impl OpSet for Lockstep {
    fn name(&self) -> &'static str {
        "lockstep"
    }
    fn linear(&self, x: Tensor<2>, w: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        det::add_bias(det::ops::matmul_in(x, w, self.fused), b)
    }
    /// `im2col` gather + matmul: every multiply-add in the fixed k order (k = (c_in, ky, kx)
    /// row-major); the input gradient is `col2im`'s fixed-order gather.
    fn conv2d(&self, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4> {
        let [n, c, h, wd] = x.dims();
        let [co, _, k, _] = w.dims();
        let cols = det::ops::im2col(x, k, pad);
        let w2 = w.reshape([co, c * k * k]).transpose();
        let y = det::add_bias(
            det::ops::matmul_in(cols, w2, self.fused),
            b.reshape([1, co]),
        );
        y.reshape([n, h, wd, co]).permute([0, 3, 1, 2])
    }
    fn activate(&self, act: Activation, x: Tensor<2>) -> Tensor<2> {
        match act {
            Activation::Relu => relu(x),
            Activation::Tanh => det::ops::tanh(x),
            Activation::Sigmoid => det::ops::sigmoid(x),
            Activation::Gelu => det::ops::gelu(x),
        }
    }
    fn pool2(&self, max: bool, x: Tensor<4>) -> Tensor<4> {
        if max {
            det::ops::max_pool2d(x, 2)
        } else {
            det::ops::avg_pool2d(x, 2)
        }
    }
    /// One flushed IEEE add per element (`add_bias` on `[1, m*n]` views).
    fn add(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        let [m, n] = a.dims();
        det::add_bias(a.reshape([1, m * n]), b.reshape([1, m * n])).reshape([m, n])
    }
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, first: u64, p: f64) -> Tensor<2> {
        let mask = det::dropout_mask(&x, seed, stream, first, p as f32);
        det::ops::mul(x, mask)
    }
    /// The fused `xent` kernel per row, `sum_rows` over the rows in order, then one flushed
    /// product with `f32(1 / rows)`.
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>, rows: usize) -> Tensor<2> {
        let sum = det::sum_rows(det::cross_entropy_nll(logits, targets));
        let scale = Tensor::<2>::full([1, 1], 1.0 / rows as f32, &sum.device());
        det::ops::mul(sum, scale)
    }
    fn optimizer_step(
        &self,
        cfg: &OptimizerConfig,
        lr: f32,
        step: u64,
        w: Tensor<1>,
        g: Tensor<1>,
        slots: &mut Vec<Tensor<1>>,
    ) -> Tensor<1> {
        let wd = cfg.weight_decay as f32;
        if cfg.kind == OptimizerKind::Sgd {
            let decay = if wd > 0.0 {
                Decay::Coupled
            } else {
                Decay::None
            };
            let hp = [lr, wd, cfg.momentum as f32];
            let buf = std::mem::take(slots).pop().expect("the momentum slot");
            let (w, buf) = det::ops::sgd_step(w, g, buf, hp, decay);
            *slots = vec![buf];
            return w;
        }
        let decay = match (cfg.kind, wd > 0.0) {
            (OptimizerKind::Adam, true) => Decay::Coupled,
            (OptimizerKind::Adamw, true) => Decay::Decoupled,
            _ => Decay::None,
        };
        let [omb1, omb2, c1, c2] = adam_scalars(cfg, step);
        let (b1, b2) = (cfg.betas[0] as f32, cfg.betas[1] as f32);
        let hp = [lr, wd, b1, b2, omb1, omb2, c1, c2, cfg.eps as f32, lr * wd];
        // The slots are moved, not cloned: the kernel may then update them in place.
        let [m, v]: [Tensor<1>; 2] = std::mem::take(slots).try_into().expect("the m and v slots");
        let (w, m, v) = det::ops::adam_step(w, g, m, v, hp, decay);
        *slots = vec![m, v];
        w
    }
}

impl OpSet for Stock {
    fn name(&self) -> &'static str {
        "burn"
    }
    fn linear(&self, x: Tensor<2>, w: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        x.matmul(w) + b
    }
    fn conv2d(&self, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4> {
        conv2d(
            x,
            w,
            Some(b),
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        )
    }
    fn activate(&self, act: Activation, x: Tensor<2>) -> Tensor<2> {
        match act {
            Activation::Relu => relu(x),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::Gelu => gelu(x),
        }
    }
    fn pool2(&self, max: bool, x: Tensor<4>) -> Tensor<4> {
        if max {
            max_pool2d(x, MaxPoolOptions::new([2, 2]))
        } else {
            avg_pool2d(x, AvgPoolOptions::new([2, 2]))
        }
    }
    fn add(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        a + b
    }
    /// The same mask drawn on the host (`lockstep_kernels::dropout::cpu::mask`), uploaded.
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, first: u64, p: f64) -> Tensor<2> {
        let [batch, width] = x.dims();
        let keep = (1.0 / (1.0 - p)) as f32;
        let m = det::dropout::cpu::mask(seed, stream, first, batch * width, p as f32, keep);
        let device = x.device();
        x * Tensor::<2>::from_data(TensorData::new(m, [batch, width]), &device)
    }
    /// Reduced with `sum_dim` only (per row, then over the batch column).
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>, rows: usize) -> Tensor<2> {
        (log_softmax(logits, 1) * targets).sum_dim(1).sum_dim(0) * (-1.0 / rows as f32)
    }
    fn optimizer_step(
        &self,
        cfg: &OptimizerConfig,
        lr: f32,
        step: u64,
        w: Tensor<1>,
        g: Tensor<1>,
        slots: &mut Vec<Tensor<1>>,
    ) -> Tensor<1> {
        let wd = cfg.weight_decay as f32;
        if cfg.kind == OptimizerKind::Sgd {
            let g = if wd > 0.0 { g + w.clone() * wd } else { g };
            let buf = slots[0].clone() * cfg.momentum as f32 + g;
            slots[0] = buf.clone();
            return w - buf * lr;
        }
        let coupled = cfg.kind == OptimizerKind::Adam && wd > 0.0;
        let decoupled = cfg.kind == OptimizerKind::Adamw && wd > 0.0;
        let [omb1, omb2, c1, c2] = adam_scalars(cfg, step);
        let (b1, b2) = (cfg.betas[0] as f32, cfg.betas[1] as f32);
        let g = if coupled { g + w.clone() * wd } else { g };
        let m = slots[0].clone() * b1 + g.clone() * omb1;
        let v = slots[1].clone() * b2 + g.clone() * g * omb2;
        let upd = (m.clone() * c1) / ((v.clone() * c2).sqrt() + cfg.eps as f32);
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
