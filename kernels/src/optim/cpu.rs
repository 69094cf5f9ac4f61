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

/// One Adam / AdamW step; returns `(w, m, v)`.
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
    let [wo, mo, vo] = crate::heap::par_zeroed_n(n, CHUNK, |c, outs| {
        let r = c * CHUNK..c * CHUNK + outs[0].len();
        let ins = [&w[r.clone()], &g[r.clone()], &m[r.clone()], &v[r]];
        adam_dispatch(ins, outs, hp, decay);
    });
    (wo, mo, vo)
}

crate::simd::widest! {
    /// `adam_chunk` in the widest vector width this CPU runs (speed only: the update is
    /// element-wise and built from `+ - *` and bit operations, so every path gives the same bits).
    fn adam_dispatch(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) = adam_chunk;
}

/// The update of `optim`'s module doc over one chunk (all slices the same length), in blocks
/// of `STAGE` elements whose steps run as separate loops — `m`, `v` and the root's argument;
/// the root; the reciprocal; the update — each element through the same operations in the same
/// order, so the same bits. (One loop doing an element's ~80 dependent operations waits on
/// their latency; short loops let the CPU overlap consecutive vectors.)
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn adam_chunk(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    const STAGE: usize = 256;
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp.map(flush);
    let (coupled, decoupled) = (decay == Decay::Coupled, decay == Decay::Decoupled);
    let [wo, mo, vo] = outs;
    let n = wo.len();
    let mut t = [0f32; STAGE];
    for s0 in (0..n).step_by(STAGE) {
        let len = STAGE.min(n - s0);
        let r = s0..s0 + len;
        let (w, g, m, v) = (
            &ins[0][r.clone()],
            &ins[1][r.clone()],
            &ins[2][r.clone()],
            &ins[3][r.clone()],
        );
        let (wo, mo, vo, t) = (
            &mut wo[r.clone()],
            &mut mo[r.clone()],
            &mut vo[r],
            &mut t[..len],
        );
        for i in 0..len {
            let (wi, gi) = (flush(w[i]), flush(g[i]));
            let g1 = if coupled { mad(wi, wd, gi) } else { gi };
            mo[i] = add(mul(flush(m[i]), b1), mul(g1, omb1));
            let vi = add(mul(flush(v[i]), b2), mul(mul(g1, g1), omb2));
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
            let wi = flush(w[i]);
            let wi = if decoupled {
                sub(wi, mul(wi, lrwd))
            } else {
                wi
            };
            wo[i] = sub(wi, mul(u, lr));
        }
    }
}
