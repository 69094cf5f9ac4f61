//! GPU negation (CubeCL), one thread per element (`negate`'s module doc). The input is
//! contiguous (the host makes it so).

use crate::arith::gpu::pin;
use cubecl::prelude::*;

#[cube(launch)]
pub fn negate_kernel(x: &Tensor<f32>, y: &mut Tensor<f32>, one: f32) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    y[pos] = -pin(x[pos], one);
}
