//! `unary`: `arith`'s element-wise functions (`arith::Unary`: exp, log, sigmoid, tanh, GELU,
//! GELU's derivative, reciprocal) on every element, `y[i] = f(x[i])`, with `f`'s arithmetic
//! exactly as `arith` states it (`exp_fixed`, `log_fixed`, ...); the `#[cube]` twins compute
//! the same bits. No reduction. CPU (`cpu.rs`): elements in order on one thread; GPU (`gpu.rs`):
//! one thread per element, one kernel for all seven (the function is a comptime code).
//!
//! Backward (`backward.rs`), every product through `mul`: exp `g * y`; log `g * recip_fixed(x)`
//! (no hardware division); sigmoid `g * (s * (1 - s))`; tanh `g * (1 - t * t)`; GELU
//! `g * gelu_grad_fixed(x)`. `1 - s` and `1 - t*t` are stock ops on flushed values in [0, 1]:
//! exact multiples of 2^-24 or more, never subnormal, so they need no flush. GELU's derivative
//! and the reciprocal (used by those backwards) have none of their own.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `unary` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait UnaryOps: Backend {
    /// Element-wise `arith::exp_fixed`.
    fn det_exp(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::log_fixed`.
    fn det_log(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::sigmoid_fixed`; backward `g * s * (1 - s)`.
    fn det_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::tanh_fixed`; backward `g * (1 - t * t)`.
    fn det_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::gelu_fixed` (erf GELU); backward multiplies by `det_gelu_grad`.
    fn det_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::gelu_grad_fixed`, the derivative of `det_gelu`.
    fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::recip_fixed` (no backward; log's backward multiplies by it).
    fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Element-wise `arith::exp_fixed`.
pub fn exp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UnaryOps>::det_exp(x.into_dispatch()))
}

/// Element-wise `arith::log_fixed`.
pub fn log<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UnaryOps>::det_log(x.into_dispatch()))
}

/// Element-wise `arith::sigmoid_fixed`.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UnaryOps>::det_sigmoid(x.into_dispatch()))
}

/// Element-wise `arith::tanh_fixed`.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UnaryOps>::det_tanh(x.into_dispatch()))
}

/// Element-wise `arith::gelu_fixed` (the erf GELU, as burn's `gelu`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UnaryOps>::det_gelu(x.into_dispatch()))
}
