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
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp;
    let (mut wo, mut mo, mut vo) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    wo.par_chunks_mut(CHUNK)
        .zip(mo.par_chunks_mut(CHUNK))
        .zip(vo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((wo, mo), vo))| {
            let s = c * CHUNK;
            for i in 0..wo.len() {
                let (w, g) = (w[s + i], g[s + i]);
                let g1 = if decay == Decay::Coupled {
                    g + w * wd
                } else {
                    g
                };
                let m = m[s + i] * b1 + g1 * omb1;
                let v = v[s + i] * b2 + (g1 * g1) * omb2;
                let u = (m * c1) / ((v * c2).sqrt() + eps);
                let w = if decay == Decay::Decoupled {
                    w - w * lrwd
                } else {
                    w
                };
                mo[i] = m;
                vo[i] = v;
                wo[i] = w - u * lr;
            }
        });
    (wo, mo, vo)
}
