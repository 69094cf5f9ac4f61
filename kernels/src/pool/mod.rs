//! `pool`: 2-D max and average pooling over non-overlapping `k x k` windows (stride = `k`, no
//! padding, floor mode: rows/columns past the last full window are dropped, as in burn/PyTorch).
//!
//! `x` `[n, c, h, w]` -> `y` `[n, c, h / k, w / k]`. Window `(oy, ox)` covers rows `oy*k ..
//! oy*k + k` and columns `ox*k .. ox*k + k`, visited row-major (`dy` outer, `dx` inner). On both
//! sides, in this order:
//!
//! ```text
//! max:  m = x[first]; for each v in the window: if v > m { m = v }        y = m
//!       argmax = the first position in the window where that strict `>` last fired (x[first]
//!       when nothing beats it): ties go to the earliest element; a NaN is never picked unless
//!       it is the first element, which then stays the maximum.
//! avg:  s = 0.0; for each v in the window: s = s + v;                      y = s * inv
//!       inv = f32(1 / k^2) rounded once on the host (exact for k = 1, 2, 4, 8, ...)
//! ```
//!
//! Backward has no scatter and no atomics: windows do not overlap, so each input element has at
//! most one window, and one unit of work per *input* element gathers its own gradient:
//! `dx = (argmax == me ? dy : 0)` for max (the window's argmax recomputed from `x` with the
//! forward's comparisons) and `dx = dy * inv` for avg; dropped rows/columns get 0.
//! Every value is flushed as it is read and every sum/product after it is rounded (`arith`'s
//! subnormal rule), so comparisons and sums see the same values on every device.
//! CPU: threads over `(n, c)` planes; GPU: one thread per output (forward) or input (backward).
//! The autodiff (`backward.rs`) keeps `x` and runs the backward above.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `pool` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait PoolOps: Backend {
    /// `[n, c, h, w] -> [n, c, h / k, w / k]`, non-overlapping `k x k` windows.
    fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self>;
    /// The gradient of `det_pool2d` with respect to `x` for incoming `dy`.
    fn det_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        k: usize,
        kind: Pool,
    ) -> FloatTensor<Self>;
}

/// Max pooling over non-overlapping `k x k` windows, ties to the earliest element.
pub fn max_pool2d(x: Tensor<4>, k: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolOps>::det_pool2d(
        x.into_dispatch(),
        k,
        Pool::Max,
    ))
}

/// Average pooling over non-overlapping `k x k` windows.
pub fn avg_pool2d(x: Tensor<4>, k: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolOps>::det_pool2d(
        x.into_dispatch(),
        k,
        Pool::Avg,
    ))
}

/// Which pooling (the GPU kernels take it as a comptime code: 0 max, 1 avg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Max,
    Avg,
}

impl Pool {
    pub fn code(self) -> u32 {
        match self {
            Pool::Max => 0,
            Pool::Avg => 1,
        }
    }

    /// The factor `avg` multiplies by: `1 / k^2` rounded once to f32.
    pub fn inv(k: usize) -> f32 {
        (1.0 / (k * k) as f64) as f32
    }
}
