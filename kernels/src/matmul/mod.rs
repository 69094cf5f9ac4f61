//! `matmul`: `[m, k] x [k, n] -> [m, n]`, each output accumulated strictly in k order.
//!
//! Order (both sides, every backend), in the run's arithmetic profile (`train.arith`):
//!
//! - `unfused` (default): `acc = 0.0; for p in 0..k { acc = fl(fl(fl(a[i,p]) * fl(b[p,j])) +
//!   acc) }; out[i,j] = acc`;
//! - `fma`: `acc = 0.0; for p in 0..k { acc = fl(fma(fl(a[i,p]), fl(b[p,j]), acc)) }` with
//!   IEEE-754's fused multiply-add (the exact `a*b + acc`, rounded once);
//!
//! `fl` = `arith::flush` after each rounding (subnormals and `±MIN_POSITIVE` to signed zero).
//! No split-K, no tree: an output's k terms are added one after another, from p = 0.
//!
//! - CPU (`cpu.rs`), blocked like BLIS but never along the order: for each panel of 256
//!   columns and each block of 512 consecutive k steps (in order), the panel of `b` is packed
//!   once, flushed, into strips as wide as a register tile (its columns' exponents read from the
//!   packed copy); threads then take blocks of rows (multiples
//!   of 24), pack those rows' k block of `a` in groups as tall as a register tile, and run
//!   register tiles of `R x W` outputs over both (AVX-512: 12x32, AVX2: 6x16, portable: 4x8; 8 or 6
//!   rows x 8 when `n <= 8`, as a convolution's few output channels; row
//!   and column tails run the same tile over zero padding that is never stored). A tile loads its
//!   accumulators from the output, adds its k block's terms in order and stores them: between
//!   blocks an accumulator rests in memory as the same f32 — a pause, not a split. SIMD lanes run
//!   over output columns, so neither thread count, vector width nor tile shape can change any
//!   output's order (a unit test runs every tile, in both profiles, against the reference
//!   loops). A tile skips the flushes only when the smallest exponents of its rows of `a` and
//!   columns of `b` prove that no product or partial sum can come near the subnormal range
//!   (`cpu::SAFE_UNFUSED`, `cpu::SAFE_FUSED`): then the plain loop gives the flushed loop's bits.
//!   `fma` runs `f32::mul_add`: one `vfmadd` where the CPU has FMA3 (the tiles are compiled for
//!   it), a correctly rounded software `fmaf` elsewhere (slow, same bits). Transposed views
//!   (the backward's `Bᵀ` and `Aᵀ`, the tied LM head's `wteᵀ`) are read in place by the
//!   two packings (exact copies: no arithmetic).
//! - GPU (`gpu.rs`): when both output dims are at least 32, the tiled kernel: a cube of 16 x 16
//!   units computes a 64 x 64 block of outputs, each unit a 4 x 4 register tile; k advances 16
//!   steps at a time through shared-memory panels of `a` and `b` loaded by the whole cube, and
//!   every register adds its steps one after another (no split-K, no atomics, padded steps never
//!   run). Smaller products take the naive kernel, one unit per output. Both read the inputs
//!   through their strides (transposed views in backward cost no copy) and give the same bits
//!   (each is tested against the CPU loop); reads, products and sums pass `arith::gpu::pin`
//!   (`fma`: `pin(fma(a, b, acc))`, whose single rounding the start-up probe checks:
//!   `arith.lockstep_fma`). k runs in launches of 32768 steps, `acc` carried between them as f32
//!   (`arith::gpu::LOOP_BLOCK`).
//!
//! Backward (`backward.rs`): `dA = G · Bᵀ`, `dB = Aᵀ · G`, both with this same kernel and
//! profile, so gradients keep the same fixed order.

mod backward;
pub mod cpu;
pub mod gpu;
pub(crate) mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `matmul` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait MatmulOps: Backend {
    /// `[m, k] x [k, n] -> [m, n]`, k in order; `fused`: the `fma` profile.
    fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self>;
}

/// `a · b` in the fixed k order, unfused (two roundings per step).
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    matmul_in(a, b, false)
}

/// `a · b` in the fixed k order, in the profile `fused` selects (`true`: one `fma` per step).
pub fn matmul_in(a: Tensor<2>, b: Tensor<2>, fused: bool) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as MatmulOps>::det_matmul(
        a.into_dispatch(),
        b.into_dispatch(),
        fused,
    ))
}
