//! CPU attention in the order of `attention`'s module doc: threads over (sequence, head) pairs,
//! each running `matmul`'s CPU code and `causal`'s rows on one thread over its gathered blocks,
//! then a parallel pass that moves the heads' results into place.

use super::Dims;
use crate::causal::cpu::{backward_block, forward_block};
use crate::heap::par_zeroed;
use crate::matmul::cpu::matmul_into;

/// Rows `r0..r0 + t`, columns `c0..c0 + hd` of a row-major matrix `rows x stride`, as a
/// row-major `[t, hd]` block in `dst` (exact copies).
fn gather(
    src: &[f32],
    stride: usize,
    (r0, c0): (usize, usize),
    (t, hd): (usize, usize),
) -> Vec<f32> {
    let mut dst = Vec::with_capacity(t * hd);
    for i in 0..t {
        let at = (r0 + i) * stride + c0;
        dst.extend_from_slice(&src[at..at + hd]);
    }
    dst
}

/// The `[t, hd]` block of head `h` of part `part` (0: `q`, 1: `k`, 2: `v`) of sequence `e`.
fn block(qkv: &[f32], d: Dims, (e, h): (usize, usize), part: usize) -> Vec<f32> {
    let c = d.c();
    gather(qkv, 3 * c, (e * d.t, part * c + h * d.hd), (d.t, d.hd))
}

/// The softmax `att` `[b*nh*t, t]`: per (sequence, head), `causal_softmax(q · kᵀ)`.
fn probabilities(qkv: &[f32], d: Dims, scale: f32, fused: bool) -> Vec<f32> {
    let Dims { t, nh, hd, .. } = d;
    par_zeroed(d.b * nh * t * t, t * t, |p, att| {
        let pair = (p / nh, p % nh);
        let (q, k) = (block(qkv, d, pair, 0), block(qkv, d, pair, 1));
        let mut s = vec![0f32; t * t];
        matmul_into((&q, false), (&k, true), &mut s, (t, hd, t), fused, false);
        forward_block(&s, att, t, scale);
    })
}

/// `attention` forward: `qkv` `[b*t, 3c]` row-major -> (`y` `[b*t, c]`, `att` `[b*nh*t, t]`).
pub fn forward(qkv: &[f32], d: Dims, scale: f32, fused: bool) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, t, nh, hd } = d;
    let c = d.c();
    assert_eq!(qkv.len(), b * t * 3 * c, "attention: qkv shape");
    if t * hd == 0 {
        return (vec![0f32; b * t * c], vec![0f32; b * nh * t * t]);
    }
    let att = probabilities(qkv, d, scale, fused);
    // The heads' outputs, `[b, nh, t, hd]`: one task per (sequence, head).
    let heads = par_zeroed(b * nh * t * hd, t * hd, |p, out| {
        let v = block(qkv, d, (p / nh, p % nh), 2);
        let a = &att[p * t * t..(p + 1) * t * t];
        matmul_into((a, false), (&v, false), out, (t, t, hd), fused, false);
    });
    // `[b, nh, t, hd]` -> `[b, t, nh, hd]` = `[b*t, c]`, one task per sequence.
    let y = par_zeroed(b * t * c, t * c, |e, y| {
        for h in 0..nh {
            let src = &heads[(e * nh + h) * t * hd..(e * nh + h + 1) * t * hd];
            for (i, row) in src.chunks_exact(hd).enumerate() {
                y[i * c + h * hd..i * c + (h + 1) * hd].copy_from_slice(row);
            }
        }
    });
    (y, att)
}

/// `attention` backward: the gradient `[b*t, 3c]` of `qkv` for the incoming `dy` `[b*t, c]`,
/// from `qkv` and the forward's `att` (`+ 0.0` on every value, as the module doc says).
pub fn backward(
    qkv: &[f32],
    att: &[f32],
    dy: &[f32],
    d: Dims,
    scale: f32,
    fused: bool,
) -> Vec<f32> {
    let Dims { b, t, nh, hd } = d;
    let c = d.c();
    assert_eq!(qkv.len(), b * t * 3 * c, "attention: qkv shape");
    assert_eq!(att.len(), b * nh * t * t, "attention: att shape");
    assert_eq!(dy.len(), b * t * c, "attention: dy shape");
    if t * hd == 0 {
        return vec![0f32; b * t * 3 * c];
    }
    // Per (sequence, head): `[d_q, d_k, d_v]`, each `[t, hd]`.
    let parts = par_zeroed(b * nh * 3 * t * hd, 3 * t * hd, |p, out| {
        let pair = (p / nh, p % nh);
        let (q, k, v) = (
            block(qkv, d, pair, 0),
            block(qkv, d, pair, 1),
            block(qkv, d, pair, 2),
        );
        let a = &att[p * t * t..(p + 1) * t * t];
        let g = gather(dy, c, (pair.0 * t, pair.1 * hd), (t, hd));
        let (dq, rest) = out.split_at_mut(t * hd);
        let (dk, dv) = rest.split_at_mut(t * hd);
        let mut d_att = vec![0f32; t * t];
        matmul_into(
            (&g, false),
            (&v, true),
            &mut d_att,
            (t, hd, t),
            fused,
            false,
        );
        matmul_into((a, true), (&g, false), dv, (t, t, hd), fused, false);
        let mut ds = vec![0f32; t * t];
        backward_block(a, &d_att, &mut ds, t, scale);
        matmul_into((&ds, false), (&k, false), dq, (t, t, hd), fused, false);
        matmul_into((&ds, true), (&q, false), dk, (t, t, hd), fused, false);
    });
    // Into `[b*t, 3c]`, one task per sequence; `+ 0.0` turns `-0.0` into `+0.0`.
    par_zeroed(b * t * 3 * c, t * 3 * c, |e, out| {
        for h in 0..nh {
            for part in 0..3 {
                let at = ((e * nh + h) * 3 + part) * t * hd;
                for (i, row) in parts[at..at + t * hd].chunks_exact(hd).enumerate() {
                    let dst = &mut out[i * 3 * c + part * c + h * hd..][..hd];
                    for (o, &v) in dst.iter_mut().zip(row) {
                        *o = v + 0.0;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::cpu as causal;
    use crate::matmul::cpu::matmul_reference_in;
    use lockstep_core::SeedStream;

    fn seeded(n: usize, name: &str, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = SeedStream::new(11, name);
        (0..n).map(|_| s.uniform_range(lo, hi)).collect()
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols * rows)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    }

    /// The written-out form on the host: per (sequence, head), blocks sliced out by plain
    /// loops, the products by the reference loop (`matmul_reference_in`), the softmax and its
    /// backward by `causal`'s whole-tensor functions, the gradients assembled by adding three
    /// zero-padded parts, as burn's slice backward does.
    fn written_out(
        qkv: &[f32],
        dy: &[f32],
        d: Dims,
        scale: f32,
        fused: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let Dims { b, t, nh, hd } = d;
        let c = d.c();
        let mm = |a: &[f32], x: &[f32], m, k, n| matmul_reference_in(a, x, m, k, n, fused);
        let mut y = vec![0f32; b * t * c];
        let mut parts = vec![vec![0f32; b * t * 3 * c]; 3];
        for e in 0..b {
            for h in 0..nh {
                let blk = |src: &[f32], stride: usize, c0: usize| -> Vec<f32> {
                    (0..t * hd)
                        .map(|i| src[(e * t + i / hd) * stride + c0 + i % hd])
                        .collect()
                };
                let (q, k, v) = (
                    blk(qkv, 3 * c, h * hd),
                    blk(qkv, 3 * c, c + h * hd),
                    blk(qkv, 3 * c, 2 * c + h * hd),
                );
                let g = blk(dy, c, h * hd);
                let s = mm(&q, &transpose(&k, t, hd), t, hd, t);
                let att = causal::forward(&s, t, t, scale);
                let yh = mm(&att, &v, t, t, hd);
                let d_att = mm(&g, &transpose(&v, t, hd), t, hd, t);
                let dv = mm(&transpose(&att, t, t), &g, t, t, hd);
                let ds = causal::backward(&att, &d_att, t, t, scale);
                let dq = mm(&ds, &k, t, t, hd);
                let dk = transpose(&mm(&transpose(&q, t, hd), &ds, hd, t, t), hd, t);
                for i in 0..t {
                    for j in 0..hd {
                        y[(e * t + i) * c + h * hd + j] = yh[i * hd + j];
                        for (part, gr) in [&dq, &dk, &dv].into_iter().enumerate() {
                            parts[part][(e * t + i) * 3 * c + part * c + h * hd + j] =
                                gr[i * hd + j];
                        }
                    }
                }
            }
        }
        let dx = (0..b * t * 3 * c)
            .map(|i| (parts[0][i] + parts[1][i]) + parts[2][i])
            .collect();
        (y, dx)
    }

    /// The op against the written-out form, bit for bit, forward and backward, both profiles,
    /// over odd shapes (one token, one head, a head width no multiple of any tile), with
    /// gradients holding `-0.0`.
    #[test]
    fn matches_the_written_out_form_bitwise() {
        for (b, t, nh, hd) in [
            (1, 1, 1, 1),
            (2, 1, 3, 5),
            (1, 7, 1, 9),
            (3, 13, 2, 7),
            (2, 64, 4, 32),
            (1, 33, 3, 17),
        ] {
            let d = Dims { b, t, nh, hd };
            let c = d.c();
            let tag = format!("{b}x{t}x{nh}x{hd}");
            let qkv = seeded(b * t * 3 * c, &format!("qkv{tag}"), -2.0, 2.0);
            let mut dy = seeded(b * t * c, &format!("dy{tag}"), -1.0, 1.0);
            for (i, v) in dy.iter_mut().enumerate() {
                if i % 5 == 2 {
                    *v = -0.0;
                }
            }
            for fused in [false, true] {
                let scale = 1.0 / (hd as f32).sqrt();
                let (want_y, want_dx) = written_out(&qkv, &dy, d, scale, fused);
                let (y, att) = forward(&qkv, d, scale, fused);
                let dx = backward(&qkv, &att, &dy, d, scale, fused);
                for (what, got, want) in [("y", &y, &want_y), ("dqkv", &dx, &want_dx)] {
                    let bad = got
                        .iter()
                        .zip(want.iter())
                        .position(|(x, w)| x.to_bits() != w.to_bits());
                    assert_eq!(bad, None, "{tag} fused={fused}: {what} differs at {bad:?}");
                }
            }
        }
    }
}
