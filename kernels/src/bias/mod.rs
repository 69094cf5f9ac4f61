//! `bias`: `y[i, j] = fl(fl(x[i, j]) + fl(b[j]))` for `x` `[m, n]` and `b` `[1, n]` — one rounding,
//! flushed like every lockstep value (`arith`'s subnormal rule), so a layer's output (and the
//! logits recorded at the end of training) hold the same bits on every device.
//!
//! No reduction forward; the backward (`backward.rs`) is `dx = dy` (no arithmetic) and
//! `db = sum_rows(dy)` (`reduce`'s order). CPU: threads over rows; GPU: one thread per output
//! element.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `bias` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait BiasOps: Backend {
    /// `[m, n] + [1, n]` (one IEEE add per element); its bias gradient is `det_sum_rows`.
    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `x + b` with `b` `[1, n]`; the bias gradient uses `sum_rows`.
pub fn add_bias(x: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as BiasOps>::det_add_bias(
        x.into_dispatch(),
        b.into_dispatch(),
    ))
}
