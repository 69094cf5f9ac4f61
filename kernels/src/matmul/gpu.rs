//! GPU matmul kernels (CubeCL), naive and tiled, for `matmul` (rank 2) and `bmm` (rank 3,
//! `batched`): k in order, every read, product and sum pinned (see `matmul`'s module doc and
//! `arith`).

use crate::arith::gpu::{mad_in, pin, zero};
use cubecl::prelude::*;

/// One thread per output (`batched`: `out` is `[bt, m, n]`, one `[m, n]` product per batch
/// element, rank-3 operands read through their strides). Outputs `acc_in + sum over p in
/// p0..p1` (one launch per block of k, see `LOOP_BLOCK`): `first` starts from 0.0 instead of
/// `acc_in`. Launched for consecutive blocks in order, the accumulator only passes through
/// memory as the same f32 it was in the register.
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
    #[comptime] fused: bool,
    #[comptime] batched: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let d = comptime!(if batched { 1usize } else { 0usize });
    let m = out.shape(d);
    let n = out.shape(d + 1);
    let j = pos % n;
    let i = (pos / n) % m;
    let mut a_row = i * a.stride(d);
    let mut b_col = j * b.stride(d + 1);
    if batched {
        let e = pos / (m * n);
        a_row += e * a.stride(0);
        b_col += e * b.stride(0);
    }
    let a_s = a.stride(d + 1);
    let b_s = b.stride(d);
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

/// The tiled kernel's geometry: a cube of `THREADS x THREADS` units computes a `TILE x TILE`
/// block of outputs, each unit a `REG x REG` register tile; k advances `TK` steps at a time
/// through shared memory.
pub const TILE: usize = 64;
pub const TK: usize = 16;
pub const THREADS: usize = 16;
pub const REG: usize = 4;
/// Shared-memory elements each unit stages per panel (of `a`, and again of `b`).
const LOADS: usize = TILE * TK / (THREADS * THREADS);

/// Tiled matmul (`batched`: one `[m, n]` product per `CUBE_POS_Z`, rank-3 operands), the same
/// order as `matmul_kernel`: every output adds its terms `p = p0, p0 + 1, ..., p1 - 1` one after
/// another into one register (`mad_in`). Tiling changes where operands come from (a `TILE x TK`
/// panel of `a` and a `TK x TILE` panel of `b`, staged in shared memory by the whole cube; reads
/// pinned, so flushed, as in `matmul_kernel`), never the order of an output's sum: the `p` loop
/// runs exactly the steps below `p1` (a padded step would add `+0`, which turns an
/// accumulator of `-0` into `+0`). Units outside `[m, n]` compute on zeros and store nothing; no
/// unit leaves before the last barrier.
#[cube(launch)]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)] // `first` is comptime, the rest not
pub fn matmul_tiled_kernel(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    acc_in: &Tensor<f32>,
    out: &mut Tensor<f32>,
    p0: u32,
    p1: u32,
    one: f32,
    #[comptime] first: bool,
    #[comptime] fused: bool,
    #[comptime] batched: bool,
) {
    let d = comptime!(if batched { 1usize } else { 0usize });
    let m = out.shape(d);
    let n = out.shape(d + 1);
    let e = CUBE_POS_Z as usize;
    let mut a_base = 0usize;
    let mut b_base = 0usize;
    let mut o_base = 0usize;
    if batched {
        a_base = e * a.stride(0);
        b_base = e * b.stride(0);
        o_base = e * m * n;
    }
    let sa0 = a.stride(d);
    let sa1 = a.stride(d + 1);
    let sb0 = b.stride(d);
    let sb1 = b.stride(d + 1);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let unit = ty * THREADS + tx;
    let row0 = CUBE_POS_Y as usize * TILE;
    let col0 = CUBE_POS_X as usize * TILE;
    let mut a_s = Shared::<[f32]>::new_slice(TILE * TK);
    let mut b_s = Shared::<[f32]>::new_slice(TK * TILE);
    let mut acc = Array::<f32>::new(REG * REG);
    #[unroll]
    for r in 0..REG {
        #[unroll]
        for c in 0..REG {
            let i = row0 + ty * REG + r;
            let j = col0 + tx * REG + c;
            let mut v = zero(one);
            if !first {
                if i < m && j < n {
                    v = acc_in[o_base + i * n + j];
                }
            }
            acc[r * REG + c] = v;
        }
    }
    let mut kt = p0 as usize;
    let end = p1 as usize;
    while kt < end {
        // Stage a[row0.., kt..kt+TK] and b[kt..kt+TK, col0..] (zeros outside).
        #[unroll]
        for l in 0..LOADS {
            let s = unit + l * THREADS * THREADS;
            let gi = row0 + s / TK;
            let gp = kt + s % TK;
            let mut v = zero(one);
            if gi < m && gp < end {
                v = pin(a[a_base + gi * sa0 + gp * sa1], one);
            }
            a_s[s] = v;
            let gq = kt + s / TILE;
            let gj = col0 + s % TILE;
            let mut w = zero(one);
            if gq < end && gj < n {
                w = pin(b[b_base + gq * sb0 + gj * sb1], one);
            }
            b_s[s] = w;
        }
        sync_cube();
        let steps = min(end, kt + TK) - kt;
        for p in 0..steps {
            #[unroll]
            for r in 0..REG {
                let av = a_s[(ty * REG + r) * TK + p];
                #[unroll]
                for c in 0..REG {
                    let bv = b_s[p * TILE + tx * REG + c];
                    acc[r * REG + c] = mad_in(av, bv, acc[r * REG + c], one, fused);
                }
            }
        }
        sync_cube();
        kt += TK;
    }
    #[unroll]
    for r in 0..REG {
        #[unroll]
        for c in 0..REG {
            let i = row0 + ty * REG + r;
            let j = col0 + tx * REG + c;
            if i < m && j < n {
                out[o_base + i * n + j] = acc[r * REG + c];
            }
        }
    }
}
