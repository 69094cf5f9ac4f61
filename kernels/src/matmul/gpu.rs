//! GPU matmul kernel (CubeCL): one thread per output, k in order, every read, product and sum
//! pinned (flushed, unfused; see `matmul`'s module doc and `arith`).

use crate::arith::gpu::{mad, pin, zero};
use cubecl::prelude::*;

/// Outputs `acc_in + sum over p in p0..p1` (one launch per block of k, see `LOOP_BLOCK`):
/// `first` starts from 0.0 instead of `acc_in`. Launched for consecutive blocks in order, the
/// accumulator only passes through memory as the same f32 it was in the register.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn matmul_kernel(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    acc_in: &Tensor<f32>,
    out: &mut Tensor<f32>,
    p0: u32,
    p1: u32,
    one: f32,
    #[comptime] first: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let n = out.shape(1);
    let i = pos / n;
    let j = pos % n;
    let a_row = i * a.stride(0);
    let a_s1 = a.stride(1);
    let b_col = j * b.stride(1);
    let b_s0 = b.stride(0);
    let mut acc = zero(one);
    if !first {
        acc = acc_in[pos];
    }
    for p in (p0 as usize)..(p1 as usize) {
        let av = pin(a[a_row + p * a_s1], one);
        let bv = pin(b[p * b_s0 + b_col], one);
        acc = mad(av, bv, acc, one);
    }
    out[pos] = acc;
}
