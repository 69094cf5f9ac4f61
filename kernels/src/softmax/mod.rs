//! `softmax`: softmax and log-softmax over the last axis of `[m, c]`, forward and backward,
//! from `arith`'s exact pieces and `xent`'s row statistics.
//!
//! Per row, in this order on both sides (`mx`, `s` exactly as in `xent`):
//!
//! ```text
//! mx = x[0]; for j in 1..c: if x[j] > mx { mx = x[j] }
//! s  = 0;    for j in 0..c: s = s + exp_fixed(x[j] - mx)
//! softmax:      r = recip_fixed(s);  y[j] = exp_fixed(x[j] - mx) * r
//! log_softmax:  l = log_fixed(s);    y[j] = (x[j] - mx) - l
//! ```
//!
//! Backward, from the forward's output `y` and the incoming `dy` (no `x` needed):
//!
//! ```text
//! softmax:      dot = 0; for j: dot = mad(dy[j], y[j], dot);   dx[j] = y[j] * (dy[j] - dot)
//! log_softmax:  sg  = 0; for j: sg  = sg + dy[j];              dx[j] = mad(exp_fixed(y[j]), -sg, dy[j])
//! ```
//!
//! `mad(a, b, c)` = fl(fl(a*b) + c); every read, product, sum and difference is flushed (`fl`,
//! `arith`'s subnormal rule) on both sides. CPU: threads over rows; GPU: one thread per row.
//! The autodiff (`backward.rs`) keeps `y` and runs the backward above.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `softmax` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait SoftmaxOps: Backend {
    /// Softmax (`log = false`) or log-softmax (`log = true`) of each row of `[m, c]`.
    fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self>;
    /// The gradient of `det_softmax` from its output `y` and the incoming `dy`.
    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self>;
}

/// Softmax of each row of `[m, c]`.
pub fn softmax(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as SoftmaxOps>::det_softmax(
        x.into_dispatch(),
        false,
    ))
}

/// Log-softmax of each row of `[m, c]`.
pub fn log_softmax(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as SoftmaxOps>::det_softmax(
        x.into_dispatch(),
        true,
    ))
}
