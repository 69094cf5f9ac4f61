//! GPU softmax / log-softmax (CubeCL), one thread per row, the order of `softmax`'s module doc.
//! Inputs are contiguous `[m, c]` (the host makes them so); `log` is 0 or 1.

use crate::arith::gpu::{exp_fixed, log_fixed, mad, pin, recip_fixed, zero};
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
            y[base + j] = pin(pin(pin(x[base + j], one) - mx, one) - l, one);
        }
    } else {
        let r = recip_fixed(s, one);
        for j in 0..c {
            let e = exp_fixed(pin(pin(x[base + j], one) - mx, one), one);
            y[base + j] = pin(e * r, one);
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
        let mut sg = zero(one);
        for j in 0..c {
            sg = pin(sg + pin(g[base + j], one), one);
        }
        for j in 0..c {
            let gj = pin(g[base + j], one);
            d[base + j] = mad(exp_fixed(y[base + j], one), -sg, gj, one);
        }
    } else {
        let mut dot = zero(one);
        for j in 0..c {
            dot = mad(pin(g[base + j], one), pin(y[base + j], one), dot, one);
        }
        for j in 0..c {
            let yj = pin(y[base + j], one);
            d[base + j] = pin(yj * pin(pin(g[base + j], one) - dot, one), one);
        }
    }
}
