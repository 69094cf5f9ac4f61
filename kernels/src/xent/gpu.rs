//! GPU softmax cross-entropy (CubeCL), one thread per row, the order of `xent`'s module doc.

use crate::arith::gpu::{exp_fixed, log_fixed, mad, pin, recip_fixed, zero};
use cubecl::prelude::*;

/// Row maximum and `sum_j exp_fixed(x[j] - max)` of row `base .. base + c`, j in order.
#[cube]
pub fn row_stats(x: &Tensor<f32>, base: usize, c: usize, one: f32) -> (f32, f32) {
    let mut mx = pin(x[base], one);
    for j in 1..c {
        let v = pin(x[base + j], one);
        mx = select(v > mx, v, mx);
    }
    let mut s = zero(one);
    for j in 0..c {
        s = pin(
            s + exp_fixed(pin(pin(x[base + j], one) - mx, one), one),
            one,
        );
    }
    (mx, s)
}

/// Inputs are contiguous `[m, c]` (the host makes them so).
#[cube(launch)]
pub fn xent_forward_kernel(x: &Tensor<f32>, t: &Tensor<f32>, nll: &mut Tensor<f32>, one: f32) {
    let i = ABSOLUTE_POS;
    if i >= nll.len() {
        terminate!();
    }
    let c = x.shape(1);
    let base = i * c;
    let (mx, s) = row_stats(x, base, c, one);
    let lse = pin(log_fixed(s, one) + mx, one);
    let mut dot = zero(one);
    for j in 0..c {
        dot = mad(pin(x[base + j], one), pin(t[base + j], one), dot, one);
    }
    nll[i] = pin(lse - dot, one);
}

#[cube(launch)]
pub fn xent_backward_kernel(
    x: &Tensor<f32>,
    t: &Tensor<f32>,
    g: &Tensor<f32>,
    d: &mut Tensor<f32>,
    one: f32,
) {
    let i = ABSOLUTE_POS;
    if i >= g.len() {
        terminate!();
    }
    let c = x.shape(1);
    let base = i * c;
    let (mx, s) = row_stats(x, base, c, one);
    let r = recip_fixed(s, one);
    let gi = pin(g[i], one);
    for j in 0..c {
        let e = exp_fixed(pin(pin(x[base + j], one) - mx, one), one);
        d[base + j] = pin(mad(e, r, -pin(t[base + j], one), one) * gi, one);
    }
}
