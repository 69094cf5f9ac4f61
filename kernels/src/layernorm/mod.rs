//! `layernorm`: layer normalisation of each row of `[n, c]` with no affine part (the caller
//! multiplies by gamma and adds beta with other ops), forward and backward, from `arith`'s exact
//! pieces.
//!
//! `inv_c = f32(1 / c)` is computed on the host in f64 and rounded once (`cpu::inv_count`), and
//! passed to the kernels with `eps`. Per row, in this order on both sides:
//!
//! ```text
//! s    = 0; for j in 0..c: s = s + x[j]
//! mean = s * inv_c
//! v    = 0; for j in 0..c: d = x[j] - mean; v = mad(d, d, v)
//! var  = v * inv_c
//! rstd = rsqrt_fixed(var + eps)
//! y[j] = (x[j] - mean) * rstd                                         (forward)
//! ```
//!
//! Backward, for the incoming `dy`: the kernel keeps nothing from the forward but recomputes
//! `mean`, `rstd` and each `y[j]` from `x` with the lines above (the same bits as the forward's
//! output), then, per row:
//!
//! ```text
//! sg   = 0; sgy = 0; for j in 0..c: sg = sg + dy[j]; sgy = mad(dy[j], y[j], sgy)
//! mg   = sg * inv_c;  mgy = sgy * inv_c
//! dx[j] = rstd * ((dy[j] - mg) - y[j] * mgy)
//! ```
//!
//! i.e. `dx = rstd * (dy - mean(dy) - y * mean(dy * y))`, each mean an in-order row sum times
//! `inv_c`. `mad(a, b, c)` = fl(fl(a*b) + c); every read (`x`, `dy`, `eps`, `inv_c`), product,
//! sum and difference is flushed (`fl`, `arith`'s subnormal rule) on both sides; `rsqrt_fixed`
//! is `arith`'s Newton reciprocal square root (no hardware `sqrt` or division). CPU: threads
//! over blocks of 64 rows, 8 rows' in-order sums interleaved column by column (independent
//! chains side by side; each row's order unchanged); GPU: one thread per row (a row loops about 3c times forward and 4c backward:
//! rows of up to 16383 columns on lavapipe, see `arith::gpu::LOOP_BLOCK`). The autodiff
//! (`backward.rs`) keeps `x` and runs the backward above.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `layer_norm` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait LayerNormOps: Backend {
    /// Each row of `[n, c]` normalised to mean 0 and variance 1 (`eps` added to the variance).
    fn det_layer_norm(x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    /// The gradient of `det_layer_norm` with respect to `x` for the incoming `dy`.
    fn det_layer_norm_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;
}

/// Layer normalisation of each row of `[n, c]`, no affine part:
/// `(x - mean) * rsqrt(var + eps)`, the biased variance, in the order of the module doc.
pub fn layer_norm(x: Tensor<2>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as LayerNormOps>::det_layer_norm(
        x.into_dispatch(),
        eps,
    ))
}
