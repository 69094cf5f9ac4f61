//! GPU matmul kernel (CubeCL): one thread per output, k in order (see `matmul`'s module doc).

use crate::arith::gpu::mad_nc;
use cubecl::prelude::*;

#[cube(launch)]
pub fn matmul_kernel(a: &Tensor<f32>, b: &Tensor<f32>, out: &mut Tensor<f32>, one: f32) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let n = out.shape(1);
    let i = pos / n;
    let j = pos % n;
    let k = a.shape(1);
    let a_row = i * a.stride(0);
    let a_s1 = a.stride(1);
    let b_col = j * b.stride(1);
    let b_s0 = b.stride(0);
    let mut acc = 0.0f32;
    for p in 0..k {
        acc = mad_nc(a[a_row + p * a_s1], b[p * b_s0 + b_col], acc, one);
    }
    out[pos] = acc;
}
