//! CPU causal softmax in the order of `causal`'s module doc.

use crate::arith::{add, exp_fixed, flush, mad, mul, recip_fixed, sub};
use crate::rowgroup::{GROUP as G, columns};

/// One query row (`y` zero beyond `q`), in the module doc's order: `z[j] = x[j] * sc` (`sc`
/// flushed), the maximum over `j <= q` in order, `e[j] = exp_fixed(z[j] - max)`, their sum in
/// order, `y[j] = e[j] * recip_fixed(sum)`.
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

/// `forward_row` for the rows `i0..` that `y` holds, `G` rows side by side (`rowgroup`): the
/// group transposed to columns, every step run on all `G` lanes at once, each lane masked past
/// its own row's `q` (its max and sum chains see exactly its `j <= q` in order), then the rows'
/// outputs copied back. Rows left over (fewer than `G`) run `forward_row`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane `l` of column `j`: constant-bound loops that vectorise
fn forward_rows(x: &[f32], y: &mut [f32], (i0, t): (usize, usize), sc: f32) {
    let rows = y.len() / t;
    let mut zt = Vec::new();
    let mut g0 = 0;
    while g0 + G <= rows {
        columns::<G>(&x[g0 * t..(g0 + G) * t], t, &mut zt);
        let q: [usize; G] = std::array::from_fn(|l| (i0 + g0 + l) % t);
        let last = q.iter().copied().max().unwrap_or(0);
        let zt = &mut zt[..=last];
        for z in zt.iter_mut() {
            for l in 0..G {
                z[l] = mul(flush(z[l]), sc);
            }
        }
        let mut mx = zt[0];
        for j in 1..=last {
            for l in 0..G {
                let v = zt[j][l];
                mx[l] = if j <= q[l] && v > mx[l] { v } else { mx[l] };
            }
        }
        for z in zt.iter_mut() {
            for l in 0..G {
                z[l] = sub(z[l], mx[l]);
            }
        }
        // One flat loop: exp_fixed does not vectorise as 8 separate lanes.
        for v in zt.as_flattened_mut() {
            *v = exp_fixed(*v);
        }
        let mut sum = [0f32; G];
        for j in 0..=last {
            for l in 0..G {
                sum[l] = if j <= q[l] {
                    add(sum[l], zt[j][l])
                } else {
                    sum[l]
                };
            }
        }
        let mut rc = [0f32; G];
        for l in 0..G {
            rc[l] = recip_fixed(sum[l]);
        }
        for z in zt.iter_mut() {
            for l in 0..G {
                z[l] = mul(z[l], rc[l]);
            }
        }
        for l in 0..G {
            let row = &mut y[(g0 + l) * t..(g0 + l) * t + q[l] + 1];
            for (j, v) in row.iter_mut().enumerate() {
                *v = zt[j][l];
            }
        }
        g0 += G;
    }
    for row in g0..rows {
        let q = (i0 + row) % t;
        forward_row(
            &x[row * t..(row + 1) * t],
            &mut y[row * t..(row + 1) * t],
            q,
            sc,
        );
    }
}

crate::simd::widest! {
    fn forward_rows_widest(x: &[f32], y: &mut [f32], rows: (usize, usize), sc: f32) = forward_rows;
}

/// Rows per thread task (a multiple of `G`).
const TASK_ROWS: usize = 64;

/// The causal softmax of `x * scale`, `x` `[r, t]`, row `i` being query `i % t`.
pub fn forward(x: &[f32], r: usize, t: usize, scale: f32) -> Vec<f32> {
    assert!(x.len() == r * t, "causal_softmax: shapes");
    if t == 0 {
        return vec![0f32; r * t];
    }
    let sc = flush(scale);
    // Tasks of TASK_ROWS rows (a row is too little work to hand to a thread).
    crate::heap::par_zeroed(r * t, TASK_ROWS * t, |b, ys| {
        let i0 = b * TASK_ROWS;
        let x = &x[i0 * t..i0 * t + ys.len()];
        forward_rows_widest(x, ys, (i0, t), sc);
    })
}

/// `forward` of one `[t, t]` block (rows are queries `0..t`) into `y` (zeroed: the masked
/// entries are not written), on the calling thread: the same bits as `forward`'s rows.
pub(crate) fn forward_block(x: &[f32], y: &mut [f32], t: usize, scale: f32) {
    assert!(
        x.len() == t * t && y.len() == t * t,
        "causal_softmax: shapes"
    );
    if t == 0 {
        return;
    }
    let sc = flush(scale);
    forward_rows_widest(x, y, (0, t), sc);
}

/// `backward` of one `[t, t]` block into `d` (zeroed), on the calling thread: the same bits as
/// `backward`'s rows.
pub(crate) fn backward_block(y: &[f32], dy: &[f32], d: &mut [f32], t: usize, scale: f32) {
    assert!(
        y.len() == t * t && dy.len() == t * t && d.len() == t * t,
        "causal_softmax: shapes"
    );
    if t == 0 {
        return;
    }
    let sc = flush(scale);
    backward_rows_widest(y, dy, d, (0, t), sc);
}

/// Gradient with respect to `x` from the forward's output `y` and the incoming `dy`: per row,
/// `dot = sum over j <= q of dy[j] * y[j]` in order, then `dx[j] = sc * (y[j] * (dy[j] - dot))`
/// (zero beyond `q`).
pub fn backward(y: &[f32], dy: &[f32], r: usize, t: usize, scale: f32) -> Vec<f32> {
    assert!(
        y.len() == r * t && dy.len() == r * t,
        "causal_softmax: shapes"
    );
    if t == 0 {
        return vec![0f32; r * t];
    }
    let sc = flush(scale);
    crate::heap::par_zeroed(r * t, TASK_ROWS * t, |b, ds| {
        let i0 = b * TASK_ROWS;
        let rows = ds.len() / t;
        let (y, dy) = (&y[i0 * t..(i0 + rows) * t], &dy[i0 * t..(i0 + rows) * t]);
        backward_rows_widest(y, dy, ds, (i0, t), sc);
    })
}

crate::simd::widest! {
    fn backward_rows_widest(y: &[f32], dy: &[f32], d: &mut [f32], rows: (usize, usize), sc: f32) = backward_rows;
}

/// `backward` of the rows `i0..` that `d` holds. The rows' dot products run `G` rows side by
/// side (`rowgroup`), each row's in-order chain in one lane, masked past its own `q`; the
/// element-wise step runs per row in whole vectors up to the next multiple of `G` past `q`
/// (those extra elements are zeroed after).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane `l` of column `j`: constant-bound loops that vectorise
fn backward_rows(y: &[f32], dy: &[f32], d: &mut [f32], (i0, t): (usize, usize), sc: f32) {
    let rows = d.len() / t;
    let (mut yt, mut gt) = (Vec::new(), Vec::new());
    let mut dots = vec![0f32; rows];
    let mut g0 = 0;
    while g0 + G <= rows {
        let at = g0 * t..(g0 + G) * t;
        columns::<G>(&y[at.clone()], t, &mut yt);
        columns::<G>(&dy[at], t, &mut gt);
        let q: [usize; G] = std::array::from_fn(|l| (i0 + g0 + l) % t);
        let last = q.iter().copied().max().unwrap_or(0);
        let mut dot = [0f32; G];
        for j in 0..=last {
            for l in 0..G {
                let next = mad(flush(gt[j][l]), flush(yt[j][l]), dot[l]);
                dot[l] = if j <= q[l] { next } else { dot[l] };
            }
        }
        dots[g0..g0 + G].copy_from_slice(&dot);
        g0 += G;
    }
    for row in g0..rows {
        let (yr, gr, q) = (&y[row * t..], &dy[row * t..], (i0 + row) % t);
        let mut dot = 0f32;
        for j in 0..=q {
            dot = mad(flush(gr[j]), flush(yr[j]), dot);
        }
        dots[row] = dot;
    }
    for (row, dr) in d.chunks_exact_mut(t).enumerate() {
        let (q, dot) = ((i0 + row) % t, dots[row]);
        let w = (q + 1).next_multiple_of(G).min(t);
        let (yr, gr) = (&y[row * t..row * t + w], &dy[row * t..row * t + w]);
        let dr = &mut dr[..w];
        for j in 0..w {
            dr[j] = mul(sc, mul(flush(yr[j]), sub(flush(gr[j]), dot)));
        }
        dr[q + 1..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grouped rows (8 side by side, masked per row) give each row's own loop's bits: the
    /// forward against `forward_row` alone, the backward against the plain per-row loop, over
    /// row counts with leftovers, t = 1 and t not a multiple of 8, and values that underflow.
    #[test]
    fn grouped_rows_match_each_row_alone() {
        for (r, t) in [
            (1, 1),
            (7, 1),
            (9, 3),
            (26, 13),
            (80, 8),
            (130, 64),
            (70, 35),
        ] {
            let x: Vec<f32> = (0..r * t)
                .map(|i| match i % 37 {
                    5 => 1e-40,
                    9 => -90.0,
                    _ => ((i * 7919) % 1000) as f32 * 0.013 - 6.0,
                })
                .collect();
            let dy: Vec<f32> = (0..r * t)
                .map(|i| {
                    if i % 23 == 4 {
                        3e-39
                    } else {
                        ((i * 104_729) % 997) as f32 * 0.002 - 1.0
                    }
                })
                .collect();
            let sc = 0.37f32;
            let y = forward(&x, r, t, sc);
            let dx = backward(&y, &dy, r, t, sc);
            for i in 0..r {
                let (q, row) = (i % t, i * t..(i + 1) * t);
                let mut want = vec![0f32; t];
                forward_row(&x[row.clone()], &mut want, q, sc);
                let mut dot = 0f32;
                for j in 0..=q {
                    dot = mad(flush(dy[i * t + j]), flush(y[i * t + j]), dot);
                }
                let want_dx: Vec<f32> = (0..t)
                    .map(|j| {
                        let (yj, gj) = (flush(y[i * t + j]), flush(dy[i * t + j]));
                        if j <= q {
                            mul(sc, mul(yj, sub(gj, dot)))
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for j in 0..t {
                    let k = i * t + j;
                    assert_eq!(y[k].to_bits(), want[j].to_bits(), "y {r}x{t} [{i}][{j}]");
                    assert_eq!(
                        dx[k].to_bits(),
                        want_dx[j].to_bits(),
                        "dx {r}x{t} [{i}][{j}]"
                    );
                }
            }
        }
    }

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
