//! `im2col`: the patch matrix of a stride-1 convolution with `pad` zeros on each side, and its
//! backward (`col2im`). conv2d = `im2col` + `matmul` + bias, so every multiply-add of a
//! convolution runs in the matmul's fixed k order, k = (c_in, ky, kx) row-major.
//!
//! `x` `[n, c, h, w]` -> `cols` `[n*h*w, c*k*k]` (output size = input size):
//!
//! ```text
//! cols[(b, oy, ox), (ci, ky, kx)] = x[b, ci, oy + ky - pad, ox + kx - pad]   (0.0 outside)
//! ```
//!
//! Forward is a pure gather (no arithmetic). Backward gathers too — one unit of work per input
//! element, no scatter, no atomics — and adds the up to k*k patch entries that read that element
//! in one fixed order, from 0.0:
//!
//! ```text
//! dx[b, ci, iy, ix] = 0; for ky in 0..k { for kx in 0..k {
//!     (oy, ox) = (iy + pad - ky, ix + pad - kx); if inside: dx += dcols[(b, oy, ox), (ci, ky, kx)] } }
//! ```
//!
//! Both flush every value read and every sum (`arith`'s subnormal rule).
//! CPU: threads over image rows; GPU: one thread per output element. The autodiff
//! (`backward.rs`) keeps `x`'s shape and runs `col2im`.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `im2col` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait Im2colOps: Backend {
    /// `[n, c, h, w] -> [n*h*w, c*k*k]`, stride 1, `pad` zeros each side.
    fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self>;
    /// The gradient of `det_im2col` with respect to its input of shape `dims`.
    fn det_col2im(
        dcols: FloatTensor<Self>,
        dims: [usize; 4],
        k: usize,
        pad: usize,
    ) -> FloatTensor<Self>;
}

/// The stride-1 convolution patch matrix `[n, c, h, w] -> [n*h*w, c*k*k]` with `pad` zeros on
/// each side; its backward is the fixed-order gather `col2im`.
pub fn im2col(x: Tensor<4>, k: usize, pad: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Im2colOps>::det_im2col(
        x.into_dispatch(),
        k,
        pad,
    ))
}
