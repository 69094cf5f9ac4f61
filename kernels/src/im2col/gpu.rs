//! GPU im2col / col2im (CubeCL) in the order of `im2col`'s module doc. Inputs are contiguous.

use crate::arith::gpu::{pin, zero};
use cubecl::prelude::*;

/// One thread per element of `cols` `[n*h*w, c*k*k]`; `x` is `[n, c, h, w]`.
#[cube(launch)]
pub fn im2col_kernel(
    x: &Tensor<f32>,
    out: &mut Tensor<f32>,
    one: f32,
    #[comptime] k: usize,
    #[comptime] pad: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let c = x.shape(1);
    let h = x.shape(2);
    let w = x.shape(3);
    let cols = out.shape(1);
    let r = pos / cols;
    let col = pos % cols;
    let ci = col / (k * k);
    let t = col % (k * k);
    let ky = t / k;
    let kx = t % k;
    let b = r / (h * w);
    let rem = r % (h * w);
    let iy = rem / w + ky;
    let ix = rem % w + kx;
    let mut v = 0.0f32;
    if iy >= pad && iy - pad < h && ix >= pad && ix - pad < w {
        v = pin(x[((b * c + ci) * h + iy - pad) * w + ix - pad], one);
    }
    out[pos] = v;
}

/// One thread per element of `dx` `[n, c, h, w]`; `dcols` is `[n*h*w, c*k*k]`.
#[cube(launch)]
pub fn col2im_kernel(
    dcols: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    one: f32,
    #[comptime] k: usize,
    #[comptime] pad: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos >= dx.len() {
        terminate!();
    }
    let c = dx.shape(1);
    let h = dx.shape(2);
    let w = dx.shape(3);
    let cols = dcols.shape(1);
    let ix = pos % w;
    let iy = (pos / w) % h;
    let ci = (pos / (w * h)) % c;
    let b = pos / (w * h * c);
    let oy_p = iy + pad;
    let ox_p = ix + pad;
    let mut acc = zero(one);
    for ky in 0..k {
        for kx in 0..k {
            if oy_p >= ky && oy_p - ky < h && ox_p >= kx && ox_p - kx < w {
                let r = (b * h + oy_p - ky) * w + ox_p - kx;
                acc = pin(
                    acc + pin(dcols[r * cols + (ci * k + ky) * k + kx], one),
                    one,
                );
            }
        }
    }
    dx[pos] = acc;
}
