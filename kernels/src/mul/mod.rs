//! `mul`: the element-wise product of two same-shaped tensors, `y = fl(fl(a) * fl(b))` — one
//! rounding, flushed (`arith`'s subnormal rule). Dropout's mask multiply and the element-wise
//! backward passes (sigmoid, tanh, GELU) use it, so those products hold the same bits on a
//! device that flushes subnormals in hardware and on one that does not.
//!
//! Backward (`backward.rs`): `da = mul(g, b)`, `db = mul(g, a)`. No reduction. CPU: threads
//! over chunks; GPU: one thread per element.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `mul` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait MulOps: Backend {
    /// `a * b` element-wise, same shapes.
    fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a * b` element-wise (same shapes), flushed like every lockstep value.
pub fn mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as MulOps>::det_mul(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}
