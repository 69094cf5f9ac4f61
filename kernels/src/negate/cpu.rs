//! CPU negation (`negate`'s module doc).

use crate::arith::flush;

/// `-flush(x)` for every element, in order.
pub fn negate(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| -flush(v)).collect()
}
