//! CPU causal softmax in the order of `causal`'s module doc.

use crate::arith::{add, exp_fixed, flush, mad, mul, recip_fixed, sub};
use rayon::prelude::*;

/// One query row (`y` zero beyond `q`), in the module doc's order: `z[j] = x[j] * sc` (`sc`
/// flushed), the maximum over `j <= q` in order, `e[j] = exp_fixed(z[j] - max)`, their sum in
/// order, `y[j] = e[j] * recip_fixed(sum)`. `z` and `e` are written into `y` first
/// (element-wise, so those loops vectorise); each `e[j]` is computed once.
#[inline(always)]
fn forward_row(xr: &[f32], y: &mut [f32], q: usize, sc: f32) {
    let y = &mut y[..=q];
    for (v, &x) in y.iter_mut().zip(xr) {
        *v = mul(flush(x), sc);
    }
    let mut mx = y[0];
    for &v in &y[1..] {
        if v > mx {
            mx = v;
        }
    }
    for v in y.iter_mut() {
        *v = exp_fixed(sub(*v, mx));
    }
    let mut s = 0f32;
    for &v in y.iter() {
        s = add(s, v);
    }
    let rc = recip_fixed(s);
    for v in y.iter_mut() {
        *v = mul(*v, rc);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_row_avx2(xr: &[f32], y: &mut [f32], q: usize, sc: f32) {
    forward_row(xr, y, q, sc)
}

/// Rows per thread task.
const TASK_ROWS: usize = 64;

/// The causal softmax of `x * scale`, `x` `[r, t]`, row `i` being query `i % t`.
pub fn forward(x: &[f32], r: usize, t: usize, scale: f32) -> Vec<f32> {
    assert!(x.len() == r * t, "causal_softmax: shapes");
    let mut out = vec![0f32; r * t];
    if t == 0 {
        return out;
    }
    let sc = flush(scale);
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    // Tasks of TASK_ROWS rows (a row is too little work to hand to a thread).
    out.par_chunks_mut(TASK_ROWS * t)
        .enumerate()
        .for_each(|(b, ys)| {
            for (r, y) in ys.chunks_mut(t).enumerate() {
                let i = b * TASK_ROWS + r;
                let (xr, q) = (&x[i * t..(i + 1) * t], i % t);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU has AVX2 (checked above).
                    #[allow(unsafe_code)]
                    unsafe {
                        forward_row_avx2(xr, y, q, sc)
                    };
                    continue;
                }
                forward_row(xr, y, q, sc);
            }
        });
    out
}

/// Gradient with respect to `x` from the forward's output `y` and the incoming `dy`.
pub fn backward(y: &[f32], dy: &[f32], r: usize, t: usize, scale: f32) -> Vec<f32> {
    assert!(
        y.len() == r * t && dy.len() == r * t,
        "causal_softmax: shapes"
    );
    let mut out = vec![0f32; r * t];
    if t == 0 {
        return out;
    }
    let sc = flush(scale);
    out.par_chunks_mut(TASK_ROWS * t)
        .enumerate()
        .for_each(|(b, ds)| {
            for (r, d) in ds.chunks_mut(t).enumerate() {
                let i = b * TASK_ROWS + r;
                let (yr, gr, q) = (&y[i * t..(i + 1) * t], &dy[i * t..(i + 1) * t], i % t);
                let mut dot = 0f32;
                for j in 0..=q {
                    dot = mad(flush(gr[j]), flush(yr[j]), dot);
                }
                for j in 0..=q {
                    d[j] = mul(sc, mul(flush(yr[j]), sub(flush(gr[j]), dot)));
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
        // two (batch * head) blocks of t = 3 queries
        let (t, r, scale) = (3, 6, 0.7f32);
        let x = [
            1.0f32, -2.0, 0.5, 3.0, 3.0, -50.0, 0.0, 0.0, 0.0, -1.0, 4.0, 9.0, 2.0, 2.0, 2.0, 0.1,
            -0.2, 0.3,
        ];
        let dy = [
            0.3f32, -1.0, 2.0, 0.0, 1.0, 1.0, -0.5, 0.25, 0.1, 0.7, -0.3, 0.2, 1.0, 2.0, 3.0, -1.0,
            0.5, 0.5,
        ];
        let (y, dx) = (forward(&x, r, t, scale), {
            let y = forward(&x, r, t, scale);
            backward(&y, &dy, r, t, scale)
        });
        for i in 0..r {
            let q = i % t;
            let z: Vec<f64> = (0..=q)
                .map(|j| x[i * t + j] as f64 * scale as f64)
                .collect();
            let mx = z.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
            let p: Vec<f64> = z.iter().map(|v| (v - mx).exp() / s).collect();
            let g: Vec<f64> = (0..=q).map(|j| dy[i * t + j] as f64).collect();
            let dot: f64 = p.iter().zip(&g).map(|(a, b)| a * b).sum();
            for j in 0..t {
                let k = i * t + j;
                if j > q {
                    assert_eq!((y[k].to_bits(), dx[k].to_bits()), (0, 0), "masked [{k}]");
                    continue;
                }
                let want_dx = scale as f64 * p[j] * (g[j] - dot);
                let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * (1.0 + b.abs());
                assert!(close(y[k], p[j]), "y[{k}] {} vs {}", y[k], p[j]);
                assert!(close(dx[k], want_dx), "dx[{k}] {} vs {want_dx}", dx[k]);
            }
        }
    }
}
