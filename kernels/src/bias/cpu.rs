//! CPU bias addition (`bias`'s module doc).

use crate::arith::{add, flush};
use rayon::prelude::*;

/// `x` `[m, n]` row-major plus `b` `[n]` on every row.
pub fn add_bias(x: &[f32], b: &[f32], m: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == m * n && b.len() == n, "add_bias: shapes");
    let mut out = vec![0f32; m * n];
    if n == 0 {
        return out;
    }
    out.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .for_each(|(y, xr)| {
            for ((y, &xv), &bv) in y.iter_mut().zip(xr).zip(b) {
                *y = add(flush(xv), flush(bv));
            }
        });
    out
}
