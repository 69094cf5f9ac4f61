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

#[cfg(test)]
mod tests {
    use super::*;

    /// The module doc's definitions as plain loops.
    fn reference(x: &[f32], dims: [usize; 4], k: usize, pad: usize) -> (Vec<f32>, Vec<f32>) {
        let [n, c, h, w] = dims;
        let cols = c * k * k;
        let inside = |p: usize, q: usize| p >= pad && p - pad < h && q >= pad && q - pad < w;
        let mut out = vec![0f32; n * h * w * cols];
        for b in 0..n {
            for oy in 0..h {
                for ox in 0..w {
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy + ky, ox + kx);
                                if inside(iy, ix) {
                                    out[((b * h + oy) * w + ox) * cols + (ci * k + ky) * k + kx] =
                                        flush(x[((b * c + ci) * h + iy - pad) * w + ix - pad]);
                                }
                            }
                        }
                    }
                }
            }
        }
        // col2im of `x` reused as the incoming gradient (any values do).
        let dcols: Vec<f32> = (0..n * h * w * cols).map(|i| x[i % x.len()]).collect();
        let mut dx = vec![0f32; n * c * h * w];
        for b in 0..n {
            for ci in 0..c {
                for iy in 0..h {
                    for ix in 0..w {
                        let mut acc = 0f32;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (oy, ox) = (iy + pad, ix + pad);
                                if oy >= ky && oy - ky < h && ox >= kx && ox - kx < w {
                                    let r = (b * h + oy - ky) * w + ox - kx;
                                    acc = add(acc, flush(dcols[r * cols + (ci * k + ky) * k + kx]));
                                }
                            }
                        }
                        dx[((b * c + ci) * h + iy) * w + ix] = acc;
                    }
                }
            }
        }
        (out, dx)
    }

    /// Gather and fixed-order sums against the plain loops, bitwise: odd shapes, kernels wider
    /// than the image, padding 0 to past the kernel, and values that cancel, underflow or are
    /// subnormal (flushed on read and after every sum).
    #[test]
    fn im2col_and_col2im_match_the_plain_loops_bitwise() {
        let mut h = 0x2545_f491u32;
        let mut next = move || {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            h
        };
        for (dims, k, pad) in [
            ([2, 3, 5, 7], 3, 1),
            ([1, 1, 4, 4], 1, 0),
            ([3, 2, 6, 5], 5, 2),
            ([2, 2, 3, 3], 5, 3),
            ([1, 2, 2, 9], 3, 0),
            ([2, 1, 1, 1], 3, 1),
            ([1, 2, 3, 4], 1, 2),
            ([2, 1, 2, 3], 2, 4),
        ] {
            let [n, c, hh, w] = dims;
            let x: Vec<f32> = (0..n * c * hh * w)
                .map(|_| {
                    let r = next();
                    match r % 7 {
                        0 => f32::from_bits(r >> 10),  // subnormal
                        1 => -f32::MIN_POSITIVE * 1.5, // sums with it cancel into the tiny range
                        2 => f32::MIN_POSITIVE * 1.25,
                        _ => (r as f32 / u32::MAX as f32) - 0.5,
                    }
                })
                .collect();
            let (want_cols, want_dx) = reference(&x, dims, k, pad);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let cols = im2col(&x, dims, k, pad);
            assert_eq!(
                bits(&cols),
                bits(&want_cols),
                "im2col {dims:?} k {k} pad {pad}"
            );
            let cols = c * k * k;
            let dcols: Vec<f32> = (0..n * hh * w * cols).map(|i| x[i % x.len()]).collect();
            let dx = col2im(&dcols, dims, k, pad);
            assert_eq!(bits(&dx), bits(&want_dx), "col2im {dims:?} k {k} pad {pad}");
        }
    }
}
