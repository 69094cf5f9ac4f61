//! GPU softmax cross-entropy (CubeCL), one thread per row, the order of `xent`'s module doc.

use crate::arith::gpu::{exp_fixed, log_fixed, mad_nc, nc, recip_fixed};
use cubecl::prelude::*;

/// Row maximum and `sum_j exp_fixed(x[j] - max)` of row `base .. base + c`, j in order.
#[cube]
pub fn row_stats(x: &Tensor<f32>, base: usize, c: usize, one: f32) -> (f32, f32) {
    let mut mx = x[base];
    for j in 1..c {
        let v = x[base + j];
        mx = select(v > mx, v, mx);
    }
    let mut s = 0.0f32;
    for j in 0..c {
        s = nc(s + exp_fixed(nc(x[base + j] - mx, one), one), one);
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
    let lse = nc(log_fixed(s, one) + mx, one);
    let mut dot = 0.0f32;
    for j in 0..c {
        dot = mad_nc(x[base + j], t[base + j], dot, one);
    }
    nll[i] = nc(lse - dot, one);
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
    let gi = g[i];
    for j in 0..c {
        let e = exp_fixed(nc(x[base + j] - mx, one), one);
        d[base + j] = nc(mad_nc(e, r, -t[base + j], one) * gi, one);
    }
}
