//! CPU layer normalisation in the order of `layernorm`'s module doc.

use crate::arith::{add, flush, mad, mul, rsqrt_fixed, sub};
use rayon::prelude::*;

/// `f32(1 / c)`: computed in f64, rounded once.
pub fn inv_count(c: usize) -> f32 {
    (1.0 / c as f64) as f32
}

/// A row's `(mean, rstd)` (the module doc's first five lines) over the flushed row; `inv_c` and
/// `eps` already flushed.
pub fn row_stats(x: &[f32], inv_c: f32, eps: f32) -> (f32, f32) {
    let mut s = 0f32;
    for &v in x {
        s = add(s, flush(v));
    }
    let mean = mul(s, inv_c);
    let mut v = 0f32;
    for &xv in x {
        let d = sub(flush(xv), mean);
        v = mad(d, d, v);
    }
    let var = mul(v, inv_c);
    (mean, rsqrt_fixed(add(var, eps)))
}

/// Each row of `x` `[m, c]` normalised.
pub fn forward(x: &[f32], m: usize, c: usize, eps: f32) -> Vec<f32> {
    assert!(x.len() == m * c, "layer_norm: shapes");
    let mut out = vec![0f32; m * c];
    if c == 0 {
        return out;
    }
    let (inv_c, eps) = (flush(inv_count(c)), flush(eps));
    out.par_chunks_mut(c).enumerate().for_each(|(i, y)| {
        let xr = &x[i * c..(i + 1) * c];
        let (mean, rstd) = row_stats(xr, inv_c, eps);
        for j in 0..c {
            y[j] = mul(sub(flush(xr[j]), mean), rstd);
        }
    });
    out
}

/// Gradient with respect to `x` `[m, c]` for the incoming `dy`, recomputing the forward's
/// statistics and output from `x`.
pub fn backward(x: &[f32], dy: &[f32], m: usize, c: usize, eps: f32) -> Vec<f32> {
    assert!(x.len() == m * c && dy.len() == m * c, "layer_norm: shapes");
    let mut out = vec![0f32; m * c];
    if c == 0 {
        return out;
    }
    let (inv_c, eps) = (flush(inv_count(c)), flush(eps));
    out.par_chunks_mut(c).enumerate().for_each(|(i, d)| {
        let (xr, gr) = (&x[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c]);
        let (mean, rstd) = row_stats(xr, inv_c, eps);
        let y = |xv: f32| mul(sub(flush(xv), mean), rstd);
        let (mut sg, mut sgy) = (0f32, 0f32);
        for (&xv, &gv) in xr.iter().zip(gr) {
            let g = flush(gv);
            sg = add(sg, g);
            sgy = mad(g, y(xv), sgy);
        }
        let (mg, mgy) = (mul(sg, inv_c), mul(sgy, inv_c));
        for ((dv, &xv), &gv) in d.iter_mut().zip(xr).zip(gr) {
            *dv = mul(rstd, sub(sub(flush(gv), mg), mul(y(xv), mgy)));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
