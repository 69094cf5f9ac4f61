//! CPU softmax cross-entropy in the fixed order of `xent`'s module doc.

use crate::arith::{add, exp_fixed, flush, log_fixed, mad, mul, recip_fixed, sub};
use rayon::prelude::*;

/// Row maximum and `sum_j exp_fixed(x[j] - max)`, j in order (`xent`'s first two lines), over
/// the flushed row.
pub fn row_stats(x: &[f32]) -> (f32, f32) {
    let mut mx = flush(x[0]);
    for &v in &x[1..] {
        let v = flush(v);
        if v > mx {
            mx = v;
        }
    }
    let mut s = 0f32;
    for &v in x {
        s = add(s, exp_fixed(sub(flush(v), mx)));
    }
    (mx, s)
}

/// Per-row negative log-likelihood, `[m]`.
pub fn forward(x: &[f32], t: &[f32], m: usize, c: usize) -> Vec<f32> {
    assert!(
        c > 0 && x.len() == m * c && t.len() == m * c,
        "xent: shapes"
    );
    (0..m)
        .into_par_iter()
        .map(|i| {
            let (xr, tr) = (&x[i * c..(i + 1) * c], &t[i * c..(i + 1) * c]);
            let (mx, s) = row_stats(xr);
            let lse = add(log_fixed(s), mx);
            let mut dot = 0f32;
            for j in 0..c {
                dot = mad(flush(xr[j]), flush(tr[j]), dot);
            }
            sub(lse, dot)
        })
        .collect()
}

/// Gradient of `sum_i g[i] * nll[i]` with respect to the logits, `[m, c]`.
pub fn backward(x: &[f32], t: &[f32], g: &[f32], m: usize, c: usize) -> Vec<f32> {
    assert!(
        c > 0 && x.len() == m * c && t.len() == m * c && g.len() == m,
        "xent: shapes"
    );
    let mut out = vec![0f32; m * c];
    out.par_chunks_mut(c).enumerate().for_each(|(i, d)| {
        let (xr, tr) = (&x[i * c..(i + 1) * c], &t[i * c..(i + 1) * c]);
        let (mx, s) = row_stats(xr);
        let r = recip_fixed(s);
        let gi = flush(g[i]);
        for j in 0..c {
            let e = exp_fixed(sub(flush(xr[j]), mx));
            d[j] = mul(mad(e, r, -flush(tr[j])), gi);
        }
    });
    out
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
