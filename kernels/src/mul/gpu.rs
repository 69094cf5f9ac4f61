//! GPU element-wise product (CubeCL), one thread per element (`mul`'s module doc). Inputs are
//! contiguous (the host makes them so).

use crate::arith::gpu::pin;
use cubecl::prelude::*;

#[cube(launch)]
pub fn mul_kernel(a: &Tensor<f32>, b: &Tensor<f32>, y: &mut Tensor<f32>, one: f32) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    y[pos] = pin(pin(a[pos], one) * pin(b[pos], one), one);
}
