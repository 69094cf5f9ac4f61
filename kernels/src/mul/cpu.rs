//! CPU element-wise product (`mul`'s module doc).

use crate::arith::{flush, mul as mul1};
use rayon::prelude::*;

/// `a * b` element by element (same lengths).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "mul: lengths");
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(y, (a, b))| {
            for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                *y = mul1(flush(a), flush(b));
            }
        });
    out
}
