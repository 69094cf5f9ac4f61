//! CPU softmax / log-softmax in the order of `softmax`'s module doc.

use crate::arith::{add, exp_fixed, flush, log_fixed, mad, mul, recip_fixed, sub};
use crate::xent::cpu::row_stats;
use rayon::prelude::*;

/// Softmax (`log = false`) or log-softmax (`log = true`) of each row of `x` `[m, c]`.
pub fn forward(x: &[f32], m: usize, c: usize, log: bool) -> Vec<f32> {
    assert!(x.len() == m * c, "softmax: shapes");
    let mut out = vec![0f32; m * c];
    if c == 0 {
        return out;
    }
    out.par_chunks_mut(c).enumerate().for_each(|(i, y)| {
        let xr = &x[i * c..(i + 1) * c];
        let (mx, s) = row_stats(xr);
        if log {
            let l = log_fixed(s);
            for j in 0..c {
                y[j] = sub(sub(flush(xr[j]), mx), l);
            }
        } else {
            let r = recip_fixed(s);
            for j in 0..c {
                y[j] = mul(exp_fixed(sub(flush(xr[j]), mx)), r);
            }
        }
    });
    out
}

/// Gradient with respect to the input, from the forward's output `y` and incoming `dy`.
pub fn backward(y: &[f32], dy: &[f32], m: usize, c: usize, log: bool) -> Vec<f32> {
    assert!(y.len() == m * c && dy.len() == m * c, "softmax: shapes");
    let mut out = vec![0f32; m * c];
    if c == 0 {
        return out;
    }
    out.par_chunks_mut(c).enumerate().for_each(|(i, d)| {
        let (yr, gr) = (&y[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c]);
        if log {
            let mut sg = 0f32;
            for &g in gr {
                sg = add(sg, flush(g));
            }
            for j in 0..c {
                d[j] = mad(exp_fixed(yr[j]), -sg, flush(gr[j]));
            }
        } else {
            let mut dot = 0f32;
            for j in 0..c {
                dot = mad(flush(gr[j]), flush(yr[j]), dot);
            }
            for j in 0..c {
                d[j] = mul(flush(yr[j]), sub(flush(gr[j]), dot));
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f64_definition() {
        let x = [1.0f32, -2.0, 0.5, 3.0, 3.0, -50.0, 0.0, 0.0, 0.0];
        let dy = [0.3f32, -1.0, 2.0, 0.0, 1.0, 1.0, -0.5, 0.25, 0.1];
        let (sm, ls) = (forward(&x, 3, 3, false), forward(&x, 3, 3, true));
        let (dsm, dls) = (
            backward(&sm, &dy, 3, 3, false),
            backward(&ls, &dy, 3, 3, true),
        );
        for i in 0..3 {
            let row: Vec<f64> = x[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            let p: Vec<f64> = row.iter().map(|v| v.exp() / z).collect();
            let g: Vec<f64> = dy[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let dot: f64 = p.iter().zip(&g).map(|(a, b)| a * b).sum();
            let gs: f64 = g.iter().sum();
            for j in 0..3 {
                let k = i * 3 + j;
                let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * (1.0 + b.abs());
                assert!(close(sm[k], p[j]), "softmax[{k}] {} vs {}", sm[k], p[j]);
                assert!(close(ls[k], p[j].ln()), "log_softmax[{k}]");
                assert!(close(dsm[k], p[j] * (g[j] - dot)), "softmax grad[{k}]");
                assert!(close(dls[k], g[j] - p[j] * gs), "log_softmax grad[{k}]");
            }
        }
    }
}
