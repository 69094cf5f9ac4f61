//! CPU softmax cross-entropy in the fixed order of `xent`'s module doc.

// The row groups index `[f32; R]` lanes by row on purpose: whole-array loops with constant
// bounds, which the compiler turns into one vector operation per column.
#![allow(clippy::needless_range_loop)]

use crate::arith::{add, exp_fixed, flush, log_fixed, mad, mul, recip_fixed, sub};
use crate::rowgroup::{GROUP as G, columns};

/// Row maximum and `sum_j exp_fixed(x[j] - max)`, j in order (`xent`'s first two lines), over
/// the flushed row. The exponentials are computed a block at a time into a buffer (element-wise,
/// so that loop vectorises), then added in order.
#[inline(always)]
pub fn row_stats(x: &[f32]) -> (f32, f32) {
    let mut mx = flush(x[0]);
    for &v in &x[1..] {
        let v = flush(v);
        if v > mx {
            mx = v;
        }
    }
    const BLOCK: usize = 64;
    let mut e = [0f32; BLOCK];
    let mut s = 0f32;
    for xs in x.chunks(BLOCK) {
        for (o, &v) in e.iter_mut().zip(xs) {
            *o = exp_fixed(sub(flush(v), mx));
        }
        for &v in &e[..xs.len()] {
            s = add(s, v);
        }
    }
    (mx, s)
}

/// Rows per thread task.
const TASK_ROWS: usize = 32;

/// `row_stats` of `R` rows `x` (`[R, c]`): each row's maximum in order, the exponentials of all
/// `R` rows as one element-wise loop (it vectorises) into `rows`, then the `R` in-order sums
/// interleaved column by column (from `et`, the exponentials' columns: one vector lane per row).
#[inline(always)]
fn group_stats<const R: usize>(
    x: &[f32],
    c: usize,
    rows: &mut Vec<f32>,
    et: &mut Vec<[f32; R]>,
) -> ([f32; R], [f32; R]) {
    let mut mx = [0f32; R];
    rows.resize(R * c, 0.0);
    for r in 0..R {
        let xr = &x[r * c..(r + 1) * c];
        let mut m = flush(xr[0]);
        for &v in &xr[1..] {
            let v = flush(v);
            if v > m {
                m = v;
            }
        }
        mx[r] = m;
        // Each element's row maximum beside it, so that the exponentials run as one loop over
        // all `R * c` elements (full vectors even when a row is shorter than one, as a
        // classifier's 10 classes are).
        rows[r * c..(r + 1) * c].fill(m);
    }
    for (e, &v) in rows.iter_mut().zip(&x[..R * c]) {
        *e = exp_fixed(sub(flush(v), *e));
    }
    columns::<R>(rows, c, et);
    let mut s = [0f32; R];
    for ec in et.iter() {
        for r in 0..R {
            s[r] = add(s[r], ec[r]);
        }
    }
    (mx, s)
}

/// Column buffers one task reuses.
struct Bufs<const R: usize> {
    x: Vec<[f32; R]>,
    t: Vec<[f32; R]>,
    e: Vec<[f32; R]>,
    rows: Vec<f32>,
}

impl<const R: usize> Bufs<R> {
    fn new() -> Self {
        Bufs {
            x: Vec::new(),
            t: Vec::new(),
            e: Vec::new(),
            rows: Vec::new(),
        }
    }
}

/// The negative log-likelihood of `R` rows (`xent`'s first five lines per row).
#[inline(always)]
fn group_nll<const R: usize>((x, t): (&[f32], &[f32]), c: usize, b: &mut Bufs<R>) -> [f32; R] {
    let (mx, s) = group_stats::<R>(x, c, &mut b.rows, &mut b.e);
    columns::<R>(x, c, &mut b.x);
    columns::<R>(t, c, &mut b.t);
    let mut dot = [0f32; R];
    for j in 0..c {
        for r in 0..R {
            dot[r] = mad(flush(b.x[j][r]), flush(b.t[j][r]), dot[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = sub(add(log_fixed(s[r]), mx[r]), dot[r]);
    }
    out
}

/// `nll` of the rows `i0..i0 + o.len()`: groups of `G`, a tail row by row.
#[inline(always)]
fn forward_rows(x: &[f32], t: &[f32], o: &mut [f32], i0: usize, c: usize) {
    let (mut bufs, mut bufs1) = (Bufs::<G>::new(), Bufs::<1>::new());
    let mut r0 = 0;
    while r0 < o.len() {
        let g = if o.len() - r0 >= G { G } else { 1 };
        let span = (i0 + r0) * c..(i0 + r0 + g) * c;
        let rows = (&x[span.clone()], &t[span]);
        if g == G {
            let v = group_nll::<G>(rows, c, &mut bufs);
            o[r0..r0 + G].copy_from_slice(&v);
        } else {
            o[r0] = group_nll::<1>(rows, c, &mut bufs1)[0];
        }
        r0 += g;
    }
}

/// `R` gradient rows (`xent`'s last two lines per row) into `d` (`[R, c]`).
#[inline(always)]
fn group_grad<const R: usize>(
    (x, t, g): (&[f32], &[f32], &[f32]),
    d: &mut [f32],
    c: usize,
    b: &mut Bufs<R>,
) {
    let (_, s) = group_stats::<R>(x, c, &mut b.rows, &mut b.e);
    for r in 0..R {
        let rc = recip_fixed(s[r]);
        let gi = flush(g[r]);
        let er = &b.rows[r * c..(r + 1) * c];
        let (tr, dr) = (&t[r * c..(r + 1) * c], &mut d[r * c..(r + 1) * c]);
        for j in 0..c {
            dr[j] = mul(mad(er[j], rc, -flush(tr[j])), gi);
        }
    }
}

/// The gradient rows `i0..` (`d` holds whole rows): groups of `G`, a tail row by row.
#[inline(always)]
fn backward_rows(x: &[f32], t: &[f32], g: &[f32], d: &mut [f32], i0: usize, c: usize) {
    let (mut bufs, mut bufs1) = (Bufs::<G>::new(), Bufs::<1>::new());
    let rows = d.len() / c;
    let mut r0 = 0;
    while r0 < rows {
        let n = if rows - r0 >= G { G } else { 1 };
        let (i, span) = (i0 + r0, (i0 + r0) * c..(i0 + r0 + n) * c);
        let ins = (&x[span.clone()], &t[span], &g[i..i + n]);
        let out = &mut d[r0 * c..(r0 + n) * c];
        if n == G {
            group_grad::<G>(ins, out, c, &mut bufs);
        } else {
            group_grad::<1>(ins, out, c, &mut bufs1);
        }
        r0 += n;
    }
}

crate::simd::widest! {
    fn forward_rows_widest(x: &[f32], t: &[f32], o: &mut [f32], i0: usize, c: usize) = forward_rows;
}

crate::simd::widest! {
    fn backward_rows_widest(x: &[f32], t: &[f32], g: &[f32], d: &mut [f32], i0: usize, c: usize) = backward_rows;
}

/// Per-row negative log-likelihood, `[m]`.
pub fn forward(x: &[f32], t: &[f32], m: usize, c: usize) -> Vec<f32> {
    assert!(
        c > 0 && x.len() == m * c && t.len() == m * c,
        "xent: shapes"
    );
    crate::heap::par_zeroed(m, TASK_ROWS, |b, o| {
        forward_rows_widest(x, t, o, b * TASK_ROWS, c)
    })
}

/// Gradient of `sum_i g[i] * nll[i]` with respect to the logits, `[m, c]`.
pub fn backward(x: &[f32], t: &[f32], g: &[f32], m: usize, c: usize) -> Vec<f32> {
    assert!(
        c > 0 && x.len() == m * c && t.len() == m * c && g.len() == m,
        "xent: shapes"
    );
    crate::heap::par_zeroed(m * c, TASK_ROWS * c, |b, d| {
        backward_rows_widest(x, t, g, d, b * TASK_ROWS, c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f64_definition() {
        let x = [1.0f32, -2.0, 0.5, 3.0, 3.0, -50.0];
        let t = [0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0];
        let nll = forward(&x, &t, 2, 3);
        for (i, row) in x.chunks(3).enumerate() {
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            let want = lse
                - row
                    .iter()
                    .zip(&t[i * 3..])
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>();
            assert!(
                (nll[i] as f64 - want).abs() < 1e-6,
                "row {i}: {} vs {want}",
                nll[i]
            );
        }
        let d = backward(&x, &t, &[1.0, 2.0], 2, 3);
        for (i, row) in x.chunks(3).enumerate() {
            let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            for j in 0..3 {
                let want = ((row[j] as f64).exp() / z - t[i * 3 + j] as f64) * [1.0, 2.0][i];
                assert!((d[i * 3 + j] as f64 - want).abs() < 1e-6, "d[{i},{j}]");
            }
        }
    }
}
