//! GPU layer normalisation (CubeCL), one thread per row, the order of `layernorm`'s module doc.
//! Inputs are contiguous `[m, c]` (the host makes them so); `inv_c = f32(1 / c)` comes from the
//! host.

use crate::arith::gpu::{mad, pin, rsqrt_fixed, zero};
use cubecl::prelude::*;

/// Row `base .. base + c`'s `(mean, rstd)`, j in order; `inv_c` and `eps` already pinned.
#[cube]
pub fn row_stats(
    x: &Tensor<f32>,
    base: usize,
    c: usize,
    inv_c: f32,
    eps: f32,
    one: f32,
) -> (f32, f32) {
    let mut s = zero(one);
    for j in 0..c {
        s = pin(s + pin(x[base + j], one), one);
    }
    let mean = pin(s * inv_c, one);
    let mut v = zero(one);
    for j in 0..c {
        let d = pin(pin(x[base + j], one) - mean, one);
        v = mad(d, d, v, one);
    }
    let var = pin(v * inv_c, one);
    (mean, rsqrt_fixed(pin(var + eps, one), one))
}

/// `y = (x - mean) * rstd`, each rounding pinned.
#[cube]
fn normalized(x: f32, mean: f32, rstd: f32, one: f32) -> f32 {
    pin(pin(pin(x, one) - mean, one) * rstd, one)
}

#[cube(launch)]
pub fn layer_norm_forward_kernel(
    x: &Tensor<f32>,
    y: &mut Tensor<f32>,
    inv_c: f32,
    eps: f32,
    one: f32,
) {
    let i = ABSOLUTE_POS;
    let c = x.shape(1);
    if i >= x.shape(0) {
        terminate!();
    }
    let base = i * c;
    let inv_c = pin(inv_c, one);
    let eps = pin(eps, one);
    let (mean, rstd) = row_stats(x, base, c, inv_c, eps, one);
    for j in 0..c {
        y[base + j] = normalized(x[base + j], mean, rstd, one);
    }
}

#[cube(launch)]
pub fn layer_norm_backward_kernel(
    x: &Tensor<f32>,
    g: &Tensor<f32>,
    d: &mut Tensor<f32>,
    inv_c: f32,
    eps: f32,
    one: f32,
) {
    let i = ABSOLUTE_POS;
    let c = x.shape(1);
    if i >= x.shape(0) {
        terminate!();
    }
    let base = i * c;
    let inv_c = pin(inv_c, one);
    let eps = pin(eps, one);
    let (mean, rstd) = row_stats(x, base, c, inv_c, eps, one);
    let mut sg = zero(one);
    let mut sgy = zero(one);
    for j in 0..c {
        let gj = pin(g[base + j], one);
        let yj = normalized(x[base + j], mean, rstd, one);
        sg = pin(sg + gj, one);
        sgy = mad(gj, yj, sgy, one);
    }
    let mg = pin(sg * inv_c, one);
    let mgy = pin(sgy * inv_c, one);
    for j in 0..c {
        let gj = pin(g[base + j], one);
        let yj = normalized(x[base + j], mean, rstd, one);
        let t = pin(pin(gj - mg, one) - pin(yj * mgy, one), one);
        d[base + j] = pin(rstd * t, one);
    }
}
