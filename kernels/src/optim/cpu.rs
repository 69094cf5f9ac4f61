//! CPU optimizer updates in the order of `optim`'s module doc.

use super::{AdamHyper, Decay, SgdHyper};
use crate::arith::{add, flush, mad, mul, recip_fixed, sqrt_of_flushed, sub};

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
    fn adam_dispatch(g: &[f32], wmv: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) = adam_any;
}

/// `adam_chunk` for the step's decay mode and hyper-parameters, each combination its own loop.
/// `plain`: `|c1|, |c2| >= 1`, `eps >= 0` and `|lr|, |wd|, |b1|, |b2|, |1-b1|, |1-b2| <= 1`
/// (every Adam and AdamW step with `0 <= b1, b2 < 1`, `0 <= lr, wd <= 1` and `eps >= 0`), the
/// case in which most flushes are proven idle (`adam_chunk`).
#[inline(always)]
fn adam_any(g: &[f32], wmv: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    const NONE: u8 = Decay::None as u8;
    const COUPLED: u8 = Decay::Coupled as u8;
    const DECOUPLED: u8 = Decay::Decoupled as u8;
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, _] = hp.map(flush);
    let at_most_1 = [lr, wd, b1, b2, omb1, omb2].iter().all(|x| x.abs() <= 1.0);
    let plain = at_most_1 && c1.abs() >= 1.0 && c2.abs() >= 1.0 && eps >= 0.0;
    match (decay, plain) {
        (Decay::None, true) => adam_chunk::<NONE, true>(g, wmv, hp),
        (Decay::None, false) => adam_chunk::<NONE, false>(g, wmv, hp),
        (Decay::Coupled, true) => adam_chunk::<COUPLED, true>(g, wmv, hp),
        (Decay::Coupled, false) => adam_chunk::<COUPLED, false>(g, wmv, hp),
        (Decay::Decoupled, true) => adam_chunk::<DECOUPLED, true>(g, wmv, hp),
        (Decay::Decoupled, false) => adam_chunk::<DECOUPLED, false>(g, wmv, hp),
    }
}

/// `PLAIN`'s (`flush` only where the result can differ without it) or the full flush.
#[inline(always)]
fn fl<const PLAIN: bool>(x: f32) -> f32 {
    if PLAIN { x } else { flush(x) }
}

/// The update of `optim`'s module doc over one chunk (all slices the same length), in blocks
/// of `STAGE` elements whose steps run as separate loops — `m`, `v` and the root's argument;
/// the root; the reciprocal; the update — each element through the same operations in the same
/// order, so the same bits. (One loop doing an element's ~80 dependent operations waits on
/// their latency; short loops let the CPU overlap consecutive vectors.)
///
/// Flushes left out, each because it provably changes nothing, so the bits are those of the
/// module doc's fully flushed update (the tests check it with tiny and subnormal values and
/// hyper-parameters on both sides of `PLAIN`):
///
/// - always, the root's three (`arith::sqrt_of_flushed`): its argument is a flushed value or,
///   under `PLAIN`, a product shown below to be zero or not tiny, and such a value's root is
///   never tiny;
/// - under `PLAIN`, the products `v*c2` and `m*c1`: `|fl(x*c)| >= |x|` when `|c| >= 1` (the
///   exact product is at least `|x|`, which is representable, and rounding is monotone), so a
///   factor that is zero or not tiny gives a product that is zero or not tiny (or NaN, ±inf);
/// - under `PLAIN`, the sum `root + eps`: the root is never negative, finite and nonzero (it is
///   ±0, positive, NaN or ±inf) and `eps >= 0`, so nothing cancels and the sum is at least as
///   large as either term;
/// - under `PLAIN`, a flush whose value's only use is a product by a factor `|c| <= 1` that is
///   flushed itself: the reads of `m` (times `b1`) and `v` (times `b2`), of `w` in the coupled
///   `w*wd`, of `g` when not coupled (times `1-b1`, and squared: a tiny `g` squares to +0,
///   as a flushed one does), the square `g1*g1` (times `1-b2`) and `u` (times `lr`). If the
///   value is tiny, so is the product (`|x*c| <= |x| <= MIN_POSITIVE`, on every device), and
///   both flush to the zero of sign `sign(x)*sign(c)`, which is what the flushed value times `c`
///   gives; if it is not tiny, the flush did nothing.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn adam_chunk<const DECAY: u8, const PLAIN: bool>(
    g: &[f32],
    [w, m, v]: [&mut [f32]; 3],
    hp: AdamHyper,
) {
    const STAGE: usize = 256;
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp.map(flush);
    let coupled = DECAY == Decay::Coupled as u8;
    let decoupled = DECAY == Decay::Decoupled as u8;
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
            let g1 = if coupled {
                add(mul(fl::<PLAIN>(wo[i]), wd), flush(g[i]))
            } else {
                fl::<PLAIN>(g[i])
            };
            mo[i] = add(mul(fl::<PLAIN>(mo[i]), b1), mul(g1, omb1));
            let vi = add(mul(fl::<PLAIN>(vo[i]), b2), mul(fl::<PLAIN>(g1 * g1), omb2));
            vo[i] = vi;
            t[i] = fl::<PLAIN>(vi * c2);
        }
        for i in 0..len {
            t[i] = sqrt_of_flushed(t[i]);
        }
        for i in 0..len {
            t[i] = recip_fixed(fl::<PLAIN>(t[i] + eps));
        }
        for i in 0..len {
            let u = fl::<PLAIN>(fl::<PLAIN>(mo[i] * c1) * t[i]);
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
