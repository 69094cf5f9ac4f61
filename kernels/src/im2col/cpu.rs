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
    // One task per image row (b, oy): its w patches, each written front to back. `out` starts
    // as zeros, so only entries inside the image are written: per (ci, ky) a source row, and
    // the `kx` range of the patch that lands inside it (all of it away from the edges).
    out.par_chunks_mut(w * cols)
        .enumerate()
        .for_each(|(row, o)| {
            let (b, oy) = (row / h, row % h);
            // ky with the source row iy = oy + ky - pad inside [0, h)
            let (ky_lo, ky_hi) = (pad.saturating_sub(oy), (h + pad - oy).min(k));
            for (ox, patch) in o.chunks_exact_mut(cols).enumerate() {
                // kx with ix = ox + kx - pad inside [0, w)
                let (lo, hi) = (pad.saturating_sub(ox), (w + pad - ox).min(k));
                if lo >= hi {
                    continue; // padding wider than the kernel: this patch is all zeros
                }
                for ci in 0..c {
                    let plane = &x[(b * c + ci) * h * w..][..h * w];
                    for ky in ky_lo..ky_hi {
                        let src = &plane[(oy + ky - pad) * w + ox + lo - pad..][..hi - lo];
                        let dst = &mut patch[(ci * k + ky) * k + lo..][..hi - lo];
                        // (a plain loop: `copy_from_slice` calls `memcpy` for these few values)
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = v;
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
    // One task per image: its patches' columns first copied out flushed, one contiguous run
    // per column (`t[col][patch]`), then every element's terms added in the module doc's
    // order — (ky, kx) outer here, so each element still sees ky-major, kx-minor — onto the
    // plane's zeros, a row at a time (the ranges keep only the patches inside the image).
    let hw = h * w;
    dx.par_chunks_mut(c * hw).enumerate().for_each(|(b, d)| {
        let img = &dcols[b * hw * cols..(b + 1) * hw * cols];
        let mut t = vec![0f32; cols * hw];
        for (p, patch) in img.chunks_exact(cols).enumerate() {
            for (col, &v) in patch.iter().enumerate() {
                t[col * hw + p] = flush(v);
            }
        }
        for (ci, plane) in d.chunks_exact_mut(hw).enumerate() {
            for (iy, row) in plane.chunks_exact_mut(w).enumerate() {
                for ky in 0..k {
                    let oy = iy + pad; // - ky: the patch row reading (iy, ky)
                    if oy < ky || oy - ky >= h {
                        continue;
                    }
                    for kx in 0..k {
                        let col = (ci * k + ky) * k + kx;
                        // ox = ix + pad - kx inside [0, w)
                        let (lo, hi) =
                            (kx.saturating_sub(pad), (w + kx).saturating_sub(pad).min(w));
                        if lo >= hi {
                            continue;
                        }
                        let src = &t[col * hw + (oy - ky) * w + lo + pad - kx..][..hi - lo];
                        for (r, &v) in row[lo..hi].iter_mut().zip(src) {
                            *r = add(*r, v);
                        }
                    }
                }
            }
        }
    });
    dx
}
