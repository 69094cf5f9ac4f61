//! CPU gather and segmented sum (`embedding`'s module doc).

use crate::arith::{add, flush};
use rayon::prelude::*;

/// `table` `[V, c]` rows at `ids` -> `[ids.len(), c]`: `fl(+0 + fl(x))` per element.
pub fn gather(table: &[f32], c: usize, ids: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; ids.len() * c];
    if c == 0 {
        return out;
    }
    out.par_chunks_mut(c).zip(ids).for_each(|(row, &v)| {
        for (o, &x) in row.iter_mut().zip(&table[v * c..(v + 1) * c]) {
            *o = add(0.0, flush(x));
        }
    });
    out
}

/// `g` `[N, c]` summed per id along `order` / `offsets` (`Segments`) -> `[V, c]`, `V =
/// offsets.len() - 1`; each row starts from `+0` and adds its positions in order.
pub fn segment_sum(g: &[f32], c: usize, order: &[usize], offsets: &[usize]) -> Vec<f32> {
    let vocab = offsets.len() - 1;
    let mut out = vec![0f32; vocab * c];
    if c == 0 {
        return out;
    }
    out.par_chunks_mut(c).enumerate().for_each(|(v, acc)| {
        for &r in &order[offsets[v]..offsets[v + 1]] {
            for (a, &x) in acc.iter_mut().zip(&g[r * c..(r + 1) * c]) {
                *a = add(*a, flush(x));
            }
        }
    });
    out
}
