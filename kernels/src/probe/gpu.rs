//! The GPU probe (CubeCL), one thread per element (`probe`'s module doc). Inputs are
//! contiguous (the host makes them so).

use cubecl::prelude::*;

/// `a * b + c` written plainly: the arithmetic-profile probe (CubeCL emits `fma` here).
#[cube(launch)]
pub fn mad_plain_kernel(a: &Tensor<f32>, b: &Tensor<f32>, c: &Tensor<f32>, out: &mut Tensor<f32>) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    out[pos] = a[pos] * b[pos] + c[pos];
}
