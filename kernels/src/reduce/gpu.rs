//! GPU reductions (CubeCL) in the canonical order (see `reduce`'s module doc).

use cubecl::prelude::*;

/// One thread per column; rows added in order.
#[cube(launch)]
pub fn sum_rows_kernel(x: &Tensor<f32>, out: &mut Tensor<f32>) {
    let j = ABSOLUTE_POS;
    if j >= out.len() {
        terminate!();
    }
    let m = x.shape(0);
    let s0 = x.stride(0);
    let col = j * x.stride(1);
    let mut acc = 0.0f32;
    for i in 0..m {
        acc += x[i * s0 + col];
    }
    out[j] = acc;
}

/// Stage 1: one thread per 256-element chunk of the contiguous input.
#[cube(launch)]
pub fn sum_chunks_kernel(x: &Tensor<f32>, partials: &mut Tensor<f32>) {
    let c = ABSOLUTE_POS;
    if c >= partials.len() {
        terminate!();
    }
    let len = x.len();
    let start = c * 256;
    let end = min(start + 256, len);
    let mut acc = 0.0f32;
    for i in start..end {
        acc += x[i];
    }
    partials[c] = acc;
}

/// Stage 2: a single thread adds the partials in order.
#[cube(launch)]
pub fn sum_partials_kernel(partials: &Tensor<f32>, out: &mut Tensor<f32>) {
    if ABSOLUTE_POS != 0 {
        terminate!();
    }
    let count = partials.len();
    let mut acc = 0.0f32;
    for c in 0..count {
        acc += partials[c];
    }
    out[0] = acc;
}
