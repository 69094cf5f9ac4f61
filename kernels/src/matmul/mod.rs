//! `matmul`: `[m, k] x [k, n] -> [m, n]`, each output accumulated strictly in k order.
//!
//! Order (both sides, every backend): `acc = 0.0; for p in 0..k { acc = fl(fl(fl(a[i,p]) *
//! fl(b[p,j])) + acc) }; out[i,j] = acc`, `fl` = `arith::flush` after each rounding (subnormals
//! and `±MIN_POSITIVE` to signed zero). No split-K, no blocking along k, no tree.
//!
//! - CPU (`cpu.rs`): threads split over blocks of 8 output rows; inside a block, register tiles
//!   of `R x W` outputs (AVX-512: 8x32, AVX2: 4x16, portable: 4x8, then 16- and 8-column and
//!   scalar edges) keep one accumulator per output in a register for the whole k loop. SIMD lanes
//!   run over output columns, so neither thread count, vector width nor tile shape can change
//!   any output's order (a unit test runs every tile against the reference loop). A tile skips the
//!   flushes only when the smallest exponents of its rows of `a` and columns of `b` prove that no
//!   product or partial sum can come near the subnormal range (`cpu::SAFE_UNFUSED`): then the
//!   plain loop gives the flushed loop's bits. The `fused` flag replaces the multiply-add with
//!   `mul_add` (one rounding; no config selects it).
//! - GPU (`gpu.rs`): one thread per output element, reading both inputs through their strides
//!   (transposed views in backward cost no copy); reads, products and sums pass `arith::gpu::pin`. k runs in
//!   launches of 32768 steps, `acc` carried between them as f32 (`arith::gpu::LOOP_BLOCK`).
//!
//! Backward (`backward.rs`): `dA = G · Bᵀ`, `dB = Aᵀ · G`, both with this same kernel, so
//! gradients keep the same fixed order.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `matmul` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait MatmulOps: Backend {
    /// `[m, k] x [k, n] -> [m, n]`, k in order.
    fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a · b` in the fixed k order.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as MatmulOps>::det_matmul(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}
