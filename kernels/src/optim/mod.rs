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
//! CPU: threads over fixed chunks of elements; Adam overwrites `w`, `m` and `v` in place when the
//! step holds their only references (flex; each element is read before it is written), else it
//! writes new tensors — the same bits either way. GPU: one thread per element. A step is not
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Length past two parallel chunks and one Adam stage, with a tail.
    const N: usize = 2 * 4096 + 300;

    fn values(seed: u32, scale: f32) -> Vec<f32> {
        let mut h = seed | 1;
        (0..N)
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 17;
                h ^= h << 5;
                ((h as f32 / u32::MAX as f32) - 0.5) * scale
            })
            .collect()
    }

    /// On flex the step overwrites `w`, `m` and `v` when it holds their only references, and
    /// writes new tensors when another reference exists: both give the bits of the written-out
    /// update (`adam_reference`), and a shared tensor is never changed.
    #[test]
    fn adam_in_place_and_into_new_tensors_give_the_same_bits_and_never_touch_shared_inputs() {
        let hp: AdamHyper =
            [1e-3, 0.1, 0.9, 0.99, 0.1, 0.01, 1.5, 2.5, 1e-8, 1e-4].map(crate::arith::flush);
        let (w, g, m, v) = (
            values(1, 2.0),
            values(2, 0.1),
            values(3, 0.01),
            values(4, 1e-4)
                .into_iter()
                .map(f32::abs)
                .collect::<Vec<_>>(),
        );
        for decay in [Decay::None, Decay::Coupled, Decay::Decoupled] {
            let want = adam_reference(&w, &g, &m, &v, hp, decay);
            for device in [Device::flex(), Device::ndarray()] {
                let t =
                    |x: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(x.clone(), [N]), &device);
                let host = |x: Tensor<1>| x.try_into_vec_as::<f32>().expect("f32");
                // Only references: updated in place on flex.
                let (wo, mo, vo) = adam_step(t(&w), t(&g), t(&m), t(&v), hp, decay);
                assert_eq!(
                    [host(wo), host(mo), host(vo)].map(bits),
                    want.clone().map(bits),
                    "{decay:?} unique"
                );
                // Shared (each input also held here): new tensors, the held ones unchanged.
                let (ws, ms, vs) = (t(&w), t(&m), t(&v));
                let (wo, mo, vo) = adam_step(ws.clone(), t(&g), ms.clone(), vs.clone(), hp, decay);
                assert_eq!(
                    [host(wo), host(mo), host(vo)].map(bits),
                    want.clone().map(bits),
                    "{decay:?} shared"
                );
                assert_eq!(
                    [host(ws), host(ms), host(vs)].map(bits),
                    [&w, &m, &v].map(|x| bits(x.clone())),
                    "{decay:?}: a shared input changed"
                );
            }
        }
    }

    fn bits(x: Vec<f32>) -> Vec<u32> {
        x.into_iter().map(f32::to_bits).collect()
    }

    /// `optim`'s module doc written out per element, one plain loop.
    fn adam_reference(
        w: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        hp: AdamHyper,
        decay: Decay,
    ) -> [Vec<f32>; 3] {
        use crate::arith::{add, flush, mad, mul, recip_fixed, sqrt_fixed, sub};
        let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp;
        let (mut wo, mut mo, mut vo) = (vec![], vec![], vec![]);
        for i in 0..w.len() {
            let (wi, gi) = (flush(w[i]), flush(g[i]));
            let g1 = if decay == Decay::Coupled {
                mad(wi, wd, gi)
            } else {
                gi
            };
            let mi = add(mul(flush(m[i]), b1), mul(g1, omb1));
            let vi = add(mul(flush(v[i]), b2), mul(mul(g1, g1), omb2));
            let t = recip_fixed(add(sqrt_fixed(mul(vi, c2)), eps));
            let u = mul(mul(mi, c1), t);
            let wd_applied = if decay == Decay::Decoupled {
                sub(wi, mul(wi, lrwd))
            } else {
                wi
            };
            wo.push(sub(wd_applied, mul(u, lr)));
            mo.push(mi);
            vo.push(vi);
        }
        [wo, mo, vo]
    }
}
