//! GPU reductions (CubeCL) in the canonical order (see `reduce`'s module doc).

use crate::arith::gpu::{pin, zero};
use cubecl::prelude::*;

/// One thread per column; rows `i0..i1` added in order onto `acc_in` (or 0.0 when `first`):
/// one launch per block of rows (see `arith::gpu::LOOP_BLOCK`).
#[cube(launch)]
pub fn sum_rows_kernel(
    x: &Tensor<f32>,
    acc_in: &Tensor<f32>,
    out: &mut Tensor<f32>,
    i0: u32,
    i1: u32,
    one: f32,
    #[comptime] first: bool,
) {
    let j = ABSOLUTE_POS;
    if j >= out.len() {
        terminate!();
    }
    let s0 = x.stride(0);
    let col = j * x.stride(1);
    let mut acc = zero(one);
    if !first {
        acc = acc_in[j];
    }
    for i in (i0 as usize)..(i1 as usize) {
        acc = pin(acc + pin(x[i * s0 + col], one), one);
    }
    out[j] = acc;
}

/// Stage 1: one thread per 256-element chunk of the contiguous input.
#[cube(launch)]
pub fn sum_chunks_kernel(x: &Tensor<f32>, partials: &mut Tensor<f32>, one: f32) {
    let c = ABSOLUTE_POS;
    if c >= partials.len() {
        terminate!();
    }
    let len = x.len();
    let start = c * 256;
    let end = min(start + 256, len);
    let mut acc = zero(one);
    for i in start..end {
        acc = pin(acc + pin(x[i], one), one);
    }
    partials[c] = acc;
}
