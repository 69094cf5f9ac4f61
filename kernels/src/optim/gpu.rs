//! GPU optimizer updates (CubeCL), one thread per element, the order of `optim`'s module doc.
//! Every product passes `nc` before it is added, so no compiler can fuse it.

use crate::arith::gpu::nc;
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
    let wv = w[i];
    let mut g1 = g[i];
    if decay == 1 {
        g1 = nc(g1 + nc(wv * wd, one), one);
    }
    let b = nc(nc(buf[i] * mu, one) + g1, one);
    buf_out[i] = b;
    w_out[i] = nc(wv - nc(b * lr, one), one);
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
    let mut wv = w[i];
    let mut g1 = g[i];
    if decay == 1 {
        g1 = nc(g1 + nc(wv * wd, one), one);
    }
    let mv = nc(nc(m[i] * b1, one) + nc(g1 * omb1, one), one);
    let gg = nc(g1 * g1, one);
    let vv = nc(nc(v[i] * b2, one) + nc(gg * omb2, one), one);
    let den = nc(nc(f32::sqrt(nc(vv * c2, one)), one) + eps, one);
    let u = nc(nc(mv * c1, one) / den, one);
    if decay == 2 {
        wv = nc(wv - nc(wv * lrwd, one), one);
    }
    m_out[i] = mv;
    v_out[i] = vv;
    w_out[i] = nc(wv - nc(u * lr, one), one);
}
