//! GPU element-wise functions (CubeCL), one thread per element (`unary`'s module doc): `arith`'s
//! `#[cube]` twins. The input is contiguous (the host makes it so).

use crate::arith::gpu::{
    exp_fixed, gelu_fixed, gelu_grad_fixed, log_fixed, recip_fixed, sigmoid_fixed, tanh_fixed,
};
use cubecl::prelude::*;

/// Element-wise `Unary` op `kind` (0 exp, 1 log, 2 sigmoid, 3 tanh, 4 gelu, 5 gelu', 6
/// reciprocal; see `arith::Unary`).
#[cube(launch)]
pub fn unary_kernel(x: &Tensor<f32>, out: &mut Tensor<f32>, one: f32, #[comptime] kind: u32) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    if kind == 0 {
        out[pos] = exp_fixed(x[pos], one);
    } else if kind == 1 {
        out[pos] = log_fixed(x[pos], one);
    } else if kind == 2 {
        out[pos] = sigmoid_fixed(x[pos], one);
    } else if kind == 3 {
        out[pos] = tanh_fixed(x[pos], one);
    } else if kind == 4 {
        out[pos] = gelu_fixed(x[pos], one);
    } else if kind == 5 {
        out[pos] = gelu_grad_fixed(x[pos], one);
    } else {
        out[pos] = recip_fixed(x[pos], one);
    }
}
