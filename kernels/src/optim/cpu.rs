//! CPU optimizer updates in the order of `optim`'s module doc.

use super::{AdamHyper, Decay, SgdHyper};
use rayon::prelude::*;

/// Elements per parallel task (any value gives the same bits: the update is element-wise).
const CHUNK: usize = 1 << 14;

/// One SGD-momentum step; returns `(w, buf)`.
pub fn sgd(w: &[f32], g: &[f32], buf: &[f32], hp: SgdHyper, decay: Decay) -> (Vec<f32>, Vec<f32>) {
    assert!(g.len() == w.len() && buf.len() == w.len(), "sgd: lengths");
    let [lr, wd, mu] = hp;
    let (mut wo, mut bo) = (vec![0f32; w.len()], vec![0f32; w.len()]);
    wo.par_chunks_mut(CHUNK)
        .zip(bo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (wo, bo))| {
            let s = c * CHUNK;
            for i in 0..wo.len() {
                let (w, g, b) = (w[s + i], g[s + i], buf[s + i]);
                let g1 = if decay == Decay::Coupled {
                    g + w * wd
                } else {
                    g
                };
                let b = b * mu + g1;
                bo[i] = b;
                wo[i] = w - b * lr;
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
    let (mut wo, mut mo, mut vo) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    wo.par_chunks_mut(CHUNK)
        .zip(mo.par_chunks_mut(CHUNK))
        .zip(vo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((wo, mo), vo))| {
            let r = c * CHUNK..c * CHUNK + wo.len();
            let ins = [&w[r.clone()], &g[r.clone()], &m[r.clone()], &v[r]];
            adam_dispatch(ins, [wo, mo, vo], hp, decay);
        });
    (wo, mo, vo)
}

/// The widest vector width this CPU runs (speed only: the update is element-wise and `sqrt`
/// and `/` are correctly rounded at every width, so every path gives the same bits).
fn adam_dispatch(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature `adam_avx512` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return adam_avx512(ins, outs, hp, decay);
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature `adam_avx2` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return adam_avx2(ins, outs, hp, decay);
            }
        }
    }
    adam_chunk(ins, outs, hp, decay)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn adam_avx512(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    adam_chunk(ins, outs, hp, decay)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn adam_avx2(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    adam_chunk(ins, outs, hp, decay)
}

/// The update of `optim`'s module doc over one chunk (all slices the same length).
#[inline(always)]
fn adam_chunk(ins: [&[f32]; 4], outs: [&mut [f32]; 3], hp: AdamHyper, decay: Decay) {
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp;
    let (coupled, decoupled) = (decay == Decay::Coupled, decay == Decay::Decoupled);
    let [wo, mo, vo] = outs;
    let n = wo.len();
    let (w, g, m, v) = (&ins[0][..n], &ins[1][..n], &ins[2][..n], &ins[3][..n]);
    let (mo, vo) = (&mut mo[..n], &mut vo[..n]);
    for i in 0..n {
        let (wi, gi) = (w[i], g[i]);
        let g1 = if coupled { gi + wi * wd } else { gi };
        let mi = m[i] * b1 + g1 * omb1;
        let vi = v[i] * b2 + (g1 * g1) * omb2;
        let u = (mi * c1) / ((vi * c2).sqrt() + eps);
        let wi = if decoupled { wi - wi * lrwd } else { wi };
        mo[i] = mi;
        vo[i] = vi;
        wo[i] = wi - u * lr;
    }
}
