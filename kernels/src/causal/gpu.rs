//! GPU causal softmax (CubeCL), one thread per row, the order of `causal`'s module doc. Inputs
//! are contiguous `[r, t]` (the host makes them so); row `i` is query `i % t`.

use crate::arith::gpu::{exp_fixed, mad, pin, recip_fixed, zero};
use cubecl::prelude::*;

#[cube(launch)]
pub fn causal_softmax_forward_kernel(x: &Tensor<f32>, y: &mut Tensor<f32>, scale: f32, one: f32) {
    let i = ABSOLUTE_POS;
    let t = x.shape(1);
    if i >= x.shape(0) {
        terminate!();
    }
    let base = i * t;
    let q = i % t;
    let sc = pin(scale, one);
    let mut mx = pin(pin(x[base], one) * sc, one);
    for j in 1..q + 1 {
        let v = pin(pin(x[base + j], one) * sc, one);
        mx = select(v > mx, v, mx);
    }
    let mut s = zero(one);
    for j in 0..q + 1 {
        let z = pin(pin(x[base + j], one) * sc, one);
        s = pin(s + exp_fixed(pin(z - mx, one), one), one);
    }
    let r = recip_fixed(s, one);
    for j in 0..q + 1 {
        let z = pin(pin(x[base + j], one) * sc, one);
        y[base + j] = pin(exp_fixed(pin(z - mx, one), one) * r, one);
    }
    for j in q + 1..t {
        y[base + j] = zero(one);
    }
}

#[cube(launch)]
pub fn causal_softmax_backward_kernel(
    y: &Tensor<f32>,
    g: &Tensor<f32>,
    d: &mut Tensor<f32>,
    scale: f32,
    one: f32,
) {
    let i = ABSOLUTE_POS;
    let t = y.shape(1);
    if i >= y.shape(0) {
        terminate!();
    }
    let base = i * t;
    let q = i % t;
    let sc = pin(scale, one);
    let mut dot = zero(one);
    for j in 0..q + 1 {
        dot = mad(pin(g[base + j], one), pin(y[base + j], one), dot, one);
    }
    for j in 0..q + 1 {
        let yj = pin(y[base + j], one);
        let t1 = pin(yj * pin(pin(g[base + j], one) - dot, one), one);
        d[base + j] = pin(sc * t1, one);
    }
    for j in q + 1..t {
        d[base + j] = zero(one);
    }
}
