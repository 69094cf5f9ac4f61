//! CPU bias addition (`bias`'s module doc).

use crate::arith::{add, flush};

/// `x` `[m, n]` row-major plus `b` `[n]` on every row.
pub fn add_bias(x: &[f32], b: &[f32], m: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == m * n && b.len() == n, "add_bias: shapes");
    if n == 0 {
        return Vec::new();
    }
    // Tasks of whole rows, at least 16K elements (a row is too little work for a thread).
    let rows = (1usize << 14).div_ceil(n);
    crate::heap::par_zeroed(m * n, rows * n, |t, y| {
        add_rows(&x[t * rows * n..t * rows * n + y.len()], b, y)
    })
}

#[inline(always)]
fn add_rows_body(x: &[f32], b: &[f32], y: &mut [f32]) {
    let n = b.len();
    for (y, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        for ((y, &xv), &bv) in y.iter_mut().zip(xr).zip(b) {
            *y = add(flush(xv), flush(bv));
        }
    }
}

crate::simd::widest! {
    fn add_rows(x: &[f32], b: &[f32], y: &mut [f32]) = add_rows_body;
}
