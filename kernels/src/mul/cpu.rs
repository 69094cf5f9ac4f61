//! CPU element-wise product (`mul`'s module doc).

use crate::arith::{flush, mul as mul1};

/// `a * b` element by element (same lengths).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "mul: lengths");
    const CHUNK: usize = 1 << 14;
    crate::heap::par_zeroed(a.len(), CHUNK, |i, y| {
        let span = i * CHUNK..i * CHUNK + y.len();
        for ((y, &a), &b) in y.iter_mut().zip(&a[span.clone()]).zip(&b[span]) {
            *y = mul1(flush(a), flush(b));
        }
    })
}
