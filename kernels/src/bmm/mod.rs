//! `bmm`: batched matmul `[bt, m, k] x [bt, k, n] -> [bt, m, n]` (attention's `q·kᵀ` and
//! `att·v`), every output accumulated strictly in k order, exactly as `matmul`.
//!
//! Order (both sides, every backend), for each batch element `e`, row `i`, column `j`:
//! `acc = 0.0; for p in 0..k { acc = fl(fl(fl(a[e,i,p]) * fl(b[e,p,j])) + acc) };
//! out[e,i,j] = acc` (in the `fma` profile `acc = fl(fma(fl(a), fl(b), acc))`, as `matmul`),
//! `fl` = `arith::flush` after each rounding. No split-K, no tree: batch element `e` of `bmm` is
//! `matmul(a[e], b[e])` bit for bit, in the same profile (a batch of one gives `matmul`'s bits).
//!
//! - CPU (`cpu.rs`): threads over batch elements, each running `matmul`'s CPU code on one
//!   thread (`matmul::cpu::matmul_into`: its register tiles; a batch of one splits its rows over
//!   the threads instead), transposed views (`kᵀ`, the backward's) read in place; none of this
//!   changes any output's order.
//! - GPU: `matmul`'s two kernels in their batched form (`matmul::gpu`, `batched = true`; no
//!   kernel of its own): the tiled one, one cube layer per batch element, when both output dims
//!   are at least 32, else one thread per output element. Both read the inputs through their
//!   strides (the transposed views of the backward and of `q·kᵀ` cost no copy); reads, products
//!   and sums pass `arith::gpu::pin`. k runs in launches of 32768 steps, `acc` carried between
//!   them as f32 (`arith::gpu::LOOP_BLOCK`), as in `matmul`.
//!
//! Backward (`backward.rs`): `dA = G · Bᵀ`, `dB = Aᵀ · G` per batch element, both with this same
//! kernel (the transposes swap the last two dims: views, no arithmetic).

mod backward;
pub mod cpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `bmm` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait BmmOps: Backend {
    /// `[bt, m, k] x [bt, k, n] -> [bt, m, n]`, k in order; `fused`: the `fma` profile.
    fn det_bmm(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self>;
}

/// `a · b` per batch element, in the fixed k order, unfused: `[bt, m, k] x [bt, k, n] ->
/// [bt, m, n]`.
pub fn bmm(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    bmm_in(a, b, false)
}

/// `bmm` in the profile `fused` selects (`true`: one `fma` per step).
pub fn bmm_in(a: Tensor<3>, b: Tensor<3>, fused: bool) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as BmmOps>::det_bmm(
        a.into_dispatch(),
        b.into_dispatch(),
        fused,
    ))
}
