//! GPU softmax / log-softmax (CubeCL), one thread per row, the order of `softmax`'s module doc.
//! Inputs are contiguous `[m, c]` (the host makes them so); `log` is 0 or 1.

use crate::arith::gpu::{exp_fixed, log_fixed, mad_nc, nc, recip_fixed};
use crate::xent::gpu::row_stats;
use cubecl::prelude::*;

#[cube(launch)]
pub fn softmax_forward_kernel(
    x: &Tensor<f32>,
    y: &mut Tensor<f32>,
    one: f32,
    #[comptime] log: u32,
) {
    let i = ABSOLUTE_POS;
    let c = x.shape(1);
    if i >= x.shape(0) {
        terminate!();
    }
    let base = i * c;
    let (mx, s) = row_stats(x, base, c, one);
    if log == 1 {
        let l = log_fixed(s, one);
        for j in 0..c {
            y[base + j] = nc(nc(x[base + j] - mx, one) - l, one);
        }
    } else {
        let r = recip_fixed(s, one);
        for j in 0..c {
            let e = exp_fixed(nc(x[base + j] - mx, one), one);
            y[base + j] = nc(e * r, one);
        }
    }
}

#[cube(launch)]
pub fn softmax_backward_kernel(
    y: &Tensor<f32>,
    g: &Tensor<f32>,
    d: &mut Tensor<f32>,
    one: f32,
    #[comptime] log: u32,
) {
    let i = ABSOLUTE_POS;
    let c = y.shape(1);
    if i >= y.shape(0) {
        terminate!();
    }
    let base = i * c;
    if log == 1 {
        let mut sg = 0.0f32;
        for j in 0..c {
            sg = nc(sg + g[base + j], one);
        }
        for j in 0..c {
            d[base + j] = mad_nc(exp_fixed(y[base + j], one), -sg, g[base + j], one);
        }
    } else {
        let mut dot = 0.0f32;
        for j in 0..c {
            dot = mad_nc(g[base + j], y[base + j], dot, one);
        }
        for j in 0..c {
            d[base + j] = nc(y[base + j] * nc(g[base + j] - dot, one), one);
        }
    }
}
