//! GPU optimizer updates (CubeCL), one thread per element, the order of `optim`'s module doc.
//! Every read and every rounded value passes `pin` (flushed, and no compiler can fuse across it).

use crate::arith::gpu::{mad, pin, recip_fixed, sqrt_fixed};
use cubecl::prelude::*;

#[cube(launch)]
pub fn sgd_kernel(
    w: &Tensor<f32>,
    g: &Tensor<f32>,
    buf: &Tensor<f32>,
    w_out: &mut Tensor<f32>,
    buf_out: &mut Tensor<f32>,
    lr: f32,
    wd: f32,
    mu: f32,
    one: f32,
    #[comptime] decay: u32,
) {
    let i = ABSOLUTE_POS;
    if i >= w_out.len() {
        terminate!();
    }
    let wv = pin(w[i], one);
    let mut g1 = pin(g[i], one);
    if decay == 1 {
        g1 = mad(wv, wd, g1, one);
    }
    let b = mad(pin(buf[i], one), mu, g1, one);
    buf_out[i] = b;
    w_out[i] = pin(wv - pin(b * lr, one), one);
}

/// The scalars are `optim::AdamHyper` in order.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adam_kernel(
    w: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    w_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    lr: f32,
    wd: f32,
    b1: f32,
    b2: f32,
    omb1: f32,
    omb2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    lrwd: f32,
    one: f32,
    #[comptime] decay: u32,
) {
    let i = ABSOLUTE_POS;
    if i >= w_out.len() {
        terminate!();
    }
    let mut wv = pin(w[i], one);
    let mut g1 = pin(g[i], one);
    if decay == 1 {
        g1 = mad(wv, wd, g1, one);
    }
    let mv = pin(pin(pin(m[i], one) * b1, one) + pin(g1 * omb1, one), one);
    let gg = pin(g1 * g1, one);
    let vv = pin(pin(pin(v[i], one) * b2, one) + pin(gg * omb2, one), one);
    let den = pin(sqrt_fixed(pin(vv * c2, one), one) + eps, one);
    let u = pin(pin(mv * c1, one) * recip_fixed(den, one), one);
    if decay == 2 {
        wv = pin(wv - pin(wv * lrwd, one), one);
    }
    m_out[i] = mv;
    v_out[i] = vv;
    w_out[i] = pin(wv - pin(u * lr, one), one);
}
