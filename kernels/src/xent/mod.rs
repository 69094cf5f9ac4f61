//! `xent`: softmax cross-entropy, fused forward and backward, from `arith`'s exact pieces.
//!
//! Per row `i` of `logits` `[m, c]` with `targets` `[m, c]` (one-hot or soft labels), in this
//! order on both sides:
//!
//! ```text
//! mx  = x[0]; for j in 1..c: if x[j] > mx { mx = x[j] }
//! s   = 0;  for j in 0..c: s = s + exp_fixed(x[j] - mx)
//! lse = log_fixed(s) + mx
//! dot = 0;  for j in 0..c: dot = mad(x[j], t[j], dot)
//! nll[i] = lse - dot                                        (forward, [m, 1])
//! r   = recip_fixed(s)
//! d[i, j] = mad(exp_fixed(x[j] - mx), r, -t[j]) * g[i]      (backward, [m, c])
//! ```
//!
//! `mad(a, b, c)` = fl(fl(a*b) + c); every read, product, sum and difference is flushed (`fl`,
//! `arith`'s subnormal rule) on both sides. CPU: threads over blocks of 32 rows (each row's
//! exponentials computed a block at a time, then summed in order); GPU: one thread per row.
//! Dividing by the batch size and summing rows happen outside (`reduce::sum_rows`). The
//! autodiff (`backward.rs`) keeps `logits` and `targets` and runs the backward above; `targets`
//! get no gradient.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `xent` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait XentOps: Backend {
    /// Softmax cross-entropy per row, `[m, c], [m, c] -> [m, 1]`.
    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of `det_xent` for incoming `g` `[m, 1]`.
    fn det_xent_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Per-row softmax cross-entropy `[m, 1]`.
pub fn cross_entropy_nll(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as XentOps>::det_xent(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}
