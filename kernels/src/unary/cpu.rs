//! CPU element-wise functions (`unary`'s module doc): `arith`'s, one element after another.

use crate::arith::Unary;

/// `op` of every element of `x`, in order.
pub fn map(x: &[f32], op: Unary) -> Vec<f32> {
    let f = op.cpu();
    x.iter().map(|&v| f(v)).collect()
}
