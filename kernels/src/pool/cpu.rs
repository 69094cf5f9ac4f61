//! CPU pooling in the order of `pool`'s module doc.

use super::Pool;
use crate::arith::{add, flush, mul};
use rayon::prelude::*;

/// `[n, c, h, w]` as `planes = n * c`, `h`, `w`; returns `[planes, h / k, w / k]`.
pub fn forward(x: &[f32], planes: usize, h: usize, w: usize, k: usize, kind: Pool) -> Vec<f32> {
    assert!(k > 0 && x.len() == planes * h * w, "pool: shapes");
    let (ho, wo) = (h / k, w / k);
    let inv = Pool::inv(k);
    let mut out = vec![0f32; planes * ho * wo];
    if ho * wo == 0 {
        return out;
    }
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(p, y)| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let mut arg = vec![0u32; wo];
        for (oy, y) in y.chunks_exact_mut(wo).enumerate() {
            match kind {
                Pool::Max => max_row(xp, w, k, oy, y, &mut arg),
                Pool::Avg => {
                    y.fill(0.0);
                    for dy in 0..k {
                        let row = &xp[(oy * k + dy) * w..][..wo * k];
                        for dx in 0..k {
                            for (s, win) in y.iter_mut().zip(row.chunks_exact(k)) {
                                *s = add(*s, flush(win[dx]));
                            }
                        }
                    }
                    for s in y.iter_mut() {
                        *s = mul(*s, inv);
                    }
                }
            }
        }
    });
    out
}

/// The maxima (flushed values) of window row `oy` into `m` and their plane offsets into `arg`,
/// every window of the row at once: each window still makes the module doc's comparisons in
/// its order (`dy` outer, `dx` inner, strict `>`: ties and NaNs keep the earlier element), but
/// the loop runs across the row's windows, so it vectorises.
#[inline]
fn max_row(xp: &[f32], w: usize, k: usize, oy: usize, m: &mut [f32], arg: &mut [u32]) {
    if k == 2 {
        max_row_k::<2>(xp, w, k, oy, m, arg)
    } else {
        max_row_k::<0>(xp, w, k, oy, m, arg)
    }
}

/// `max_row` with the window size `K` fixed at compile time (2, the common case: the compiler
/// can then de-interleave the loads), or `K = 0` for `k` at run time.
#[inline(always)]
fn max_row_k<const K: usize>(
    xp: &[f32],
    w: usize,
    k: usize,
    oy: usize,
    m: &mut [f32],
    arg: &mut [u32],
) {
    let k = if K > 0 { K } else { k };
    let wo = m.len();
    for dy in 0..k {
        let top = (oy * k + dy) * w;
        let row = &xp[top..][..wo * k];
        for dx in 0..k {
            for (ox, ((m, a), win)) in m
                .iter_mut()
                .zip(arg.iter_mut())
                .zip(row.chunks_exact(k))
                .enumerate()
            {
                let v = flush(win[dx]);
                let at = (top + ox * k + dx) as u32;
                if dy == 0 && dx == 0 {
                    (*m, *a) = (v, at);
                } else {
                    let beats = v > *m;
                    *m = if beats { v } else { *m };
                    *a = if beats { at } else { *a };
                }
            }
        }
    }
}

/// Gradient with respect to `x` for incoming `dy` `[planes, h / k, w / k]`.
pub fn backward(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
    kind: Pool,
) -> Vec<f32> {
    let (ho, wo) = (h / k, w / k);
    assert!(
        k > 0 && x.len() == planes * h * w && dy.len() == planes * ho * wo,
        "pool: shapes"
    );
    assert!(
        h * w <= u32::MAX as usize,
        "pool: planes of at most 2^32 elements"
    );
    let inv = Pool::inv(k);
    let mut out = vec![0f32; planes * h * w];
    if h * w == 0 || ho * wo == 0 {
        return out;
    }
    // One task per plane; each window written once (`out` starts as zeros, which is what every
    // element outside a window and, under max, every element but a window's first maximum
    // gets).
    out.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let gp = &dy[p * ho * wo..(p + 1) * ho * wo];
        let (mut m, mut arg) = (vec![0f32; wo], vec![0u32; wo]);
        for (oy, g) in gp.chunks_exact(wo).enumerate() {
            match kind {
                Pool::Max => {
                    max_row(xp, w, k, oy, &mut m, &mut arg);
                    for (&a, &g) in arg.iter().zip(g) {
                        d[a as usize] = flush(g);
                    }
                }
                Pool::Avg => {
                    for (ox, &g) in g.iter().enumerate() {
                        let v = mul(flush(g), inv);
                        let base = oy * k * w + ox * k;
                        for dy in 0..k {
                            d[base + dy * w..base + dy * w + k].fill(v);
                        }
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_by_hand() {
        // one plane 3x5, k = 2: windows at rows 0-1, cols 0-1 and 2-3; row 2 and col 4 dropped.
        let x = [
            1.0, 5.0, 2.0, 2.0, 9.0, //
            3.0, 5.0, 0.0, -1.0, 9.0, //
            7.0, 7.0, 7.0, 7.0, 7.0,
        ];
        assert_eq!(forward(&x, 1, 3, 5, 2, Pool::Max), vec![5.0, 2.0]);
        assert_eq!(forward(&x, 1, 3, 5, 2, Pool::Avg), vec![3.5, 0.75]);
        let d = backward(&x, &[10.0, 20.0], 1, 3, 5, 2, Pool::Max);
        // ties: 5.0 at (0,1) and (1,1) -> the first; 2.0 at (0,2) and (0,3) -> the first.
        let mut want = vec![0.0; 15];
        want[1] = 10.0;
        want[2] = 20.0;
        assert_eq!(d, want);
        let d = backward(&x, &[10.0, 20.0], 1, 3, 5, 2, Pool::Avg);
        let want: Vec<f32> = (0..15)
            .map(|i| match (i / 5, i % 5) {
                (0..=1, 0..=1) => 2.5,
                (0..=1, 2..=3) => 5.0,
                _ => 0.0,
            })
            .collect();
        assert_eq!(d, want);
    }
}
