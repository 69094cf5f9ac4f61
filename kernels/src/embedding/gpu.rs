//! GPU gather and segmented sum (CubeCL), one thread per output element (`embedding`'s module
//! doc). Integer inputs arrive as exact f32.

use crate::arith::gpu::{pin, zero};
use cubecl::prelude::*;

/// `out[r, c] = pin(+0 + pin(table[ids[r], c]))`.
#[cube(launch)]
pub fn gather_kernel(table: &Tensor<f32>, ids: &Tensor<f32>, out: &mut Tensor<f32>, one: f32) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let c = out.shape(1);
    let v = u32::cast_from(ids[pos / c]) as usize;
    out[pos] = pin(zero(one) + pin(table[v * c + pos % c], one), one);
}

/// `out[v, c]`: `+0`, then `g[r, c]` added for each `r` of `order[offsets[v]..offsets[v + 1]]`
/// in that order.
#[cube(launch)]
pub fn segment_sum_kernel(
    g: &Tensor<f32>,
    order: &Tensor<f32>,
    offsets: &Tensor<f32>,
    out: &mut Tensor<f32>,
    one: f32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let c = out.shape(1);
    let v = pos / c;
    let col = pos % c;
    let lo = u32::cast_from(offsets[v]) as usize;
    let hi = u32::cast_from(offsets[v + 1]) as usize;
    let mut acc = zero(one);
    for i in lo..hi {
        let r = u32::cast_from(order[i]) as usize;
        acc = pin(acc + pin(g[r * c + col], one), one);
    }
    out[pos] = acc;
}
