//! CPU element-wise product (`mul`'s module doc).

use crate::arith::{flush, mul as mul1};

/// `a * b` element by element (same lengths).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "mul: lengths");
    const CHUNK: usize = 1 << 14;
    crate::heap::par_zeroed(a.len(), CHUNK, |i, y| {
        let span = i * CHUNK..i * CHUNK + y.len();
        mul_chunk(&a[span.clone()], &b[span], y)
    })
}

#[inline(always)]
fn mul_body(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = mul1(flush(a), flush(b));
    }
}

crate::simd::widest! {
    fn mul_chunk(a: &[f32], b: &[f32], y: &mut [f32]) = mul_body;
}
