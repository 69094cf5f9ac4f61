//! GPU batched matmul kernel (CubeCL): one thread per output, k in order, every read, product
//! and sum pinned (flushed, unfused; see `bmm`'s module doc and `arith`).

use crate::arith::gpu::{mad_in, pin, zero};
use cubecl::prelude::*;

/// Outputs `acc_in + sum over p in p0..p1` (one launch per block of k, see `LOOP_BLOCK`):
/// `first` starts from 0.0 instead of `acc_in`. `a`, `b` are read through their strides; `out`
/// (and `acc_in`) are contiguous `[bt, m, n]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn bmm_kernel(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    acc_in: &Tensor<f32>,
    out: &mut Tensor<f32>,
    p0: u32,
    p1: u32,
    one: f32,
    #[comptime] first: bool,
    #[comptime] fused: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let m = out.shape(1);
    let n = out.shape(2);
    let j = pos % n;
    let i = (pos / n) % m;
    let e = pos / (m * n);
    let a_row = e * a.stride(0) + i * a.stride(1);
    let a_s = a.stride(2);
    let b_col = e * b.stride(0) + j * b.stride(2);
    let b_s = b.stride(1);
    let mut acc = zero(one);
    if !first {
        acc = acc_in[pos];
    }
    for p in (p0 as usize)..(p1 as usize) {
        let av = pin(a[a_row + p * a_s], one);
        let bv = pin(b[p * b_s + b_col], one);
        acc = mad_in(av, bv, acc, one, fused);
    }
    out[pos] = acc;
}
