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
        for oy in 0..ho {
            for ox in 0..wo {
                let base = oy * k * w + ox * k;
                y[oy * wo + ox] = match kind {
                    Pool::Max => flush(xp[argmax(xp, base, w, k)]),
                    Pool::Avg => {
                        let mut s = 0f32;
                        for dy in 0..k {
                            for dx in 0..k {
                                s = add(s, flush(xp[base + dy * w + dx]));
                            }
                        }
                        mul(s, inv)
                    }
                };
            }
        }
    });
    out
}

/// The window at `base` (plane offset): index of its maximum over the flushed values, ties to
/// the earliest (module doc).
#[inline]
fn argmax(xp: &[f32], base: usize, w: usize, k: usize) -> usize {
    let (mut m, mut arg) = (flush(xp[base]), base);
    for dy in 0..k {
        for dx in 0..k {
            let j = base + dy * w + dx;
            let v = flush(xp[j]);
            if v > m {
                m = v;
                arg = j;
            }
        }
    }
    arg
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
    let inv = Pool::inv(k);
    let mut out = vec![0f32; planes * h * w];
    if h * w == 0 {
        return out;
    }
    // One task per plane; each window written once (`out` starts as zeros, which is what every
    // element outside a window and, under max, every element but a window's first maximum
    // gets).
    out.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let gp = &dy[p * ho * wo..(p + 1) * ho * wo];
        for oy in 0..ho {
            for ox in 0..wo {
                let base = oy * k * w + ox * k;
                let g = flush(gp[oy * wo + ox]);
                match kind {
                    Pool::Max => d[argmax(xp, base, w, k)] = g,
                    Pool::Avg => {
                        let v = mul(g, inv);
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
