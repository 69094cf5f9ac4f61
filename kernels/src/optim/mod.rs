//! `optim`: fused optimizer updates, one pass per parameter tensor, element-wise (no reductions).
//!
//! lockstep's own optimizer arithmetic, built from `+ - *` only (`arith`'s contract: no hardware
//! `sqrt` or `/`, which real GPUs do not round correctly). Per element, in this order on both
//! sides; every read and every rounded value is flushed (`arith`'s subnormal rule), `mad(a, b,
//! c)` is `fl(fl(a*b) + c)`:
//!
//! ```text
//! SGD     g1 = decay ? mad(w, wd, g) : g
//!         buf = mad(buf, mu, g1)
//!         w  = w - buf*lr
//! Adam(W) g1 = coupled ? mad(w, wd, g) : g                      (Adam's L2 term)
//!         m  = m*b1 + g1*(1-b1)                                  (two rounded products, one add)
//!         v  = v*b2 + (g1*g1)*(1-b2)
//!         u  = (m*c1) * recip_fixed(sqrt_fixed(v*c2) + eps)      c1 = 1/(1-b1^t), c2 = 1/(1-b2^t)
//!         w  = decoupled ? w - w*(lr*wd) : w                     (AdamW's decay, applied first)
//!         w  = w - u*lr
//! ```
//!
//! `sqrt_fixed` and `recip_fixed` are `arith`'s Newton iterations (a few ULP from the correctly
//! rounded values, the same bits everywhere), so the lockstep Adam differs from the stock
//! tensor-op update (`lockstep_train::optim`, hardware `sqrt` and `/`) within the declared
//! `adam_update` tolerance; SGD uses neither and equals the stock update bit for bit. The scalars
//! (`1-b1`, `c1`, `lr*wd`, ...) are computed once on the host exactly as the stock path does (f64
//! then one rounding to f32, or one f32 product) and flushed like any input.
//! CPU: threads over fixed chunks of elements; GPU: one thread per element. A step is not
//! differentiable (`backward.rs` runs it on the inner backend, untracked).

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `optim` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait OptimOps: Backend {
    /// One SGD-momentum step: `(w, g, buf) -> (w, buf)`.
    fn det_sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        hp: SgdHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// One Adam / AdamW step: `(w, g, m, v) -> (w, m, v)`.
    fn det_adam_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// One fused SGD-momentum step: returns the new `(w, buf)`.
pub fn sgd_step(
    w: Tensor<1>,
    g: Tensor<1>,
    buf: Tensor<1>,
    hp: SgdHyper,
    decay: Decay,
) -> (Tensor<1>, Tensor<1>) {
    let (w, b) = <Dispatch as OptimOps>::det_sgd_step(
        w.into_dispatch(),
        g.into_dispatch(),
        buf.into_dispatch(),
        hp.map(crate::arith::flush),
        decay,
    );
    (Tensor::from_dispatch(w), Tensor::from_dispatch(b))
}

/// One fused Adam / AdamW step: returns the new `(w, m, v)`.
pub fn adam_step(
    w: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    hp: AdamHyper,
    decay: Decay,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (w, m, v) = <Dispatch as OptimOps>::det_adam_step(
        w.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        hp.map(crate::arith::flush),
        decay,
    );
    (
        Tensor::from_dispatch(w),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Weight-decay mode (the GPU kernels take it as a comptime code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// No decay.
    None = 0,
    /// `g += wd * w` before the update (SGD, Adam).
    Coupled = 1,
    /// `w -= lr * wd * w` before the update (AdamW).
    Decoupled = 2,
}

/// SGD hyper-parameters as the kernels read them: `[lr, wd, mu]`.
pub type SgdHyper = [f32; 3];

/// Adam hyper-parameters as the kernels read them:
/// `[lr, wd, b1, b2, 1-b1, 1-b2, c1, c2, eps, lr*wd]`.
pub type AdamHyper = [f32; 10];
