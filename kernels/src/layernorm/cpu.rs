//! CPU layer normalisation in the order of `layernorm`'s module doc.

// The row groups index `[f32; R]` lanes by row on purpose: whole-array loops with constant
// bounds, which the compiler turns into one vector operation per column.
#![allow(clippy::needless_range_loop)]

use crate::arith::{add, flush, mad, mul, rsqrt_fixed, sub};
use crate::rowgroup::{GROUP as G, columns};

/// `f32(1 / c)`: computed in f64, rounded once.
pub fn inv_count(c: usize) -> f32 {
    (1.0 / c as f64) as f32
}

/// A row's `(mean, rstd)` (the module doc's first five lines) over the flushed row; `inv_c` and
/// `eps` already flushed.
pub fn row_stats(x: &[f32], inv_c: f32, eps: f32) -> (f32, f32) {
    let mut xt = Vec::new();
    let [st] = group_stats::<1>(x, x.len(), &mut xt, inv_c, eps);
    st
}

/// Rows per thread task (a multiple of `G`).
const TASK_ROWS: usize = 64;

/// `row_stats` of `R` consecutive rows of `x` (`[R, c]`), their sums interleaved column by
/// column — each row's own order unchanged. Leaves the rows' columns in `xt`.
#[inline(always)]
fn group_stats<const R: usize>(
    x: &[f32],
    c: usize,
    xt: &mut Vec<[f32; R]>,
    inv_c: f32,
    eps: f32,
) -> [(f32, f32); R] {
    columns::<R>(x, c, xt);
    let mut s = [0f32; R];
    for col in xt.iter() {
        for r in 0..R {
            s[r] = add(s[r], flush(col[r]));
        }
    }
    let mut mean = [0f32; R];
    for r in 0..R {
        mean[r] = mul(s[r], inv_c);
    }
    let mut v = [0f32; R];
    for col in xt.iter() {
        for r in 0..R {
            let d = sub(flush(col[r]), mean[r]);
            v[r] = mad(d, d, v[r]);
        }
    }
    std::array::from_fn(|r| (mean[r], rsqrt_fixed(add(mul(v[r], inv_c), eps))))
}

/// Forward over a block of rows: `G` rows at a time (a tail row by row).
#[inline(always)]
fn forward_rows(x: &[f32], y: &mut [f32], c: usize, inv_c: f32, eps: f32) {
    let rows = y.len() / c;
    let (mut xt, mut xt1) = (Vec::with_capacity(c), Vec::with_capacity(c));
    let mut r0 = 0;
    while r0 < rows {
        let g = if rows - r0 >= G { G } else { 1 };
        let xs = &x[r0 * c..(r0 + g) * c];
        let mut st = [(0f32, 0f32); G];
        if g == G {
            st = group_stats::<G>(xs, c, &mut xt, inv_c, eps);
        } else {
            st[0] = group_stats::<1>(xs, c, &mut xt1, inv_c, eps)[0];
        }
        for (r, &(mean, rstd)) in st[..g].iter().enumerate() {
            let (xr, yr) = (
                &xs[r * c..(r + 1) * c],
                &mut y[(r0 + r) * c..(r0 + r + 1) * c],
            );
            for (o, &xv) in yr.iter_mut().zip(xr) {
                *o = mul(sub(flush(xv), mean), rstd);
            }
        }
        r0 += g;
    }
}

crate::simd::widest! {
    fn forward_rows_widest(x: &[f32], y: &mut [f32], c: usize, inv_c: f32, eps: f32) = forward_rows;
}

/// Each row of `x` `[m, c]` normalised.
pub fn forward(x: &[f32], m: usize, c: usize, eps: f32) -> Vec<f32> {
    assert!(x.len() == m * c, "layer_norm: shapes");
    if c == 0 {
        return vec![0f32; m * c];
    }
    let (inv_c, eps) = (flush(inv_count(c)), flush(eps));
    crate::heap::par_zeroed(m * c, TASK_ROWS * c, |t, y| {
        let x = &x[t * TASK_ROWS * c..t * TASK_ROWS * c + y.len()];
        forward_rows_widest(x, y, c, inv_c, eps)
    })
}

/// `R` rows of the backward (module doc): their statistics, then `sg` and `sgy` interleaved
/// column by column (each row in its own order), then `dx`.
#[inline(always)]
fn backward_group<const R: usize>(
    (x, dy, d): (&[f32], &[f32], &mut [f32]),
    c: usize,
    (xt, gt): (&mut Vec<[f32; R]>, &mut Vec<[f32; R]>),
    inv_c: f32,
    eps: f32,
) {
    let st = group_stats::<R>(x, c, xt, inv_c, eps);
    columns::<R>(dy, c, gt);
    let y = |r: usize, xv: f32| mul(sub(flush(xv), st[r].0), st[r].1);
    let (mut sg, mut sgy) = ([0f32; R], [0f32; R]);
    for (xc, gc) in xt.iter().zip(gt.iter()) {
        for r in 0..R {
            let g = flush(gc[r]);
            sg[r] = add(sg[r], g);
            sgy[r] = mad(g, y(r, xc[r]), sgy[r]);
        }
    }
    for r in 0..R {
        let (mg, mgy, rstd) = (mul(sg[r], inv_c), mul(sgy[r], inv_c), st[r].1);
        let (xr, gr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        for ((dv, &xv), &gv) in d[r * c..(r + 1) * c].iter_mut().zip(xr).zip(gr) {
            *dv = mul(rstd, sub(sub(flush(gv), mg), mul(y(r, xv), mgy)));
        }
    }
}

#[inline(always)]
fn backward_rows(x: &[f32], dy: &[f32], d: &mut [f32], c: usize, inv_c: f32, eps: f32) {
    let rows = d.len() / c;
    let (mut xt, mut gt) = (Vec::with_capacity(c), Vec::with_capacity(c));
    let (mut xt1, mut gt1) = (Vec::with_capacity(c), Vec::with_capacity(c));
    let mut r0 = 0;
    while r0 < rows {
        let g = if rows - r0 >= G { G } else { 1 };
        let span = r0 * c..(r0 + g) * c;
        let rows3 = (&x[span.clone()], &dy[span.clone()], &mut d[span]);
        if g == G {
            backward_group::<G>(rows3, c, (&mut xt, &mut gt), inv_c, eps);
        } else {
            backward_group::<1>(rows3, c, (&mut xt1, &mut gt1), inv_c, eps);
        }
        r0 += g;
    }
}

crate::simd::widest! {
    fn backward_rows_widest(x: &[f32], dy: &[f32], d: &mut [f32], c: usize, inv_c: f32, eps: f32) = backward_rows;
}

/// Gradient with respect to `x` `[m, c]` for the incoming `dy`, recomputing the forward's
/// statistics and output from `x`.
pub fn backward(x: &[f32], dy: &[f32], m: usize, c: usize, eps: f32) -> Vec<f32> {
    assert!(x.len() == m * c && dy.len() == m * c, "layer_norm: shapes");
    if c == 0 {
        return vec![0f32; m * c];
    }
    let (inv_c, eps) = (flush(inv_count(c)), flush(eps));
    crate::heap::par_zeroed(m * c, TASK_ROWS * c, |t, d| {
        let span = t * TASK_ROWS * c..t * TASK_ROWS * c + d.len();
        let (x, dy) = (&x[span.clone()], &dy[span]);
        backward_rows_widest(x, dy, d, c, inv_c, eps)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in interleaved groups of 8 (and a tail row by row) give the bits each row gets on
    /// its own: a row's result never depends on its neighbours or on where a group starts.
    #[test]
    fn grouped_rows_give_each_row_its_own_bits() {
        let (m, c, eps) = (21, 37, 1e-5f32);
        let x: Vec<f32> = (0..m * c)
            .map(|i| ((i * 7919) % 211) as f32 * 0.37 - 30.0)
            .collect();
        let dy: Vec<f32> = (0..m * c)
            .map(|i| ((i * 104_729) % 97) as f32 * 0.11 - 5.0)
            .collect();
        let (y, dx) = (forward(&x, m, c, eps), backward(&x, &dy, m, c, eps));
        for i in 0..m {
            let row = &x[i * c..(i + 1) * c];
            let (y1, dx1) = (
                forward(row, 1, c, eps),
                backward(row, &dy[i * c..(i + 1) * c], 1, c, eps),
            );
            for j in 0..c {
                assert_eq!(y[i * c + j].to_bits(), y1[j].to_bits(), "y[{i},{j}]");
                assert_eq!(dx[i * c + j].to_bits(), dx1[j].to_bits(), "dx[{i},{j}]");
            }
        }
    }

    #[test]
    fn matches_the_f64_definition() {
        let (m, c, eps) = (4, 5, 1e-5f32);
        let x = [
            1.0f32,
            -2.0,
            0.5,
            3.0,
            3.0, // ordinary
            -50.0,
            0.0,
            0.0,
            0.0,
            7.25, // spread
            2.0,
            2.0,
            2.0,
            2.0,
            2.0, // constant: y = +0
            1e3,
            1e3 + 1.0,
            1e3 - 1.0,
            1e3 + 0.5,
            1e3, // large offset
        ];
        let dy = [
            0.3f32, -1.0, 2.0, 0.0, 1.0, 1.0, -0.5, 0.25, 0.1, 0.7, 1.0, -1.0, 0.5, 0.5, 0.0, 0.2,
            -0.4, 0.6, -0.8, 1.0,
        ];
        let (y, dx) = (forward(&x, m, c, eps), backward(&x, &dy, m, c, eps));
        for i in 0..m {
            let row: Vec<f64> = x[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
            let g: Vec<f64> = dy[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let yd: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let mg = g.iter().sum::<f64>() / c as f64;
            let mgy = g.iter().zip(&yd).map(|(a, b)| a * b).sum::<f64>() / c as f64;
            for j in 0..c {
                let k = i * c + j;
                let want_dx = rstd * (g[j] - mg - yd[j] * mgy);
                // `x - mean` cancels: the mean's own rounding (`s * f32(1/c)`, a few ULP of
                // |mean|) is magnified by `rstd`.
                let shift = 8.0 * f32::EPSILON as f64 * mean.abs() * rstd;
                let close = |a: f32, b: f64, s: f64| {
                    (a as f64 - b).abs() <= 1e-5 * (s + b.abs()) + shift * s
                };
                assert!(close(y[k], yd[j], 1.0), "y[{k}] {} vs {}", y[k], yd[j]);
                assert!(
                    close(dx[k], want_dx, rstd),
                    "dx[{k}] {} vs {want_dx}",
                    dx[k]
                );
            }
        }
        assert!(y[10..15].iter().all(|v| v.to_bits() == 0), "constant row");
    }
}
