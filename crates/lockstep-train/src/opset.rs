//! The two kernel sets behind one trait: every operation whose implementation depends on
//! `train.kernels` goes through an [`OpSet`] — [`Lockstep`] (lockstep's kernels: fixed orders,
//! the arithmetic contract, bitwise across backends) or [`Stock`] (burn's own ops, as burn runs
//! them; only the reductions are pinned to `sum_dim`, since burn's full `sum()` uses float atomics
//! on wgpu). Layers (`crate::nn`), the loss (`crate::task`), the optimizer (`crate::optim`) and the
//! conformance suite pick the set once with [`ops`] instead of matching on `KernelSet` each time.

use burn::tensor::activation::{gelu, log_softmax, relu, sigmoid};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Tensor, TensorData};
use lockstep_core::SeedStream;
use lockstep_core::config::{Activation, KernelSet};
use lockstep_kernels as det;

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
    /// Inverted dropout of `x` with the mask of stream `stream` (`crate::nn::dropout`).
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, p: f64) -> Tensor<2>;
    /// Mean cross-entropy `[1, 1]` of `logits` against one-hot `targets`.
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2>;
}

/// The set `kernels` names.
pub fn ops(kernels: KernelSet) -> &'static dyn OpSet {
    match kernels {
        KernelSet::Lockstep => &Lockstep,
        KernelSet::Burn => &Stock,
    }
}

/// lockstep's kernels (`lockstep_kernels::ops`).
pub struct Lockstep;

/// burn's stock ops.
pub struct Stock;

impl OpSet for Lockstep {
    fn name(&self) -> &'static str {
        "lockstep"
    }
    fn linear(&self, x: Tensor<2>, w: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        det::add_bias(det::ops::matmul(x, w), b)
    }
    /// `im2col` gather + matmul: every multiply-add in the fixed k order (k = (c_in, ky, kx)
    /// row-major); the input gradient is `col2im`'s fixed-order gather.
    fn conv2d(&self, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4> {
        let [n, c, h, wd] = x.dims();
        let [co, _, k, _] = w.dims();
        let cols = det::ops::im2col(x, k, pad);
        let w2 = w.reshape([co, c * k * k]).transpose();
        let y = det::add_bias(det::ops::matmul(cols, w2), b.reshape([1, co]));
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
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, p: f64) -> Tensor<2> {
        let mask = det::dropout_mask(&x, seed, stream, p as f32);
        det::ops::mul(x, mask)
    }
    /// The fused `xent` kernel per row, `sum_rows` over the batch in order, then one flushed
    /// product with `f32(1 / batch)`.
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
        let batch = logits.dims()[0];
        let sum = det::sum_rows(det::cross_entropy_nll(logits, targets));
        let scale = Tensor::<2>::full([1, 1], 1.0 / batch as f32, &sum.device());
        det::ops::mul(sum, scale)
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
    /// The mask drawn on the host from the same stream (`crate::nn::dropout_mask`), uploaded.
    fn dropout(&self, x: Tensor<2>, seed: u64, stream: &str, p: f64) -> Tensor<2> {
        let [batch, width] = x.dims();
        let mut s = SeedStream::new(seed, stream);
        let keep = (1.0 / (1.0 - p)) as f32;
        let pf = p as f32;
        let m: Vec<f32> = (0..batch * width)
            .map(|_| if s.uniform_f32() >= pf { keep } else { 0.0 })
            .collect();
        let device = x.device();
        x * Tensor::<2>::from_data(TensorData::new(m, [batch, width]), &device)
    }
    /// Reduced with `sum_dim` only (per row, then over the batch column).
    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
        let batch = logits.dims()[0];
        (log_softmax(logits, 1) * targets).sum_dim(1).sum_dim(0) * (-1.0 / batch as f32)
    }
}
