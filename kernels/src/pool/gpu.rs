//! GPU pooling (CubeCL) in the order of `pool`'s module doc. Inputs are contiguous
//! `[n, c, h, w]` (the host makes them so); `kind` 0 = max, 1 = avg.

use crate::arith::gpu::{pin, zero};
use cubecl::prelude::*;

/// Plane offset of the maximum of the window at `base`, ties to the earliest (module doc).
#[cube]
fn argmax(x: &Tensor<f32>, base: usize, w: usize, one: f32, #[comptime] k: usize) -> usize {
    let mut m = pin(x[base], one);
    let mut arg = base;
    for dy in 0..k {
        for dx in 0..k {
            let j = base + dy * w + dx;
            let v = pin(x[j], one);
            if v > m {
                m = v;
                arg = j;
            }
        }
    }
    arg
}

/// One thread per output element.
#[cube(launch)]
pub fn pool_forward_kernel(
    x: &Tensor<f32>,
    y: &mut Tensor<f32>,
    inv: f32,
    one: f32,
    #[comptime] k: usize,
    #[comptime] kind: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    let h = x.shape(2);
    let w = x.shape(3);
    let ho = y.shape(2);
    let wo = y.shape(3);
    let ox = pos % wo;
    let t = pos / wo;
    let oy = t % ho;
    let plane = t / ho;
    let base = plane * h * w + oy * k * w + ox * k;
    if kind == 0 {
        y[pos] = pin(x[argmax(x, base, w, one, k)], one);
    } else {
        let mut s = zero(one);
        for dy in 0..k {
            for dx in 0..k {
                s = pin(s + pin(x[base + dy * w + dx], one), one);
            }
        }
        y[pos] = pin(s * inv, one);
    }
}

/// One thread per input element: gathers its own gradient (no atomics).
#[cube(launch)]
pub fn pool_backward_kernel(
    x: &Tensor<f32>,
    g: &Tensor<f32>,
    d: &mut Tensor<f32>,
    inv: f32,
    one: f32,
    #[comptime] k: usize,
    #[comptime] kind: u32,
) {
    let i = ABSOLUTE_POS;
    if i >= d.len() {
        terminate!();
    }
    let h = x.shape(2);
    let w = x.shape(3);
    let ho = g.shape(2);
    let wo = g.shape(3);
    let xx = i % w;
    let t = i / w;
    let yy = t % h;
    let plane = t / h;
    let oy = yy / k;
    let ox = xx / k;
    if oy >= ho || ox >= wo {
        d[i] = 0.0f32;
    } else {
        let gv = pin(g[plane * ho * wo + oy * wo + ox], one);
        if kind == 0 {
            let arg = argmax(x, plane * h * w + oy * k * w + ox * k, w, one, k);
            d[i] = select(arg == i, gv, 0.0f32);
        } else {
            d[i] = pin(gv * inv, one);
        }
    }
}
