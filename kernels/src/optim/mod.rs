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
//! writes new tensors — the same bits either way; it leaves out the flushes it proves cannot
//! change a value (`cpu::adam_chunk`: most of them for ordinary hyper-parameters), which the
//! tests check against this definition on tiny and subnormal values. GPU: one thread per element. A step is not
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

    /// The CPU update skips flushes it proves idle (`cpu::adam_chunk`); with values from the
    /// whole range — zeros, subnormals, `±MIN_POSITIVE`, magnitudes whose products and squares
    /// fall below it, near-cancelling `m*b1 + g*(1-b1)`, huge ones — and hyper-parameters on both
    /// sides of its `plain` test, in place and into new vectors, it must still give the bits of
    /// the fully flushed update (NaN payloads aside: not part of the contract).
    #[test]
    fn adam_skipping_idle_flushes_matches_the_fully_flushed_update_on_tiny_and_odd_values() {
        let mut h = 0x9e37_79b9u32;
        let mut next = move || {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            h
        };
        // Sign, binade and mantissa drawn apart; a tenth of the values special.
        let mut value = |nonneg: bool| -> f32 {
            let r = next();
            let special = [
                0.0,
                -0.0,
                f32::MIN_POSITIVE,
                -f32::MIN_POSITIVE,
                1e-40,
                -3e-39,
            ];
            let x = if r % 10 == 0 {
                special[(r / 10) as usize % special.len()]
            } else {
                let e = match (r >> 4) % 4 {
                    0 => -149 + ((r >> 8) % 50) as i32, // subnormal to 2^-100
                    1 => -75 + ((r >> 8) % 25) as i32,  // squares near the subnormal range
                    2 => -30 + ((r >> 8) % 35) as i32,  // ordinary
                    _ => 60 + ((r >> 8) % 40) as i32,   // huge
                };
                let mant = 1.0 + f64::from(next() >> 9) / f64::from(1u32 << 23);
                (mant * 2f64.powi(e)) as f32
            };
            if nonneg || r & (1 << 30) == 0 {
                x.abs()
            } else {
                -x.abs()
            }
        };
        let n = N;
        let w: Vec<f32> = (0..n).map(|_| value(false)).collect();
        let g: Vec<f32> = (0..n).map(|_| value(false)).collect();
        let mut m: Vec<f32> = (0..n).map(|_| value(false)).collect();
        let v: Vec<f32> = (0..n).map(|i| value(i % 50 != 0)).collect();
        let fl = |x: [f32; 10]| x.map(crate::arith::flush);
        // [lr, wd, b1, b2, 1-b1, 1-b2, c1, c2, eps, lr*wd]: the first four sets pass
        // `cpu::adam_any`'s `plain` test, each of the others fails one of its conditions.
        let sets: [(&str, AdamHyper); 13] = [
            (
                "typical",
                fl([1e-3, 0.1, 0.9, 0.999, 0.1, 0.001, 1.0, 1.0, 1e-8, 1e-4]),
            ),
            (
                "early steps",
                fl([3e-4, 0.01, 0.9, 0.99, 0.1, 0.01, 10.0, 100.0, 1e-8, 3e-6]),
            ),
            (
                "eps 0",
                fl([1.0, 1.0, 0.5, -1.0, 0.5, -0.5, 1.0, 1.0, 0.0, 1e-4]),
            ),
            (
                "tiny scalars",
                fl([
                    2e-38, 3e-30, 1e-20, 1e-37, 1e-36, 2e-38, 1.0, 1e30, 0.0, 1e-37,
                ]),
            ),
            (
                "c1 below 1",
                fl([1e-3, 0.1, 0.9, 0.999, 0.1, 0.001, 0.5, 1.0, 1e-8, 1e-4]),
            ),
            (
                "c2 below 1",
                fl([1e-3, 0.1, 0.9, 0.999, 0.1, 0.001, 1.0, 0.75, 0.0, 1e-4]),
            ),
            (
                "eps below 0",
                fl([1e-3, 0.1, 0.9, 0.999, 0.1, 0.001, 1.0, 1.0, -1e-30, 1e-4]),
            ),
            (
                "lr above 1",
                fl([4.0, 0.1, 0.9, 0.999, 0.1, 0.001, 1.0, 1.0, 1e-8, 0.4]),
            ),
            (
                "wd above 1",
                fl([1e-3, 3.0, 0.9, 0.999, 0.1, 0.001, 1.0, 1.0, 1e-8, 3e-3]),
            ),
            (
                "b1 above 1",
                fl([1e-3, 0.1, 1.25, 0.999, -0.25, 0.001, 1.0, 1.0, 1e-8, 1e-4]),
            ),
            (
                "b2 above 1",
                fl([1e-3, 0.1, 0.9, 1.5, 0.1, -0.5, 1.0, 1.0, 1e-8, 1e-4]),
            ),
            (
                "1-b1 above 1",
                fl([1e-3, 0.1, -0.5, 0.999, 1.5, 0.001, 1.0, 1.0, 1e-8, 1e-4]),
            ),
            (
                "1-b2 above 1",
                fl([1e-3, 0.1, 0.9, -0.5, 0.1, 1.5, 1.0, 1.0, 1e-8, 1e-4]),
            ),
        ];
        for (name, hp) in sets {
            // Near-cancelling first moments for a third of the elements: m*b1 ~ -g*(1-b1).
            for i in (0..n).step_by(3) {
                m[i] = (-(f64::from(g[i]) * f64::from(hp[4])) / f64::from(hp[2])) as f32;
            }
            for decay in [Decay::None, Decay::Coupled, Decay::Decoupled] {
                let want = adam_reference(&w, &g, &m, &v, hp, decay).map(canonical);
                let (wo, mo, vo) = cpu::adam(&w, &g, &m, &v, hp, decay);
                let new = first_difference([wo, mo, vo].map(canonical), &want);
                assert_eq!(new, None, "{name} {decay:?}: new vectors");
                let (mut wi, mut mi, mut vi) = (w.clone(), m.clone(), v.clone());
                cpu::adam_in_place(&mut wi, &g, &mut mi, &mut vi, hp, decay);
                let in_place = first_difference([wi, mi, vi].map(canonical), &want);
                assert_eq!(in_place, None, "{name} {decay:?}: in place");
            }
        }
    }

    /// The first `(output, index, got, want)` whose bits differ (`w`, `m`, `v` are outputs 0-2).
    fn first_difference(
        got: [Vec<u32>; 3],
        want: &[Vec<u32>; 3],
    ) -> Option<(usize, usize, f32, f32)> {
        (0..3).find_map(|o| {
            let i = got[o].iter().zip(&want[o]).position(|(a, b)| a != b)?;
            Some((o, i, f32::from_bits(got[o][i]), f32::from_bits(want[o][i])))
        })
    }

    /// Bits with every NaN as the one quiet NaN.
    fn canonical(x: Vec<f32>) -> Vec<u32> {
        x.into_iter()
            .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
            .collect()
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
