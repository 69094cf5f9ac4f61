//! CPU optimizer updates in the order of `optim`'s module doc.

use super::{AdamHyper, Decay, SgdHyper};
use crate::arith::{add, flush, mad, mul, recip_fixed, sqrt_fixed, sub};

/// Elements per parallel task (any value gives the same bits: the update is element-wise).
/// Small enough that a GPT's 16K-element matrices split over both cores of a 2-core machine.
const CHUNK: usize = 1 << 12;

/// One SGD-momentum step; returns `(w, buf)`.
pub fn sgd(w: &[f32], g: &[f32], buf: &[f32], hp: SgdHyper, decay: Decay) -> (Vec<f32>, Vec<f32>) {
    assert!(g.len() == w.len() && buf.len() == w.len(), "sgd: lengths");
    let [lr, wd, mu] = hp.map(flush);
    let [wo, bo] = crate::heap::par_zeroed_n(w.len(), CHUNK, |c, [wo, bo]| {
        let s = c * CHUNK;
        for i in 0..wo.len() {
            let (w, g, b) = (flush(w[s + i]), flush(g[s + i]), flush(buf[s + i]));
            let g1 = if decay == Decay::Coupled {
                mad(w, wd, g)
            } else {
                g
            };
            let b = mad(b, mu, g1);
            bo[i] = b;
            wo[i] = sub(w, mul(b, lr));
        }
    });
    (wo, bo)
}

/// One Adam / AdamW step; returns `(w, m, v)` (new vectors: each task copies its chunk of the
/// inputs, then updates the copy as `adam_in_place` does).
pub fn adam(
    w: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    hp: AdamHyper,
    decay: Decay,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = w.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adam: lengths"
    );
    let [wo, mo, vo] = crate::heap::par_zeroed_n(n, CHUNK, |c, [wo, mo, vo]| {
        let r = c * CHUNK..c * CHUNK + wo.len();
        wo.copy_from_slice(&w[r.clone()]);
        mo.copy_from_slice(&m[r.clone()]);
        vo.copy_from_slice(&v[r.clone()]);
        adam_dispatch(&g[r], [wo, mo, vo], hp, decay);
    });
    (wo, mo, vo)
}

/// `adam` overwriting `w`, `m` and `v` (the same bits: every element is read before it is
/// written, by the same operations).
pub fn adam_in_place(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: AdamHyper,
    decay: Decay,
) {
    use rayon::prelude::*;
    let n = w.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adam: lengths"
    );
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| adam_dispatch(g, [w, m, v], hp, decay));
}

crate::simd::widest! {
    /// `adam_chunk` in the widest vector width this CPU runs (speed only: the update is
    /// element-wise and built from `+ - *` and bit operations, so every path gives the same bits).
    fn adam_dispatch(g: &[f32], wmv: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) = adam_chunk;
}

/// The update of `optim`'s module doc over one chunk (all slices the same length), in blocks
/// of `STAGE` elements whose steps run as separate loops — `m`, `v` and the root's argument;
/// the root; the reciprocal; the update — each element through the same operations in the same
/// order, so the same bits. (One loop doing an element's ~80 dependent operations waits on
/// their latency; short loops let the CPU overlap consecutive vectors.)
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn adam_chunk(g: &[f32], [w, m, v]: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    const STAGE: usize = 256;
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp.map(flush);
    let (coupled, decoupled) = (decay == Decay::Coupled, decay == Decay::Decoupled);
    let n = w.len();
    let mut t = [0f32; STAGE];
    for s0 in (0..n).step_by(STAGE) {
        let len = STAGE.min(n - s0);
        let r = s0..s0 + len;
        // `w` is read by the first and last loops and written by the last; `m` and `v` are
        // read and written by the first, each element before it is written.
        let (g, wo, mo, vo, t) = (
            &g[r.clone()],
            &mut w[r.clone()],
            &mut m[r.clone()],
            &mut v[r],
            &mut t[..len],
        );
        for i in 0..len {
            let (wi, gi) = (flush(wo[i]), flush(g[i]));
            let g1 = if coupled { mad(wi, wd, gi) } else { gi };
            mo[i] = add(mul(flush(mo[i]), b1), mul(g1, omb1));
            let vi = add(mul(flush(vo[i]), b2), mul(mul(g1, g1), omb2));
            vo[i] = vi;
            t[i] = mul(vi, c2);
        }
        for i in 0..len {
            t[i] = sqrt_fixed(t[i]);
        }
        for i in 0..len {
            t[i] = recip_fixed(add(t[i], eps));
        }
        for i in 0..len {
            let u = mul(mul(mo[i], c1), t[i]);
            let wi = flush(wo[i]);
            let wi = if decoupled {
                sub(wi, mul(wi, lrwd))
            } else {
                wi
            };
            wo[i] = sub(wi, mul(u, lr));
        }
    }
}
