//! CPU im2col / col2im in the order of `im2col`'s module doc.

use crate::arith::{add, flush, flushed_if, needs_flush};
use rayon::prelude::*;

/// `x` `[n, c, h, w]` (`dims`) -> `[n*h*w, c*k*k]`.
pub fn im2col(x: &[f32], dims: [usize; 4], k: usize, pad: usize) -> Vec<f32> {
    let [n, c, h, w] = dims;
    assert!(x.len() == n * c * h * w, "im2col: shapes");
    // The gather copies values, so flushing the input once (only when it holds something to
    // flush) equals flushing every value read — at a ninth of the cost for k = 3.
    let x = &*flushed_if(needs_flush(x), x);
    let cols = c * k * k;
    let mut out = vec![0f32; n * h * w * cols];
    if out.is_empty() {
        return out;
    }
    // one task per image row (b, oy): w patch rows
    out.par_chunks_mut(w * cols)
        .enumerate()
        .for_each(|(row, o)| {
            let (b, oy) = (row / h, row % h);
            for ox in 0..w {
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (oy + ky, ox + kx);
                            let v = if iy >= pad && iy - pad < h && ix >= pad && ix - pad < w {
                                x[((b * c + ci) * h + iy - pad) * w + ix - pad]
                            } else {
                                0.0
                            };
                            o[ox * cols + (ci * k + ky) * k + kx] = v;
                        }
                    }
                }
            }
        });
    out
}

/// `dcols` `[n*h*w, c*k*k]` -> `dx` `[n, c, h, w]` (`dims`).
pub fn col2im(dcols: &[f32], dims: [usize; 4], k: usize, pad: usize) -> Vec<f32> {
    let [n, c, h, w] = dims;
    let cols = c * k * k;
    assert!(dcols.len() == n * h * w * cols, "col2im: shapes");
    let mut dx = vec![0f32; n * c * h * w];
    if dx.is_empty() {
        return dx;
    }
    // one task per input plane row (b, ci, iy)
    dx.par_chunks_mut(w).enumerate().for_each(|(row, d)| {
        let iy = row % h;
        let ci = (row / h) % c;
        let b = row / (h * c);
        for (ix, dv) in d.iter_mut().enumerate() {
            let mut acc = 0f32;
            for ky in 0..k {
                for kx in 0..k {
                    let (oy_p, ox_p) = (iy + pad, ix + pad);
                    if oy_p >= ky && oy_p - ky < h && ox_p >= kx && ox_p - kx < w {
                        let r = (b * h + oy_p - ky) * w + ox_p - kx;
                        acc = add(acc, flush(dcols[r * cols + (ci * k + ky) * k + kx]));
                    }
                }
            }
            *dv = acc;
        }
    });
    dx
}
